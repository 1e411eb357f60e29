"""``cnnlens serve``: the local browser explorer of a run folder or a store.

    cnnlens serve runs/demo                 # http://127.0.0.1:8765/
    cnnlens serve store/ --port 9000 --max-upload-mb 5
    cnnlens serve runs/demo --host 0.0.0.0 --allow-remote   # prints a warning
    cnnlens serve --model mypkg.models:build --weights w.pth --classes classes.txt \
        --input 3,224,224 --data folder:/images   # any model spec, as every --model takes

Needs the optional extra ``cnnlens[serve]`` (FastAPI, uvicorn, python-multipart).
"""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options


def register(app: typer.Typer) -> None:
    @app.command()
    @model_options(required=False)
    def serve(
        run_or_store: Path = typer.Argument(
            None, help="run folder (cnnlens train / demo) or store (cnnlens run); or --model"
        ),
        model=None,
        data: str = typer.Option(
            None, help="with --model: the data set whose test images to browse"
        ),
        host: str = typer.Option("127.0.0.1", help="address to bind (loopback unless asked)"),
        port: int = typer.Option(8765, help="port to listen on"),
        max_upload_mb: float = typer.Option(10.0, help="largest image upload accepted, in MB"),
        allow_remote: bool = typer.Option(
            False, "--allow-remote", help="allow a --host other machines can reach (no login!)"
        ),
        images: int = typer.Option(
            64, help="run folder: how many test images of its data set to browse"
        ),
    ) -> None:
        """Explore a run or a store in the browser: images, maps, curves, metrics, report."""
        from ..errors import InputError
        from ..server import serve as run_server

        if images < 1:
            raise InputError(f"--images must be at least 1, got {images}")
        run_server(
            run_or_store,
            host=host,
            port=port,
            max_upload_mb=max_upload_mb,
            allow_remote=allow_remote,
            images=images,
            model=model,
            data=data,
        )
