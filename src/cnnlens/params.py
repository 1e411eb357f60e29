"""Declared parameters: each method and metric says what it takes, one check for all.

A :class:`Param` is the type, the range and the accepted words of one
hyperparameter; :func:`check_params` checks a mapping of given values against
a ``{name: Param}`` declaration and raises one :class:`~cnnlens.errors.InputError`
naming the first bad name or value. Attribution methods (``Method.hyperparameters``)
and metrics (``PARAMS`` next to each metric) declare theirs with it, so the
Python API, ``cnnlens explain`` / ``evaluate`` and job files all refuse the
same inputs with the same message before any work or any write.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError, LayerError

KINDS = ("int", "float", "bool", "str", "tensor", "layer", "pair", "any")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: ``kind`` (or kinds, ``"int|tensor"``), its default, a range
    ``[min, max]`` (``open_min``/``open_max`` exclude the bound), ``choices`` (the words
    a string may be; with a non-string kind, words accepted besides it, e.g. ``"auto"``)
    and whether ``None`` is allowed (``none``: the default is computed, say so in
    ``help``). ``layer`` values name a module of the model (checked when it is known);
    ``pair`` is an int or ``(height, width)``; ``validate`` is called on a given value
    that passed, for what a range cannot say (a syntax, a pair's order)."""

    kind: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    open_min: bool = False
    open_max: bool = False
    choices: tuple = ()
    none: bool = False
    help: str = ""
    validate: Callable[[Any], Any] | None = None  # a further check of a given value

    def __post_init__(self) -> None:
        bad = [k for k in self.kind.split("|") if k not in KINDS]
        if bad:
            raise InputError(f"unknown parameter kind {bad[0]!r}; known: {', '.join(KINDS)}")

    def describe(self) -> str:
        """What this parameter accepts, for an error message."""
        kinds = {
            "int": "an integer",
            "float": "a number",
            "bool": "true or false",
            "str": "a word",
            "tensor": "a tensor",
            "layer": "a layer name",
            "pair": "an integer or (height, width)",
            "any": "a value",
        }
        parts = [kinds[k] for k in self.kind.split("|") if not (k == "str" and self.choices)]
        if self.min is not None or self.max is not None:
            lo = "" if self.min is None else f"{'>' if self.open_min else '>='} {self.min:g}"
            hi = "" if self.max is None else f"{'<' if self.open_max else '<='} {self.max:g}"
            parts[0] = f"{parts[0]} {' and '.join(p for p in (lo, hi) if p)}" if parts else ""
        parts += [repr(c) for c in self.choices]
        if self.none:
            parts.append("none")
        return " or ".join(p for p in parts if p)

    def _in_range(self, v: float) -> bool:
        if math.isnan(v) or (
            self.min is not None and (v <= self.min if self.open_min else v < self.min)
        ):
            return False
        return self.max is None or (v < self.max if self.open_max else v <= self.max)

    def accepts(self, value: Any, model: Any = None) -> bool:
        """Whether ``value`` fits this declaration (and names a layer of ``model``)."""
        if value is None:
            return self.none
        if isinstance(value, str) and value in self.choices:
            return True
        for kind in self.kind.split("|"):
            if kind == "any":
                return True
            if kind == "bool" and isinstance(value, bool):
                return True
            if isinstance(value, bool):
                continue
            if kind == "int" and isinstance(value, int):
                return self._in_range(value)
            if kind == "float" and isinstance(value, int | float):
                return math.isfinite(value) and self._in_range(float(value))
            if kind == "pair" and isinstance(value, int | tuple | list):
                items = [value] if isinstance(value, int) else list(value)
                return len(items) in (1, 2) and all(
                    isinstance(i, int) and not isinstance(i, bool) and self._in_range(i)
                    for i in items
                )
            if kind == "str" and isinstance(value, str) and not self.choices:
                return True
            if kind == "tensor" and type(value).__name__ == "Tensor":
                return True
            if kind == "layer" and isinstance(value, str):
                return True
        return False

    def check(self, owner: str, name: str, value: Any, model: Any = None) -> None:
        """Raise an :class:`InputError` (a :class:`LayerError` for a missing layer)."""
        if not self.accepts(value, model):
            where = f"{owner}: {name}" if owner else name
            raise InputError(f"{where} must be {self.describe()}, got {value!r}")
        if "layer" in self.kind.split("|") and isinstance(value, str) and model is not None:
            if value not in self.choices:
                from .layers import get_layer

                try:
                    get_layer(model, value)
                except LayerError as exc:
                    raise LayerError(f"{owner}: {name}={value!r}: {exc}") from None
        if self.validate is not None and value is not None and value not in self.choices:
            try:
                self.validate(value)
            except InputError as exc:
                raise InputError(f"{owner}: {exc}" if owner else str(exc)) from None


def check_names(owner: str, given: Mapping[str, Any], valid: Any, noun: str = "parameter") -> None:
    """An :class:`InputError` naming each unknown name, with the closest valid one."""
    unknown = [k for k in given if k not in valid]
    if not unknown:
        return
    hints = []
    for k in unknown:
        close = difflib.get_close_matches(str(k), sorted(valid), n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise InputError(
        f"{owner} has no {noun} {', '.join(hints)}; valid: {', '.join(sorted(valid)) or 'none'}"
    )


def check_params(
    owner: str, params: Any, spec: Mapping[str, Param], model: Any = None, noun: str = "parameter"
) -> dict[str, Any]:
    """Check ``params`` (a mapping) against the declaration ``spec``; returns it as a dict.

    Unknown names, values of the wrong type, out of range or not among the
    accepted words, and (with ``model``) layer names the model lacks raise one
    :class:`InputError` naming ``owner``, the parameter and what it accepts."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InputError(f"{owner}: parameters must be a mapping of name: value, got {params!r}")
    check_names(owner, params, spec, noun)
    for name, value in params.items():
        spec[name].check(owner, name, value, model)
    return dict(params)


def check_options(options: Mapping[str, tuple[Any, Param]]) -> None:
    """Check command-line options ``{"--n": (value, Param(...))}`` with the same rules,
    in one line each (typer's own range errors print the usage over several)."""
    for option, (value, param) in options.items():
        param.check("", option, value)


def defaults(spec: Mapping[str, Param]) -> dict[str, Any]:
    """``{name: default}`` of a declaration."""
    return {name: p.default for name, p in spec.items()}
