"""``cnnlens evaluate``: explain test images with every method and score every metric."""

from __future__ import annotations

from pathlib import Path

import typer


def parse_method_params(items: list[str]) -> dict[str, dict[str, object]]:
    """``method:key=value`` strings -> ``{method: {key: value}}`` (values as in explain)."""
    from ..errors import InputError
    from .explain import parse_params

    out: dict[str, dict[str, object]] = {}
    for item in items:
        method, sep, rest = item.partition(":")
        if not sep or not method or "=" not in rest:
            raise InputError(
                f"--param must be method:key=value (e.g. rise:n_masks=2000), got {item!r}"
            )
        out.setdefault(method.strip(), {}).update(parse_params([rest]))
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        model: Path = typer.Option(..., help="saved model folder or run folder holding model/"),
        data: str = typer.Option("shapes", help="data set (its test split is used)"),
        n: int = typer.Option(200, help="number of test images (the first n)"),
        methods: str = typer.Option("all", help="comma list of methods, or 'all' registered"),
        metrics: str = typer.Option(
            "all",
            help="comma list of metrics, or 'all' (the table: deletion, insertion, "
            "degradation_small/large, bbox_score, pointing games, randomisation, completeness); "
            "the optional max_sensitivity, infidelity and road run only when named",
        ),
        param: list[str] = typer.Option(  # noqa: B008
            [],
            help="method hyperparameter method:key=value, e.g. rise:n_masks=2000 (repeatable); "
            "iba gets layer statistics from 512 training images unless iba:statistics= is given",
        ),
        out: Path = typer.Option(..., help="output folder (resumable: finished work is kept)"),
        chunk: int = typer.Option(32, help="images per saved unit of work"),
        sanity_images: int = typer.Option(32, help="images for the randomisation check"),
        batch_size: int = typer.Option(None, help="forward batch (default: automatic)"),
        memory: str = typer.Option(
            None,
            help="memory budget of the expanded chunks of methods and metrics: bytes or a size "
            "such as 2GiB or 512MB (default: a share of the free memory)",
        ),
        seed: int = typer.Option(0),
        vae: Path = typer.Option(
            None,
            help="relabel: saved VAE folder (default: <model run folder>/vae-<data>, as "
            "written by `cnnlens train-vae`)",
        ),
    ) -> None:
        """Score explanations: metrics.csv, summary.md (mean ± 95 % CI) and curve plots in OUT."""
        from ..chunking import MEMORY
        from ..compatibility import check_fits
        from ..data import load
        from ..errors import DataError, InputError
        from ..io import check_writable_folder
        from ..metrics.evaluate import evaluate as run_evaluation
        from ..metrics.evaluate import validate
        from ..metrics.outputs import write_evaluation
        from ..params import Param, check_options
        from ..progress import log_line
        from ..workflows import iba_statistics, open_model

        # validate, then write: every input below is checked before the first file
        check_options(
            {
                "--n": (n, Param("int", min=1)),
                "--chunk": (chunk, Param("int", min=1)),
                "--sanity-images": (sanity_images, Param("int", min=0)),
                "--batch-size": (batch_size, Param("int", min=1, none=True)),
                "--memory": (memory, MEMORY),
            }
        )
        method_params = parse_method_params(param)
        chosen, _metrics, _, _ = validate(
            None,
            methods=methods,
            metrics=metrics,
            method_params=method_params,
            chunk=chunk,
            sanity_images=sanity_images,
            batch_size=batch_size,
            seed=seed,
        )
        check_writable_folder(out)
        net = open_model(model)
        test = load(data, split="test")
        if n > len(test):
            raise DataError(f"--n {n} is more than the {len(test)} test images of {data}")
        check_fits(net, test, data=data)
        validate(net, methods=chosen, metrics=metrics, method_params=method_params)
        x, _ = test.tensors(range(n))
        boxes = None if test.boxes is None else test.boxes[:n]
        masks = None if test.masks is None else test.masks[:n]
        if "relabel" in chosen:
            from ..relabel.vae_training import locate_vae

            relabel = method_params.setdefault("relabel", {})
            if "vae" not in relabel:
                try:
                    relabel["vae"] = str(locate_vae(model, data, vae))
                except InputError:
                    if methods.strip() != "all":
                        raise
                    chosen.remove("relabel")  # 'all': the methods this model can run
                    method_params.pop("relabel")
                    log_line("evaluate: relabel skipped (no VAE for this data; cnnlens train-vae)")
        if "iba" in chosen:
            iba = method_params.setdefault("iba", {})
            if "statistics" not in iba:
                layer = str(iba.get("layer", "auto"))
                _stats, path = iba_statistics(net, load(data, split="train"), layer, folder=out)
                iba["statistics"] = str(path)
        log_line(f"evaluate: {n} images of {data}, methods={methods}, metrics={metrics}")
        ev = run_evaluation(
            net,
            x,
            methods=chosen,
            metrics=metrics,
            boxes=boxes,
            masks=masks,
            method_params=method_params,
            chunk=chunk,
            sanity_images=sanity_images,
            batch_size=batch_size,
            memory=memory,
            seed=seed,
            out=out,
        )
        write_evaluation(ev, out)
        typer.echo(ev.markdown())
        typer.echo(f"results written to {out.resolve()}")
