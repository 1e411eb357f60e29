"""The self-contained HTML report, built from independent sections.

A section is a function ``builder(ctx: ReportContext) -> str | None`` (HTML,
or ``None`` when it has nothing to say for this run) registered with
:func:`section`. Modules in :mod:`cnnlens.report.sections` are discovered
automatically, so each capability adds its section without editing a list.
A section that fails shows its error in the report instead of losing the
whole page.
"""

from __future__ import annotations

import datetime
import html
import importlib
import pkgutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..data.adapt import as_dataset
from ..data.base import ImageDataset
from ..io import write_text
from ..placement import model_device


@dataclass
class ReportContext:
    """What sections can read: the model, its data, the run's folder and options.

    ``cache`` lets sections share expensive results (e.g. test-set logits via
    :meth:`logits`). ``options`` carries run options such as ``quick``. ``train`` and
    ``test`` (and ``val``, a held-out split some sections draw examples from, e.g. TCAV's
    concept sets) may be any data :func:`~cnnlens.data.as_dataset` accepts; sections read
    them as cnnlens data sets. ``other_seeds`` maps a seed (as text) to the same
    architecture trained on the same data with that seed, for comparisons across
    training runs.
    """

    model: nn.Module
    train: ImageDataset | None
    test: ImageDataset
    out: Path
    history: list[dict] = field(default_factory=list)
    title: str = "cnnlens report"
    options: dict = field(default_factory=dict)
    other_seeds: dict[str, nn.Module] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)
    val: ImageDataset | None = None

    def __post_init__(self) -> None:
        self.test = as_dataset(self.test)
        self.train = None if self.train is None else as_dataset(self.train)
        self.val = None if self.val is None else as_dataset(self.val)

    def logits(self) -> torch.Tensor:
        """Test-set logits ``[N,K]`` (computed once, eval mode, model state restored)."""
        if "test_logits" not in self.cache:
            from ..chunking import run_chunked

            device = model_device(self.model)
            was_training = self.model.training
            self.model.eval()

            def forward(start: int, stop: int) -> torch.Tensor:
                x, _ = self.test.tensors(range(start, stop))
                with torch.no_grad():
                    return self.model(x.to(device)).cpu()

            try:
                self.cache["test_logits"] = run_chunked(forward, len(self.test), 256)
            finally:
                self.model.train(was_training)
        return self.cache["test_logits"]


@dataclass
class _Section:
    key: str
    title: str
    order: int
    build: Callable[[ReportContext], str | None]


_SECTIONS: dict[str, _Section] = {}


def section(key: str, title: str, *, order: int = 50) -> Callable:
    """Decorator registering a report section; lower ``order`` comes first. ``key`` is the
    section's id (hyphenated, like method and metric ids) and its anchor in the page."""
    if "_" in key:
        raise ValueError(f"report section ids are hyphenated: {key!r}")

    def wrap(fn: Callable[[ReportContext], str | None]):
        _SECTIONS[key] = _Section(key, title, order, fn)
        return fn

    return wrap


def registered_sections() -> list[tuple[str, str]]:
    """(key, title) of every registered section, in report order."""
    _discover()
    return [(s.key, s.title) for s in sorted(_SECTIONS.values(), key=lambda s: (s.order, s.key))]


def _discover() -> None:
    package = importlib.import_module(f"{__name__}.sections")

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: {{ column_px }}px; margin: 2em auto;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em;
       margin-top: 2em; }
nav a { margin-right: 1em; } table { border-collapse: collapse; margin: 0.8em 0;
       display: block; overflow-x: auto; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .meta { color: #666; font-size: 0.9em; }
.error { background: #fee; border: 1px solid #c00; padding: 0.5em; white-space: pre-wrap; }
.note { color: #555; font-size: 0.92em; }
.figure { display: inline-block; max-width: 100%; overflow-x: auto; vertical-align: top; }
.figure img { max-width: none; }
</style></head><body>
<h1>{{ title }}</h1>
<p class="meta">cnnlens {{ version }} &middot; written {{ when }}</p>
<nav>{% for s in parts %}<a href="#{{ s.key }}">{{ s.title }}</a>{% endfor %}</nav>
{% for s in parts %}<section id="{{ s.key }}"><h2>{{ s.title }}</h2>
{% if s.error %}<div class="error">{{ s.error }}</div>{% else %}{{ s.body }}{% endif %}
</section>{% endfor %}
</body></html>
"""


def build_report(ctx: ReportContext, path: str | Path, *, only: list[str] | None = None) -> Path:
    """Run every registered section (or those in ``only``) and write one HTML file."""
    import time

    import jinja2

    from .. import __version__
    from ..plotting import COLUMN_PX  # figures are shown at native size, up to this width
    from ..progress import log_line

    if only is not None:  # section ids are hyphenated; the underscored spellings still work
        only = [key.replace("_", "-") for key in only]
    parts = []
    chosen = [(k, t) for k, t in registered_sections() if only is None or k in only]
    for number, (key, title) in enumerate(chosen, start=1):
        start = time.perf_counter()
        try:
            body = _SECTIONS[key].build(ctx)
            error = None
        except Exception as exc:  # a broken section must not lose the whole report
            body = None
            error = f"This section failed: {type(exc).__name__}: {exc}\n" + "".join(
                traceback.format_exception(exc)[-3:]
            )
        state = "failed" if error else ("shown" if body is not None else "nothing to show")
        took = time.perf_counter() - start
        log_line(f"report: {number}/{len(chosen)} {title}: {state} ({took:.0f} s)")
        if body is None and error is None:
            continue
        parts.append({"key": key, "title": title, "body": body, "error": error})
    page = (
        jinja2.Environment(autoescape=False)
        .from_string(_PAGE)
        .render(
            title=html.escape(ctx.title),
            version=__version__,
            when=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            parts=parts,
            column_px=COLUMN_PX,
        )
    )
    return write_text(path, page)


def table_html(rows: list[dict], *, floatfmt: str = "{:.4g}") -> str:
    """A list of dicts as an HTML table (keys of the first row are the columns)."""
    if not rows:
        return "<p>(no rows)</p>"
    cols = list(rows[0])

    def cell(v):
        return floatfmt.format(v) if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


__all__ = ["ReportContext", "build_report", "registered_sections", "section", "table_html"]
