"""Rows of results (lists of dicts) as CSV and markdown text, for files and reports."""

from __future__ import annotations

import csv
import io


def _fmt(value, floatfmt: str) -> str:
    return floatfmt.format(value) if isinstance(value, float) else str(value)


def to_csv(rows: list[dict]) -> str:
    """CSV text with the first row's keys as the header."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_markdown(rows: list[dict], *, floatfmt: str = "{:.4f}") -> str:
    """A GitHub-style markdown table."""
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, ""), floatfmt) for c in cols) + " |")
    return "\n".join(lines) + "\n"
