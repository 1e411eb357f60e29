"""The local browser explorer behind ``cnnlens serve RUN_OR_STORE`` (issue 18, "Explorer").

A FastAPI app (:func:`create_app`) serves one static page and a small JSON/PNG API over a
run folder (``cnnlens train`` / ``cnnlens demo``: model, ``report.html``) or a store
(``cnnlens run``): images with their predictions, attribution maps as overlays, deletion /
insertion curves, the metric table, the report's model-level sections, and on-the-fly
explanations of an uploaded image. Safe by default: loopback only, bounded uploads decoded
by Pillow, no file outside the served folder, nothing unpickled or executed from it.

FastAPI and uvicorn are the optional extra ``cnnlens[serve]``; they are imported only
when the app is made (:func:`cnnlens.server.extra.require`).
"""

from __future__ import annotations

from typing import Any


def create_app(path, **options: Any):
    """The explorer's ASGI app for a run folder or store at ``path`` (see :mod:`.app`)."""
    from .app import create_app as make

    return make(path, **options)


def serve(path, **options: Any) -> None:
    """Serve the explorer with uvicorn until interrupted (see :mod:`.runner`)."""
    from .runner import serve as run

    run(path, **options)


__all__ = ["create_app", "serve"]
