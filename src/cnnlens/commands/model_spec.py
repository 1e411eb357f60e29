"""The model options every command that takes ``--model`` shares, defined once.

``@model_options()`` under ``@app.command()`` gives a command ``--model`` with the card
options ``--weights --classes --input --mean --std`` (the same names and help everywhere)
and hands the command one :class:`~cnnlens.loading.spec.ModelSpec` as its ``model``
argument, its fields checked; ``model.open(device=...)`` is the one :func:`cnnlens.load`
call. A module without ``register`` is no subcommand of its own (:mod:`cnnlens.cli`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path

import typer

MODEL_HELP = (
    "the model: a cnnlens model or run folder; package.module:callable with --weights "
    "(your own code: the module is imported as you would import it, from the current "
    "folder and PYTHONPATH, so it runs that code); a cnnlens.nets name with --weights; "
    "a model.yaml; torchvision:NAME or timm:NAME where those import"
)
CARD_HELP = {
    "weights": "model card: weights file (.safetensors, or .pt/.pth read with "
    "weights_only=True) for a module spec",
    "classes": "model card: class names, one a line (default 0..K-1)",
    "input": "model card: input shape C,H,W, e.g. 3,224,224",
    "mean": "model card: per-channel mean of the normalisation, e.g. 0.485,0.456,0.406",
    "std": "model card: per-channel std of the normalisation, e.g. 0.229,0.224,0.225",
}


def _parameters(required: bool, help: str, kind) -> list[inspect.Parameter]:
    def option(name: str, annotation, default) -> inspect.Parameter:
        return inspect.Parameter(name, kind, default=default, annotation=annotation)

    return [
        option("model", str | None, typer.Option(... if required else None, help=help)),
        option("weights", Path | None, typer.Option(None, help=CARD_HELP["weights"])),
        option("classes", Path | None, typer.Option(None, help=CARD_HELP["classes"])),
        option("input", str | None, typer.Option(None, "--input", help=CARD_HELP["input"])),
        option("mean", str | None, typer.Option(None, help=CARD_HELP["mean"])),
        option("std", str | None, typer.Option(None, help=CARD_HELP["std"])),
    ]


def model_options(*, required: bool = True, help: str = MODEL_HELP) -> Callable:
    """Decorate a command whose ``model`` parameter becomes ``--model`` plus the card
    options; the command receives a checked :class:`ModelSpec` (None when ``required`` is
    False and no ``--model`` is given: then no card option may be given either)."""

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command)
        signature = inspect.signature(command)
        params = []
        for p in signature.parameters.values():
            if p.name == "model":
                params += _parameters(required, help, p.kind)
            else:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
        if not any(p.name == "weights" for p in params):
            raise TypeError(f"{command.__name__} has no model parameter to give the options")

        @functools.wraps(command)
        def wrapper(**kwargs):
            text = kwargs.pop("model")
            card = {k: kwargs.pop(k) for k in ("weights", "classes", "input", "mean", "std")}
            kwargs["model"] = model_spec(text, card)
            return command(**kwargs)

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        wrapper.__signature__ = signature.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def model_spec(text: str | None, card: dict):
    """``--model`` and the card options as one checked spec (None: no ``--model``)."""
    from ..errors import InputError
    from ..loading.spec import ModelSpec

    if text is None:
        given = [f"--{k}" for k, v in card.items() if v is not None]
        if given:
            raise InputError(f"{', '.join(given)} describe a model: give --model too")
        return None
    return ModelSpec.from_fields(text, {k: v for k, v in card.items() if v is not None})


def out_folder(out: Path | None, model, name: str) -> Path:
    """``out``, else ``<model folder>/<name>`` for a saved model; a module spec has no
    folder of its own, so ``--out`` is needed there."""
    from ..errors import InputError

    if out is not None:
        return out
    if model.folder is None:
        raise InputError(f"--model {model.spec} is not a folder: give --out")
    return model.folder / name
