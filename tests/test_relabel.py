"""Re-label distillation (paper 004): the VAE, the scale search, the batched student,
the saliency of a teacher built to depend on a known region, and the method's contract."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlens
from cnnlens import checkpoint, nets
from cnnlens.errors import InputError
from cnnlens.studies.relabel.labels import search_scale
from cnnlens.studies.relabel.student import fit_students, loss_slope, student_loss
from cnnlens.studies.relabel.vae import ELBO
from cnnlens.train import OptimizerConfig, TrainConfig, fit


class PixelVAE(nn.Module):
    """A "VAE" whose latent is the image itself: ``x' = x + scale * eps * sigma``.

    Synthetic images are then Gaussian noise around the input, so what a teacher
    reacts to is known pixel by pixel.
    """

    def __init__(self, shape=(1, 8, 8), sigma: float = 0.5) -> None:
        super().__init__()
        self.shape, self.sigma = shape, sigma
        self.dummy = nn.Parameter(torch.zeros(1))  # a device to follow

    def encode(self, x):
        mu = x.flatten(1)
        return mu, torch.full_like(mu, 2 * torch.log(torch.tensor(self.sigma)).item())

    def decode(self, z):
        return z.view(len(z), *self.shape)


class RegionTeacher(nn.Module):
    """Class 1 when the mean of the region rows 2:5, cols 2:5 is above 0, else class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.sharpness = nn.Parameter(torch.tensor(8.0))

    def forward(self, x):
        score = x[:, :, 2:5, 2:5].mean((1, 2, 3)) * self.sharpness
        return torch.stack([-score, score], 1)


def region_inputs(n: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=gen) * 0.3
    region = x[:, :, 2:5, 2:5]
    x[:, :, 2:5, 2:5] = region - region.mean((1, 2, 3), keepdim=True) + 0.1  # class 1, near 0
    return x


def test_vae_shapes_and_defaults():
    for size, latent in ((32, 64), (64, 128)):
        vae = nets.create("conv-vae", in_channels=1, image_size=size)
        mu, logvar = vae.encode(torch.randn(2, 1, size, size))
        assert mu.shape == logvar.shape == (2, latent)
        assert vae.decode(mu).shape == (2, 1, size, size)
        assert vae(torch.randn(2, 1, size, size)).shape == (2, 1, size, size)
    vae = nets.create("conv-vae", in_channels=3, image_size=32, latent=10, width=4)
    assert vae.encode(torch.randn(1, 3, 32, 32))[0].shape == (1, 10)
    assert "conv-vae" in nets.names("generator") and "conv-vae" not in nets.names("classifier")


def squares(n: int = 256, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright 6x6 squares at random places on a dark ground: structure a VAE can learn."""
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(n, 1, size, size)
    corner = torch.randint(0, size - 6, (n, 2), generator=gen)
    for i, (r, c) in enumerate(corner.tolist()):
        x[i, 0, r : r + 6, c : c + 6] = 1.0
    return x, torch.zeros(n, dtype=torch.long)


def test_elbo_decreases_in_a_short_training():
    torch.manual_seed(0)
    vae = nets.create("conv-vae", in_channels=1, image_size=16, latent=8, width=8)
    config = TrainConfig(
        epochs=4, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=3e-3), augment=()
    )
    result = fit(vae, squares(128), config=config, objective=ELBO())
    losses = [h["train_loss"] for h in result.history]
    # last over first epoch: 0.36-0.46 over seeds 0-3 x ATEN_CPU_CAPABILITY default/avx2
    assert losses[-1] < 0.7 * losses[0], losses
    assert {"recon", "kl"} <= set(result.history[-1])
    assert "train_accuracy" not in result.history[-1]  # an ELBO counts no correct answers
    with pytest.raises(cnnlens.errors.ConfigError, match="encode"):
        fit(nets.create("lenet5", num_classes=2, in_channels=1), squares(8, 32),
            config=config, objective=ELBO())  # fmt: skip


def test_train_vae_is_cached_and_reused(tmp_path):
    from cnnlens.studies.relabel import open_vae, train_vae

    x = torch.rand(64, 1, 16, 16)
    y = torch.zeros(64, dtype=torch.long)
    config = TrainConfig(epochs=1, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=1e-3))
    config = dataclasses.replace(config, augment=())
    first = train_vae((x, y), out=tmp_path / "vae", latent=4, width=4, config=config)
    assert not first.reused and {"mse", "psnr_db"} <= set(first.quality)
    again = train_vae((x, y), out=tmp_path / "vae", latent=4, width=4, config=config)
    assert again.reused
    for a, b in zip(first.vae.state_dict().values(), again.vae.state_dict().values()):
        torch.testing.assert_close(a, b)
    loaded = open_vae(tmp_path / "vae")
    assert loaded.meta["input_shape"] == [1, 16, 16]


def test_scale_search_reaches_the_band():
    # share of "kept" samples at a scale: |eps| * scale < 1, eps fixed per image
    n, count = 400, 3
    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(count, n, generator=gen).abs()
    tight = torch.tensor([1.0, 20.0, 0.01])  # image 1 keeps nothing at scale 1, image 2 all

    def generate(images, scales, m):
        return (eps[images, :m] * scales[:, None] * tight[images, None]).reshape(-1, 1, 1, 1)

    def label(synthetic, images, m):
        hard = (synthetic.view(len(images), m) < 1).float()
        return hard, hard

    found = search_scale(generate, label, count, n, band=(0.1, 0.9), max_tries=12, probe=n)
    assert ((found.share >= 0.1) & (found.share <= 0.9)).all(), found.share
    assert found.tries[0] == 1 and found.scale[0] == 1.0  # 68 % within 1 sigma: in band
    assert found.scale[1] < 1 < found.scale[2]
    # the kept samples are those of the reported scale
    torch.testing.assert_close(found.hard.mean(1), found.share)
    expected = ((eps * found.scale[:, None] * tight[:, None]) < 1).float().mean(1)
    torch.testing.assert_close(found.share, expected)


def test_scale_search_stops_after_max_tries():
    calls = []

    def generate(images, scales, m):
        calls.append(m)
        return torch.zeros(len(images) * m, 1, 1, 1)

    def label(synthetic, images, m):
        hard = torch.ones(len(images), m)
        return hard, hard

    found = search_scale(generate, label, 2, 10, max_tries=3, probe=4)
    assert found.tries.tolist() == [3, 3] and found.share.tolist() == [1.0, 1.0]
    assert found.scale.tolist() == [16.0, 16.0]  # 1, 4, 16 tried
    assert calls == [4, 4, 4, 10]  # three probes of 4 samples, then all 10 once


def test_batched_students_equal_students_alone():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(3, 80, 40, generator=gen)
    soft = torch.rand(3, 80, generator=gen)
    hard = (torch.rand(3, 80, generator=gen) > 0.4).float()
    for loss in ("relabel", "ce"):
        together = fit_students(features, soft, hard, loss=loss, steps=60)
        for k in range(3):
            alone = fit_students(features[k : k + 1], soft[k : k + 1], hard[k : k + 1],
                                 loss=loss, steps=60)  # fmt: skip
            torch.testing.assert_close(together.u[k], alone.u[0], rtol=1e-4, atol=2e-5)
            torch.testing.assert_close(together.a[k], alone.a[0], rtol=1e-4, atol=2e-5)


def test_student_gradient_matches_autograd_and_loss_falls():
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 30, generator=gen, requires_grad=True)
    soft, hard = torch.rand(2, 30, generator=gen), (torch.rand(2, 30, generator=gen) > 0.5).float()
    for loss in ("relabel", "ce"):
        value = student_loss(s, soft, hard, loss=loss, lambda1=0.7, lambda2=0.3).sum()
        (grad,) = torch.autograd.grad(value, s)
        slope = loss_slope(s.detach(), soft, hard, loss=loss, lambda1=0.7, lambda2=0.3) / 30
        torch.testing.assert_close(grad, slope)
    # a linearly separable problem: the student learns it
    features = torch.randn(1, 200, 10, generator=gen)
    hard = (features[0, :, 3] > 0).float()[None]
    fitted = fit_students(features, hard, hard, steps=150, weight_decay=0.0)
    assert fitted.fidelity.item() > 0.95
    assert fitted.u[0].abs().argmax().item() == 3


def test_saliency_concentrates_on_the_region_the_teacher_reads():
    teacher, vae = RegionTeacher(), PixelVAE()
    x = region_inputs()
    e = cnnlens.explain(teacher, x, method="relabel", vae=vae, n=400, downsample=1, seed=0)
    share = e.extras["share"]
    assert ((share >= 0.1) & (share <= 0.9)).all()
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:5, 2:5] = True
    mass = e.maps[:, 0].abs()
    inside = mass[:, region].sum(1) / mass.flatten(1).sum(1)
    assert (inside > 0.6).all(), inside  # 9 of 64 pixels (14 %) hold most of the weight
    # the sign: brighter region pixels keep class 1, so w_1 - w_0 > 0 there
    assert (e.raw[:, 0][:, region].mean(1) > 0).all()
    signed = cnnlens.explain(teacher, x, method="relabel", vae=vae, n=400, downsample=1,
                             signed=True)  # fmt: skip
    torch.testing.assert_close(signed.maps.abs(), e.maps)


def test_contract_target_determinism_and_model_unchanged():
    teacher, vae = RegionTeacher(), PixelVAE()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = region_inputs(2)
    kw = {"vae": vae, "n": 100, "steps": 30, "downsample": 2}
    e = cnnlens.explain(teacher, x, method="relabel", **kw, seed=3)
    assert e.maps.shape == (2, 1, 8, 8) and e.maps.dtype == torch.float32
    assert e.raw.shape == x.shape and e.method == "relabel"
    assert e.target.tolist() == [1, 1]
    assert teacher.training and teacher.sharpness.requires_grad
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k])
    assert not teacher._forward_hooks and not teacher._forward_pre_hooks
    again = cnnlens.explain(teacher, x, method="relabel", **kw, seed=3)
    assert torch.equal(e.maps, again.maps)
    other = cnnlens.explain(teacher, x, method="relabel", **kw, seed=4)
    assert not torch.equal(e.maps, other.maps)
    # the other class: its y' are the complement; an int or a tensor target
    zero = cnnlens.explain(teacher, x, method="relabel", target=0, **kw, seed=3)
    assert zero.target.tolist() == [0, 0]
    torch.testing.assert_close(zero.extras["share"], 1 - e.extras["share"])
    both = cnnlens.explain(teacher, x, method="relabel", target=torch.tensor([0, 1]), **kw, seed=3)
    assert both.target.tolist() == [0, 1]


class BlockVAE(PixelVAE):
    """A VAE that forgets detail: its latent is the 2x2 block means, decoded by repetition."""

    def encode(self, x):
        mu = F.avg_pool2d(x, 2).flatten(1)
        return mu, torch.full_like(mu, 2 * torch.log(torch.tensor(self.sigma)).item())

    def decode(self, z):
        c, h, w = self.shape
        return F.interpolate(z.view(len(z), c, h // 2, w // 2), scale_factor=2, mode="nearest")


def test_input_anchor_is_the_input_at_scale_zero():
    """anchor="input": x' = x + decode(z) - decode(mu), the input itself at scale 0, where
    the paper's samples are the blurred reconstruction; at scale s the two differ by the
    same offset x - decode(mu)."""
    from cnnlens.studies.relabel.synthesis import anchor_offset, decode_perturbed, encode

    vae, x = BlockVAE(), region_inputs(3)
    mu, sigma = encode(vae, x)
    eps = torch.randn(3, 5, mu.shape[1], generator=torch.Generator().manual_seed(0))
    offset = anchor_offset(vae, x, mu, "input")
    assert anchor_offset(vae, x, mu, "reconstruction") is None
    for scale in (0.0, 0.7):
        s = torch.full((3,), scale)
        paper = decode_perturbed(vae, mu, sigma, eps, s).view(3, 5, 1, 8, 8)
        anchored = decode_perturbed(vae, mu, sigma, eps, s, offset=offset).view(3, 5, 1, 8, 8)
        torch.testing.assert_close(anchored - paper, offset[:, None].expand_as(paper))
        if scale == 0:
            torch.testing.assert_close(anchored, x[:, None].expand_as(anchored))
            assert (paper - x[:, None]).abs().amax() > 0.1  # the reconstruction lost detail
    teacher = RegionTeacher()
    e = cnnlens.explain(teacher, x, method="relabel", vae=vae, anchor="input", n=200, seed=0)
    share = e.extras["share"]
    assert torch.isfinite(e.maps).all() and ((share > 0) & (share < 1)).all()


def test_a_users_own_model_and_vae_on_the_cnnlens_vae():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    vae = nets.create("conv-vae", image_size=32, latent=8, width=4)
    x = torch.randn(2, 3, 32, 32)
    e = cnnlens.explain(model, x, method="relabel", vae=vae, n=50, steps=10)
    assert e.maps.shape == (2, 1, 32, 32) and torch.isfinite(e.maps).all()
    assert e.extras["tries"].min() >= 1


def test_errors():
    teacher, vae = RegionTeacher(), PixelVAE()
    x = region_inputs(1)
    with pytest.raises(InputError, match="needs a VAE"):
        cnnlens.explain(teacher, x, method="relabel")
    with pytest.raises(InputError, match="encode"):
        cnnlens.explain(teacher, x, method="relabel", vae=nn.Linear(2, 2))
    wrong = nets.create("conv-vae", in_channels=3, image_size=32, width=4)
    with pytest.raises(InputError, match="3x32x32"):
        cnnlens.explain(teacher, x, method="relabel", vae=wrong)
    for bad in ({"n": 0}, {"n": -3}, {"n": 2.5}, {"steps": 0}, {"scale": 0}, {"downsample": 0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            cnnlens.explain(teacher, x, method="relabel", vae=vae, **bad)
    for bad in ({"lambda1": -0.1}, {"lambda2": float("nan")}, {"lambda1": 0, "lambda2": 0}):
        with pytest.raises(InputError, match="lambda"):
            cnnlens.explain(teacher, x, method="relabel", vae=vae, **bad)
    with pytest.raises(InputError, match="band"):
        cnnlens.explain(teacher, x, method="relabel", vae=vae, band=(0.9, 0.1))
    with pytest.raises(InputError, match="loss"):
        cnnlens.explain(teacher, x, method="relabel", vae=vae, loss="mse")
    with pytest.raises(InputError, match="anchor must be"):
        cnnlens.explain(teacher, x, method="relabel", vae=vae, anchor="latent")
    with pytest.raises(InputError, match="no hyperparameter"):
        cnnlens.explain(teacher, x, method="relabel", vae=vae, lamda1=0.5)


def test_normalisation_mismatch_is_named(tmp_path):
    from cnnlens.studies.relabel.synthesis import check_vae

    vae = nets.create("conv-vae", in_channels=1, image_size=16, latent=4, width=4)
    checkpoint.save(vae, tmp_path / "vae", mean=[0.5], std=[0.25], input_shape=(1, 16, 16))
    loaded = checkpoint.load(tmp_path / "vae")
    model = nets.create("lenet5", num_classes=3, in_channels=1)
    model.meta = {"mean": [0.1], "std": [0.3]}
    with pytest.raises(InputError, match="normalised"):
        check_vae(loaded, torch.randn(1, 1, 16, 16), model)
    assert check_vae(str(tmp_path / "vae"), torch.randn(1, 1, 16, 16)) is not None
