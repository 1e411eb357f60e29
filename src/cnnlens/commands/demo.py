"""``cnnlens demo``: the main job — train (or reuse) ResNet-20 on ``shapes``,
evaluate it, and write the self-contained report."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Path = typer.Option(Path("runs/demo"), help="output folder"),
        quick: bool = typer.Option(
            False, "--quick", help="small data and 2 epochs: a smoke test in under 2 minutes"
        ),
        epochs: int = typer.Option(None, help="override the number of epochs"),
        seed: int = typer.Option(0),
    ) -> None:
        """Train ResNet-20 on the offline `shapes` data (or reuse it) and write report.html."""
        from ..demo import run_demo
        from ..io import check_writable_folder

        check_writable_folder(out)
        path = run_demo(out=out, quick=quick, epochs=epochs, seed=seed)
        typer.echo(f"report written to {path.resolve()}")
