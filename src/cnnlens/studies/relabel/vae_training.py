"""Train (or reuse) the VAE of re-label distillation on a data set, through the one loop.

:func:`train_vae` trains :class:`~cnnlens.studies.relabel.vae.ConvVAE` with the
:class:`~cnnlens.studies.relabel.vae.ELBO` objective via :func:`cnnlens.train.fit` and saves
it with :func:`cnnlens.save` in ``out/model``; ``out/run.json`` records what the
run was (data, options, VAE size, training configuration), and a second call
with the same identity loads the saved VAE instead of training again (as
:func:`cnnlens.train.classifier.train_classifier` does for classifiers).

Where the CLI and the demo keep it: ``<run folder>/vae-<data set>`` next to
the classifier's ``model/`` (:func:`vae_folder`), e.g. ``runs/demo/vae-shapes``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ... import checkpoint, nets
from ...data import as_dataset
from ...data import load as load_data
from ...data.base import ImageDataset
from ...errors import CheckpointError, InputError
from ...io import write_json
from ...placement import model_device
from ...train import OptimizerConfig, TrainConfig, fit
from .vae import ELBO

# Full mode: at least 4 epochs and at least VAE_IMAGES_SEEN images (20 epochs of the
# 10,000 shapes training images, 140 of the 1,437 digits ones). On shapes, width 32, the
# held-out reconstruction MSE (normalised) was 0.48 after 10 epochs, 0.32 after 20 and
# 0.31 after 40; with 2 epochs of width 16 (the earlier default) it was 0.66 and
# re-label distillation scored no better than a random map.
VAE_IMAGES_SEEN = 200_000
DEFAULT_WIDTH = 32
VAE_CONFIG = TrainConfig(
    epochs=4,
    batch_size=64,
    optimizer=OptimizerConfig(name="adam", lr=2e-3, weight_decay=0.0),
    schedule="cosine",
    augment=(),
    seed=0,
)
# The demo's quick mode: a small VAE for a few seconds (a smoke test, not a good generator).
QUICK_VAE = {"epochs": 2, "n_train": 1000, "width": 8}
QUALITY_IMAGES = 500


@dataclass
class TrainedVAE:
    """A VAE with its history, reconstruction quality and where it is saved."""

    vae: nn.Module
    history: list[dict]
    quality: dict
    reused: bool
    seconds: float
    folder: Path | None


def data_label(data: object) -> str:
    """A folder-safe name of a data set spec (``"cifar10:/x"`` -> ``"cifar10"``) or object."""
    name = data.partition(":")[0] if isinstance(data, str) else getattr(data, "name", "data")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)) or "data"


def vae_folder(run: str | Path, data: object) -> Path:
    """Where a classifier run folder keeps the VAE of ``data``: ``run/vae-<data>``.

    ``run`` may be the run folder or its ``model/`` subfolder.
    """
    run = Path(run)
    if (run / "model.json").is_file() and run.name == "model":
        run = run.parent
    return run / f"vae-{data_label(data)}"


@torch.no_grad()
def reconstruction_quality(vae: nn.Module, data, *, n: int = QUALITY_IMAGES) -> dict:
    """Mean squared error of ``decode(mu(x))`` on the first ``n`` images (normalised units)
    and the PSNR in dB of the un-normalised ``[0, 1]`` images."""
    data = as_dataset(data)
    count = min(n, len(data))
    x, _ = data.tensors(range(count))
    device = model_device(vae)
    was_training = vae.training
    vae.eval()
    try:
        recon = torch.cat([vae(x[i : i + 256].to(device)).cpu() for i in range(0, count, 256)])
    finally:
        vae.train(was_training)
    mse = float(((recon - x) ** 2).mean())
    raw_mse = float(((data.denormalize(recon) - data.denormalize(x)) ** 2).mean())
    psnr = 10 * math.log10(1.0 / max(raw_mse, 1e-12))
    return {"images": count, "mse": mse, "psnr_db": psnr}


def build_vae(
    data: ImageDataset, *, latent: int | None = None, width: int = DEFAULT_WIDTH
) -> nn.Module:
    """A :class:`~cnnlens.studies.relabel.vae.ConvVAE` sized for ``data``'s images."""
    c, h, w = data.image_shape
    return nets.create(
        "conv-vae", num_classes=1, in_channels=c, image_size=[h, w], latent=latent, width=width
    )


def check_vae_options(
    *, latent: int | None, width: int, beta: float, config: TrainConfig | None
) -> None:
    """Refuse VAE settings out of range before any data is read or file written."""
    if latent is not None and (
        isinstance(latent, bool) or not isinstance(latent, int) or latent < 1
    ):
        raise InputError(f"latent must be a positive integer (None: by image size), got {latent!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise InputError(f"width must be a positive integer, got {width!r}")
    if not beta >= 0:
        raise InputError(f"beta must be >= 0, got {beta!r}")
    if config is not None and not isinstance(config, TrainConfig):
        raise InputError(f"config must be a cnnlens.train.TrainConfig, got {type(config).__name__}")


def vae_epochs(text: str, images: int) -> int:
    """``--epochs``: ``auto`` (at least 4 and enough to see :data:`VAE_IMAGES_SEEN` images
    of a ``images``-image training split) or a positive integer; 0 is refused, never auto."""
    if text.strip().lower() == "auto":
        return max(VAE_CONFIG.epochs, math.ceil(VAE_IMAGES_SEEN / max(images, 1)))
    try:
        epochs = int(text)
    except ValueError:
        raise InputError(f"--epochs takes a positive integer or 'auto', got {text!r}") from None
    if epochs < 1:
        raise InputError(f"--epochs must be >= 1 (or 'auto'), got {epochs}")
    return epochs


def train_vae(
    data: object,
    *,
    out: str | Path | None = None,
    latent: int | None = None,
    width: int = DEFAULT_WIDTH,
    config: TrainConfig | None = None,
    beta: float = 1.0,
    data_options: dict | None = None,
    reuse: bool = True,
    overwrite: bool = False,
) -> TrainedVAE:
    """Train a ConvVAE on ``data`` (a data set spec such as ``"shapes"``, or any data
    :func:`~cnnlens.data.as_dataset` accepts), or reuse the one saved in ``out``.

    With ``out`` the VAE is saved in ``out/model`` (``cnnlens.save``: weights, its
    architecture and arguments, the data's normalisation and input shape, the
    reconstruction quality) and ``out/run.json``; an identical earlier run there
    is loaded instead (``reuse``). ``config`` defaults to :data:`VAE_CONFIG` with
    enough epochs to see :data:`VAE_IMAGES_SEEN` images. Test-split reconstruction
    quality is reported (validation split or the training data where there is no test split).
    A run in ``out`` with other settings is refused unless ``overwrite``
    (:func:`cnnlens.runs.saved_run`); every input is checked before a file is written.
    """
    from ...io import check_writable_folder
    from ...runs import load_saved, saved_run

    check_vae_options(latent=latent, width=width, beta=beta, config=config)
    if out is not None:
        check_writable_folder(out)
    data_options = dict(data_options or {})
    if isinstance(data, str):
        train = load_data(data, split="train", **data_options)
        held_out = _split_or_none(data, "test", {k: v for k, v in data_options.items() if k != "n"})
        described: object = data
    else:
        train = as_dataset(data)
        held_out = None
        described = train.describe()
    held_out = held_out if held_out is not None else train
    if config is None:
        epochs = max(VAE_CONFIG.epochs, math.ceil(VAE_IMAGES_SEEN / len(train)))
        config = replace(VAE_CONFIG, epochs=epochs)
    identity = json.loads(
        json.dumps(
            {
                "kind": "conv-vae",
                "data": described,
                "data_options": data_options,
                "latent": latent,
                "width": width,
                "beta": beta,
                "config": config.to_dict(),
            },
            default=str,
        )
    )
    out = None if out is None else Path(out)
    saved = None if out is None else saved_run(out, identity, overwrite=overwrite)
    if reuse and saved is not None:
        vae = load_saved(out / "model", checkpoint.load)
        return TrainedVAE(vae, saved.get("history", []), saved.get("quality", {}), True, 0.0, out)
    torch.manual_seed(config.seed)
    vae = build_vae(train, latent=latent, width=width)
    result = fit(vae, train, config=config, objective=ELBO(beta), out=out, desc="vae")
    quality = reconstruction_quality(vae, held_out)
    if out is not None:
        checkpoint.save(
            vae,
            out / "model",
            mean=train.mean,
            std=train.std,
            input_shape=train.image_shape,
            extra={"kind": "vae", "data": str(data_label(data)), "reconstruction": quality},
        )
        write_json(
            out / "run.json",
            {
                "identity": identity,
                "history": result.history,
                "quality": quality,
                "seconds": result.seconds,
            },
        )
    return TrainedVAE(vae, result.history, quality, False, result.seconds, out)


def quick_config(config: TrainConfig | None = None) -> TrainConfig:
    """The demo's quick-mode VAE training configuration."""
    return replace(config or VAE_CONFIG, epochs=QUICK_VAE["epochs"], batch_size=64)


def open_vae(path: str | Path, *, device: str | torch.device | None = None) -> nn.Module:
    """Load a VAE saved by :func:`train_vae` from its ``model/`` folder or its run folder."""
    from .vae import is_vae

    path = Path(path)
    if not (path / "model.json").is_file() and (path / "model" / "model.json").is_file():
        path = path / "model"
    if not (path / "model.json").is_file():
        raise CheckpointError(
            f"no saved VAE in {path}: expected {path / 'model.json'} (train one with "
            "`cnnlens train-vae --data <data> --out <folder>`)"
        )
    vae = checkpoint.load(path, device=device)
    if not is_vae(vae):
        raise InputError(f"{path} holds a {type(vae).__name__}, not a VAE (encode/decode)")
    return vae


def _split_or_none(spec: str, split: str, options: dict) -> ImageDataset | None:
    try:
        return load_data(spec, split=split, **options)
    except Exception:  # noqa: BLE001 - data sets without that split
        return None


def locate_vae(model: str | Path, data: str, given: str | Path | None = None) -> Path:
    """The saved VAE the CLI uses for ``--model`` on ``--data``: ``given`` (``--vae``) if
    set, else the cached ``vae-<data>`` folder next to the model (:func:`vae_folder`);
    an InputError saying how to get one when there is none."""
    if given is not None:
        path = Path(given)
        if not ((path / "model.json").is_file() or (path / "model" / "model.json").is_file()):
            raise InputError(
                f"--vae {path} holds no saved VAE (expected {path / 'model' / 'model.json'}); "
                f"train one with `cnnlens train-vae --data {data} --out {path}`"
            )
        return path
    cached = vae_folder(model, data)
    if (cached / "model" / "model.json").is_file():
        return cached
    raise InputError(
        f"relabel needs a VAE trained on {data}, and there is none at {cached}: train it with "
        f"`cnnlens train-vae --data {data} --out {cached}` (about 1-2 minutes on 2 CPU cores) "
        "or pass --vae <folder>"
    )
