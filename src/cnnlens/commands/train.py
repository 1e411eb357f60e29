"""``cnnlens train``: train an architecture on a data set through the one loop."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        data: str = typer.Option("shapes", help="data set: shapes, digits, cifar10:/path, ..."),
        arch: str = typer.Option("resnet20", help="architecture name (see `cnnlens nets`)"),
        epochs: int = typer.Option(None, min=1, help="epochs (default 8; 15 for VGG nets)"),
        batch_size: int = typer.Option(128, min=1),
        lr: float = typer.Option(
            None, help="base learning rate (default 0.1; 0.02 for VGG nets, where 0.1 diverged)"
        ),
        optimizer: str = typer.Option("sgd", help="sgd, adam or adamw"),
        schedule: str = typer.Option("onecycle", help="cosine, onecycle, step or constant"),
        weight_decay: float = typer.Option(5e-4),
        augment: str = typer.Option("crop", help="comma list of flip,crop ('' for none)"),
        patience: int = typer.Option(
            0, min=0, help="early stopping: epochs without a better val accuracy (0: never stop)"
        ),
        seed: int = typer.Option(0),
        out: Path = typer.Option(..., help="run folder: model/, checkpoints/, history.json"),
        resume: bool = typer.Option(False, help="continue from the last checkpoint in --out"),
        overwrite: bool = typer.Option(
            False, help="train over a run in --out made with other settings (else refused)"
        ),
    ) -> None:
        """Train ARCH on DATA and save the model under OUT/model."""
        from ..train import OptimizerConfig, TrainConfig
        from ..train.classifier import default_epochs, default_lr, train_classifier

        if lr is None:
            lr = default_lr(arch)
        if epochs is None:
            epochs = default_epochs(arch)
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            optimizer=OptimizerConfig(name=optimizer, lr=lr, weight_decay=weight_decay),
            schedule=schedule,
            augment=tuple(a for a in augment.split(",") if a),
            patience=patience,
            seed=seed,
        )
        run = train_classifier(  # checks every input before it writes a file
            data=data,
            arch=arch,
            out=out,
            config=config,
            resume=resume,
            reuse=not resume,
            overwrite=overwrite,
        )
        verb = "reused" if run.reused else f"trained in {run.seconds:.0f} s"
        typer.echo(f"{arch} on {data}: test accuracy {100 * run.test_accuracy:.2f} % ({verb})")
        typer.echo(f"model saved in {out / 'model'}")

    @app.command()
    def nets() -> None:
        """List the architectures cnnlens can build."""
        from .. import nets as registry

        for name, text in registry.names().items():
            typer.echo(f"{name:16s} {text}")

    @app.command()
    def datasets() -> None:
        """List the data sets and readers cnnlens knows."""
        from .. import data

        for name, text in data.names().items():
            typer.echo(f"{name:14s} {text}")
