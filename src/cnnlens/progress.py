"""Progress for long work: a bar with rate and ETA on a terminal, quiet otherwise.

Quiet means no bar under CI, in tests (``PYTEST_CURRENT_TEST``), when stderr
is not a terminal, or when ``CNNLENS_QUIET=1``; callers that want one line per
epoch in logs use :func:`log_line`, which always prints unless quiet is forced.
"""

from __future__ import annotations

import os
import sys
import time


def interactive() -> bool:
    """True when a live progress bar makes sense."""
    if os.environ.get("CI") or os.environ.get("PYTEST_CURRENT_TEST"):
        return False
    if os.environ.get("CNNLENS_QUIET") == "1":
        return False
    return sys.stderr.isatty()


def log_line(text: str) -> None:
    """One line of progress for logs (suppressed only by ``CNNLENS_QUIET=1``)."""
    if os.environ.get("CNNLENS_QUIET") != "1":
        print(text, file=sys.stderr, flush=True)


class Progress:
    """A context-managed bar: ``with Progress(total, desc) as p: p.update(n, loss=...)``."""

    def __init__(self, total: int, desc: str | None = None, *, enabled: bool = True) -> None:
        self.total = total
        self.desc = desc or ""
        self.done = 0
        self.enabled = enabled and interactive()
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.desc, total=self.total, rate="", info="")
        self._start = time.perf_counter()
        return self

    def update(self, n: int = 1, **info: float) -> None:
        self.done += n
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self._start, 1e-9)
            text = " ".join(f"{k}={v:.4g}" for k, v in info.items())
            self._bar.update(self._task, advance=n, rate=f"{self.done / elapsed:.1f}/s", info=text)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
