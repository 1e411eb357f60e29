"""``cnnlens train-vae``: the VAE re-label distillation needs, trained on a data set.

    cnnlens train-vae --data shapes --out runs/demo/vae-shapes

Saved where ``cnnlens explain --methods relabel`` and ``cnnlens evaluate
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
        latent: int = typer.Option(
            None, min=1, help="latent size (default 64 at 32x32, 128 at 64x64)"
        ),
        width: int = typer.Option(32, min=1, help="channels of the first convolution"),
        epochs: str = typer.Option(
            "auto", help="a positive integer, or auto: >= 4 and >= 40,000 images seen"
        ),
        seed: int = typer.Option(0),
        overwrite: bool = typer.Option(
            False, help="train over a VAE in --out made with other settings (else refused)"
        ),
    ) -> None:
        """Train a convolutional VAE on DATA (for `--methods relabel`) and save it in OUT."""
        import dataclasses

        from ..data import split_size
        from ..studies.relabel.vae_training import VAE_CONFIG, check_vae_options, vae_epochs
        from ..studies.relabel.vae_training import train_vae as run

        check_vae_options(latent=latent, width=width, beta=1.0, config=None)
        config = None
        if epochs.strip().lower() != "auto" or seed != 0:
            n = split_size(data, "train") if epochs.strip().lower() == "auto" else 0
            config = dataclasses.replace(VAE_CONFIG, epochs=vae_epochs(epochs, n), seed=seed)
        trained = run(  # checks --out and the rest before it writes a file
            data, out=out, latent=latent, width=width, config=config, overwrite=overwrite
        )
        q = trained.quality
        verb = "reused" if trained.reused else f"trained in {trained.seconds:.0f} s"
        typer.echo(
            f"VAE on {data} ({verb}): reconstruction MSE {q.get('mse', float('nan')):.4f} "
            f"(normalised), PSNR {q.get('psnr_db', float('nan')):.2f} dB on "
            f"{q.get('images', 0)} held-out images"
        )
        typer.echo(f"VAE saved in {out / 'model'}")
