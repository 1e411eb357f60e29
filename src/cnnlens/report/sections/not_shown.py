"""Report section "Not shown": the sections (or parts of one) a report leaves out, one line
each with the reason (the data has no masks, the model has no gated run, ...).

Reads ``ReportContext.options["not-shown"]``: ``[(what, why), ...]``, written by whoever
builds the context (``cnnlens report`` decides it from the model and the data before any
work); absent or empty, the section is not shown.
"""

from __future__ import annotations

import html

from .. import ReportContext, section


@section("not-shown", "Not shown", order=99)
def not_shown(ctx: ReportContext) -> str | None:
    left_out = ctx.options.get("not-shown") or []
    if not left_out:
        return None
    items = "".join(
        f"<li><b>{html.escape(what)}</b>: {html.escape(why)}</li>" for what, why in left_out
    )
    return f"<p>Left out of this report, and why:</p><ul>{items}</ul>"
