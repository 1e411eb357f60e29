"""Layer similarity (paper 001, section 3.2): linear CKA, its minibatch estimator and SVCCA
against direct formulas, and ``layer_similarity`` on a tiny conv net."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlens import nets
from cnnlens.analysis import (
    MinibatchCKA,
    cka_matrix,
    default_layers,
    layer_similarity,
    linear_cka,
    minibatch_cka,
    svcca,
    unbiased_hsic,
)
from cnnlens.errors import InputError, LayerError
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.plotting import render
from cnnlens.report.similarity_heatmap import similarity_heatmap

pytestmark = pytest.mark.numerics


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- linear CKA -------------------------------------------------------------


@pytest.mark.parametrize("n,p", [(30, 5), (10, 40)])  # feature-space form, Gram form (p > n)
def test_cka_invariances(n, p):
    x = randn(n, p)
    q, _ = torch.linalg.qr(randn(p, p, seed=1))
    assert float(linear_cka(x, x)) == pytest.approx(1, abs=1e-12)
    assert float(linear_cka(x, x @ q)) == pytest.approx(1, abs=1e-12)  # orthogonal transform
    assert float(linear_cka(x, 3.7 * x + 2.0)) == pytest.approx(1, abs=1e-12)  # scale, shift
    stretched = x * torch.linspace(0.1, 10, p, dtype=torch.float64)  # not isotropic
    assert float(linear_cka(x, stretched)) < 0.95
    assert float(linear_cka(x, randn(n, 3, seed=2))) < float(linear_cka(x, x[:, :3]))


def hsic_reference(k: np.ndarray, l_: np.ndarray) -> float:
    """Kornblith et al. 2019, eq. 3: tr(K H L H) / (n-1)^2 with the centring matrix H."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l_ @ h)) / (n - 1) ** 2


@pytest.mark.parametrize("n,p1,p2", [(12, 3, 5), (9, 20, 4), (15, 30, 40)])
def test_linear_cka_equals_hsic_formula(n, p1, p2):
    x, y = randn(n, p1, seed=3).numpy() + 1.5, randn(n, p2, seed=4).numpy()
    y[:, 0] += 2 * x[:, 0]  # some shared signal
    k, l_ = x @ x.T, y @ y.T
    expected = hsic_reference(k, l_) / np.sqrt(hsic_reference(k, k) * hsic_reference(l_, l_))
    got = linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-6)  # float32 inputs: their rounding
    got64 = linear_cka(torch.from_numpy(x), torch.from_numpy(y))
    assert float(got64) == pytest.approx(expected, rel=1e-12)
    matrix = cka_matrix([torch.from_numpy(x), torch.from_numpy(y)])
    assert float(matrix[0, 1]) == pytest.approx(expected, rel=1e-12)
    assert float(matrix[1, 0]) == float(matrix[0, 1])
    assert torch.allclose(matrix.diagonal(), torch.ones(2, dtype=torch.float64), atol=1e-12)


def test_constant_representation_gives_nan():
    x = randn(8, 3)
    assert torch.isnan(linear_cka(x, torch.ones(8, 2)))
    with pytest.raises(InputError, match="same images: 8 rows vs 7"):
        linear_cka(x, randn(7, 3))


# --- unbiased HSIC and the minibatch estimator -----------------------------


def u_statistic_reference(k: np.ndarray, l_: np.ndarray) -> float:
    """Song et al. 2012, the U-statistic HSIC_1 by definition: the mean over ordered
    distinct (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = k.shape[0]
    terms = [
        k[i, j] * l_[i, j] + k[i, j] * l_[q, r] - 2 * k[i, j] * l_[i, q]
        for i, j, q, r in itertools.permutations(range(n), 4)
    ]
    return float(np.mean(terms))


def test_unbiased_hsic_is_the_u_statistic():
    x, y = randn(7, 3, seed=5), randn(7, 2, seed=6)
    y[:, 1] += x[:, 2]
    k, l_ = x @ x.T, y @ y.T
    assert float(unbiased_hsic(k, l_)) == pytest.approx(
        u_statistic_reference(k.numpy(), l_.numpy()), rel=1e-10
    )


@pytest.mark.parametrize("m", [4, 5, 6])
def test_full_unbiased_hsic_is_the_mean_over_all_minibatches(m):
    """A U-statistic on n points is the mean of the same U-statistic over all m-subsets:
    a random minibatch's HSIC_1 has the full-batch HSIC_1 as its expectation."""
    x, y = randn(8, 3, seed=7), randn(8, 4, seed=8)
    y[:, 0] -= x[:, 1]
    k, l_ = x @ x.T, y @ y.T
    subsets = [list(s) for s in itertools.combinations(range(8), m)]
    mean = np.mean([float(unbiased_hsic(k[s][:, s], l_[s][:, s])) for s in subsets])
    assert mean == pytest.approx(float(unbiased_hsic(k, l_)), rel=1e-10)


def unbiased_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    k, l_ = x @ x.T, y @ y.T
    return float(unbiased_hsic(k, l_) / (unbiased_hsic(k, k) * unbiased_hsic(l_, l_)).sqrt())


def test_minibatch_cka_close_to_full_batch_and_batch_size_free():
    """Tolerance: by the identity above, the minibatch sums are the full-batch unbiased
    HSIC values plus noise from which images share a minibatch (mean zero). We measure that
    noise's SD over 20 random partitions per batch size and allow 4 SD, checking it is a
    tight bound (4 SD < 0.05). The mean HSIC over the partitions must be within 4 standard
    errors of the full-batch value (a biased per-batch HSIC would miss it by O(1/m))."""
    n = 400
    x = randn(n, 6, seed=9)
    y = torch.tanh(x @ randn(6, 5, seed=10)) + 0.5 * randn(n, 5, seed=11)
    full = unbiased_cka(x, y)
    k, l_ = x @ x.T, y @ y.T
    full_hsic = float(unbiased_hsic(k, l_))
    assert float(minibatch_cka(x, y, batch_size=n)) == pytest.approx(full, abs=1e-12)
    in_order = {}
    for m in (25, 50, 100, 200):
        ckas, hsics = [], []
        for r in range(20):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(100 + r))
            acc = MinibatchCKA()
            for start in range(0, n, m):
                acc.update([x[perm[start : start + m]], y[perm[start : start + m]]])
            ckas.append(float(acc.compute()[0, 1]))
            hsics.append(float(acc.hsic_[0, 1]) / acc.batches_)
        sd = float(np.std(ckas, ddof=1))
        assert 4 * sd < 0.05, (m, sd)
        assert max(abs(c - full) for c in ckas) <= 4 * sd
        standard_error = np.std(hsics, ddof=1) / np.sqrt(len(hsics))
        assert abs(np.mean(hsics) - full_hsic) <= 4 * standard_error
        in_order[m] = (float(minibatch_cka(x, y, batch_size=m)), sd)
    for value, sd in in_order.values():
        assert abs(value - full) <= 4 * sd
    for (a, sa), (b, sb) in itertools.combinations(in_order.values(), 2):
        assert abs(a - b) <= 4 * (sa + sb)


def test_float32_minibatch_grams_keep_float64_accuracy():
    """Grams of float32 activations are formed in float32 after removing float64 means: even
    with a large common offset (ReLU maps far from zero) CKA matches the float64 value."""
    x = randn(64, 300, seed=21) + 1e3
    y = x[:, :50] * 0.5 + randn(64, 50, seed=22) + 1e3
    x32, y32 = x.float(), y.float()
    exact = minibatch_cka(x32.double(), y32.double(), batch_size=16)
    assert float(minibatch_cka(x32, y32, batch_size=16)) == pytest.approx(float(exact), abs=1e-6)


def test_minibatch_needs_four_images():
    with pytest.raises(InputError, match="at least 4 images, got batch_size=3"):
        minibatch_cka(randn(10, 2), randn(10, 2), batch_size=3)
    with pytest.raises(InputError, match="got 3"):
        unbiased_hsic(torch.eye(3), torch.eye(3))


# --- SVCCA ------------------------------------------------------------------


def svcca_reference(x: np.ndarray, y: np.ndarray, keep: float):
    """SVD truncation to ``keep`` of the variance, then CCA as the singular values of the
    whitened cross-covariance S_xx^-1/2 S_xy S_yy^-1/2 (scipy.linalg)."""

    def reduce(a):
        a = a - a.mean(0)
        u, s, _ = scipy.linalg.svd(a, full_matrices=False)
        share = np.cumsum(s**2) / np.sum(s**2)
        k = int(np.searchsorted(share, keep - 1e-12)) + 1
        return u[:, :k] * s[:k]

    xr, yr = reduce(x), reduce(y)
    n = len(x)
    sxx, syy, sxy = xr.T @ xr / (n - 1), yr.T @ yr / (n - 1), xr.T @ yr / (n - 1)
    whiten_x = scipy.linalg.inv(scipy.linalg.sqrtm(sxx).real)
    whiten_y = scipy.linalg.inv(scipy.linalg.sqrtm(syy).real)
    rho = scipy.linalg.svdvals(whiten_x @ sxy @ whiten_y)
    return rho, (xr.shape[1], yr.shape[1])


@pytest.mark.parametrize("keep", [0.9, 0.99, 1.0])
def test_svcca_matches_scipy_reference(keep):
    n = 60
    x = (randn(n, 8, seed=12) * torch.logspace(0, -2, 8, dtype=torch.float64)).numpy()
    y = x[:, :5] @ randn(5, 6, seed=13).numpy() + 0.05 * randn(n, 6, seed=14).numpy()
    rho, dims = svcca_reference(x, y, keep)
    got = svcca(torch.from_numpy(x), torch.from_numpy(y), keep=keep)
    assert got.dims == dims
    if keep < 1:
        assert dims[0] < 8  # the truncation did something
    np.testing.assert_allclose(got.correlations.numpy(), rho, atol=1e-9)
    assert got.similarity == pytest.approx(float(rho.mean()), abs=1e-9)


def test_svcca_invariances_and_errors():
    x = randn(50, 6, seed=15)
    q, _ = torch.linalg.qr(randn(6, 6, seed=16))
    assert svcca(x, x).similarity == pytest.approx(1, abs=1e-10)
    assert svcca(x, 2.5 * x @ q + 1).similarity == pytest.approx(1, abs=1e-10)
    assert svcca(x, randn(50, 6, seed=17)).similarity < 0.6
    with pytest.raises(InputError, match=r"keep .* \(0, 1\], got 1.5"):
        svcca(x, x, keep=1.5)
    with pytest.raises(InputError, match="50 rows vs 49"):
        svcca(x, x[:49])


# --- layer_similarity on a tiny conv net ------------------------------------


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(x + self.bn(self.conv(x)))


class TinyNet(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.block1 = Block(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 3)
        self.spare = nn.Conv2d(3, 3, 1)  # never runs

    def forward(self, x):
        x = self.relu2(self.conv2(self.block1(self.relu(self.conv1(x)))))
        return self.head(self.pool(x).flatten(1))


LAYERS = ["relu", "block1", "relu2"]


@pytest.fixture(scope="module")
def images():
    x = randn(24, 3, 8, 8, seed=20).float()
    return x, torch.arange(24) % 3


def captured(model: nn.Module, x: torch.Tensor, names, reduce: str) -> list[torch.Tensor]:
    """Each layer's output from plain forward hooks (the reference for the collection)."""
    out = {}
    handles = [
        model.get_submodule(name).register_forward_hook(
            lambda _m, _i, o, name=name: out.__setitem__(name, o.detach())
        )
        for name in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in handles:
        h.remove()
    return [out[n].flatten(2).mean(2) if reduce == "mean" else out[n].flatten(1) for n in names]


def test_default_layers():
    probe = torch.zeros(1, 3, 32, 32)
    assert default_layers(TinyNet(), probe[..., :8, :8]) == LAYERS
    resnet = nets.create("resnet20", num_classes=8)
    blocks = [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert default_layers(resnet, probe) == ["relu", *blocks]
    assert default_layers(nets.create("lenet5", num_classes=4), probe) == [
        "relu1",
        "relu2",
        "relu3",
    ]


@pytest.mark.parametrize(
    "method,estimator,reduce",
    [("cka", "minibatch", "flatten"), ("cka", "full", "mean"), ("svcca", "minibatch", "mean")],
)
def test_self_similarity(images, method, estimator, reduce):
    model = TinyNet().train()  # frozen() must put it back in train mode
    before = model_fingerprint(model)
    result = layer_similarity(
        model, images, method=method, estimator=estimator, reduce=reduce, batch_size=8
    )
    assert same_fingerprint(before, model_fingerprint(model))
    assert result.rows == result.columns == LAYERS
    assert result.matrix.shape == (3, 3) and result.n == 24
    assert torch.allclose(result.matrix.diagonal(), torch.ones(3, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(result.matrix, result.matrix.T, atol=1e-12)
    feats = captured(model, images[0], LAYERS, reduce)
    model.train()
    if method == "svcca":
        expected = svcca(feats[0], feats[2]).similarity
    elif estimator == "full":
        expected = float(linear_cka(feats[0], feats[2]))
    else:
        expected = float(minibatch_cka(feats[0], feats[2], batch_size=8))
    assert float(result.matrix[0, 2]) == pytest.approx(expected, abs=1e-10)


def test_against_a_copy_and_another_model(images):
    model = TinyNet()
    alone = layer_similarity(model, images, batch_size=8)
    twin = copy.deepcopy(model)
    before = [model_fingerprint(m) for m in (model, twin)]
    pair = layer_similarity(model, images, other=twin, batch_size=8)
    assert all(same_fingerprint(b, model_fingerprint(m)) for b, m in zip(before, (model, twin)))
    assert torch.allclose(pair.matrix, alone.matrix, atol=1e-10)
    seeded = layer_similarity(model, images, other=TinyNet(seed=1), other_layers=["relu2", "head"])
    assert seeded.matrix.shape == (3, 2) and seeded.columns == ["relu2", "head"]
    assert torch.isfinite(seeded.matrix).all()
    assert float(seeded.matrix[2, 0]) < 0.999  # another seed's layer is not the same map


def test_data_forms_agree(images):
    model = TinyNet()
    x, y = images
    ref = layer_similarity(model, (x, y), estimator="full").matrix
    for data in (TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=5)):
        assert torch.allclose(layer_similarity(model, data, estimator="full").matrix, ref)
    first = layer_similarity(model, (x, y), estimator="full", n=12).matrix
    assert torch.allclose(first, layer_similarity(model, (x[:12], y[:12]), estimator="full").matrix)


def test_errors_name_the_value(images):
    model = TinyNet()
    before = model_fingerprint(model)
    with pytest.raises(LayerError, match="'block9'"):
        layer_similarity(model, images, layers=["relu", "block9"])
    with pytest.raises(LayerError, match=r"\['spare'\] .* did not run"):
        layer_similarity(model, images, layers=["relu", "spare"])
    assert same_fingerprint(before, model_fingerprint(model))  # hooks gone after the error
    with pytest.raises(InputError, match="at least 4 images, got 3"):
        layer_similarity(model, images, n=3)
    with pytest.raises(InputError, match="n=30 images asked for but tensors has 24"):
        layer_similarity(model, images, n=30)
    with pytest.raises(InputError, match="'cca'"):
        layer_similarity(model, images, method="cca")
    with pytest.raises(InputError, match="'max'"):
        layer_similarity(model, images, reduce="max")
    with pytest.raises(InputError, match="batch_size=2"):
        layer_similarity(model, images, batch_size=2)
    with pytest.raises(InputError, match=r"cannot run on images of shape \(3, 8, 8\)"):
        layer_similarity(nn.Sequential(nn.Conv2d(1, 2, 3)), images)


def test_heatmap_follows_the_figure_rule(images):
    model = TinyNet()
    for result in (
        layer_similarity(model, images),
        layer_similarity(model, images, other=TinyNet(seed=1), other_layers=["relu2", "head"]),
    ):
        rendered = render(similarity_heatmap(result))
        assert rendered.problems() == []
        assert rendered.text_px >= 11
