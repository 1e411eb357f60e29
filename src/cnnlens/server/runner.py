"""Run the explorer with uvicorn: loopback by default, another address only when asked."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from ..errors import InputError

WARNING = (
    "warning: serving on {host}, reachable from other machines: anyone who can reach "
    "this address sees the images, maps and report of {path} and can use this machine to "
    "explain images. There is no login."
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, *, allow_remote: bool) -> bool:
    """Whether ``host`` is loopback; an InputError for another address without the flag."""
    if is_loopback(host):
        return True
    if not allow_remote:
        raise InputError(
            f"--host {host} would make the explorer reachable from other machines; add "
            "--allow-remote to do that on purpose (default: 127.0.0.1)"
        )
    return False


def serve(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    max_upload_mb: float = 10.0,
    allow_remote: bool = False,
    images: int | None = None,
    model=None,
    data: str | None = None,
) -> None:
    """Serve the explorer for ``path`` (or ``model`` on ``data``, see
    :func:`.sources.open_source`) on ``host:port`` until interrupted."""
    from . import extra

    extra.require()
    import uvicorn

    from .app import LOOPBACK, create_app

    if not 0 <= port <= 65535:
        raise InputError(f"--port must be 0 .. 65535, got {port}")
    loopback = check_host(host, allow_remote=allow_remote)
    app = create_app(
        path,
        max_upload_mb=max_upload_mb,
        allowed_hosts=(*LOOPBACK, host) if loopback else None,
        images=images,
        model=model,
        data=data,
    )
    path = path if model is None else model
    if not loopback:
        print(WARNING.format(host=host, path=path), file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"cnnlens explorer for {path}: http://{shown}:{port}/  (Ctrl+C stops it)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
