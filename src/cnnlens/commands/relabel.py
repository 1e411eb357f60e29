"""``cnnlens train-vae``: the VAE re-label distillation needs, trained on a data set.

    cnnlens train-vae --data shapes --out runs/demo/vae-shapes

Saved where ``cnnlens explain --method relabel`` and ``cnnlens evaluate
--methods relabel`` look for it by default: ``<model run folder>/vae-<data>``
(or pass ``--vae <folder>`` to them). A second call with the same settings
reuses the saved VAE.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train-vae")
    def train_vae(
        data: str = typer.Option("shapes", help="data set: shapes, digits, cifar10:/path, ..."),
        out: Path = typer.Option(..., help="folder: model/, run.json (e.g. runs/demo/vae-shapes)"),
        latent: int = typer.Option(None, help="latent size (default 64 at 32x32, 128 at 64x64)"),
        width: int = typer.Option(32, min=1, help="channels of the first convolution"),
        epochs: int = typer.Option(None, help="default: >= 4 and >= 40,000 images seen"),
        seed: int = typer.Option(0),
    ) -> None:
        """Train a convolutional VAE on DATA (for `--method relabel`) and save it in OUT."""
        import dataclasses
        import math

        from ..data import load
        from ..io import check_writable_folder
        from ..relabel.vae_training import VAE_CONFIG, VAE_IMAGES_SEEN
        from ..relabel.vae_training import train_vae as run

        check_writable_folder(out)
        config = None
        if epochs is not None or seed != 0:
            n = len(load(data, split="train"))
            auto = max(VAE_CONFIG.epochs, math.ceil(VAE_IMAGES_SEEN / n))
            config = dataclasses.replace(VAE_CONFIG, epochs=epochs or auto, seed=seed)
        trained = run(data, out=out, latent=latent, width=width, config=config)
        q = trained.quality
        verb = "reused" if trained.reused else f"trained in {trained.seconds:.0f} s"
        typer.echo(
            f"VAE on {data} ({verb}): reconstruction MSE {q.get('mse', float('nan')):.4f} "
            f"(normalised), PSNR {q.get('psnr_db', float('nan')):.2f} dB on "
            f"{q.get('images', 0)} held-out images"
        )
        typer.echo(f"VAE saved in {out / 'model'}")
