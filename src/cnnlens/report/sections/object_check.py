"""Report section "Does the model look at the object?": accuracy on the test
images with the object removed (background and distractors only).

On ``shapes`` the background carries no class information by construction,
so a model that uses the object falls to chance (1 / number of classes)."""

from __future__ import annotations

from .. import ReportContext, section, table_html


@section("object-check", "Does the model look at the object?", order=25)
def object_check(ctx: ReportContext) -> str | None:
    remove = getattr(ctx.test, "without_object", None)
    if remove is None:
        return None
    from ...train import evaluate

    with_object = evaluate(ctx.model, ctx.test)["accuracy"]
    without = evaluate(ctx.model, remove())["accuracy"]
    chance = 1 / len(ctx.test.classes)
    rows = [
        {"test images": "with the object", "accuracy": f"{100 * with_object:.2f} %"},
        {"test images": "object removed", "accuracy": f"{100 * without:.2f} %"},
        {"test images": "chance", "accuracy": f"{100 * chance:.2f} %"},
    ]
    return (
        "<p>The same test images drawn without their object. The background is "
        "independent of the class, so accuracy near chance means the model's "
        "decision rests on the object.</p>" + table_html(rows)
    )
