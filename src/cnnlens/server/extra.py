"""The optional extra ``cnnlens[serve]``: import FastAPI and uvicorn or say how to get them."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

PACKAGES = ("fastapi", "uvicorn", "multipart")  # multipart: python-multipart, for uploads


def require() -> None:
    """Import the explorer's packages; a :class:`ConfigError` naming the extra if one is missing."""
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append("python-multipart" if name == "multipart" else name)
    if missing:
        raise ConfigError(
            f"cnnlens serve needs the optional extra 'serve' ({', '.join(missing)} not "
            "installed): pip install 'cnnlens[serve]'"
        )
