"""The optional extra ``cnnlens[serve]``: import FastAPI and uvicorn or say how to get them."""

from __future__ import annotations

import importlib

from ..errors import ConfigError

PACKAGES = {"fastapi": "fastapi", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def require() -> None:
    """Import the explorer's packages; a :class:`ConfigError` naming the extra if one is missing."""
    missing = []
    for module, package in PACKAGES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise ConfigError(
            f"cnnlens serve needs the optional extra 'serve' ({', '.join(missing)} not "
            "installed): pip install 'cnnlens[serve]'"
        )
