"""``cnnlens evaluate``: explain test images with every method and score every metric."""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options


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


def _card(model) -> dict:
    """The card fields given with ``--model``, as job fields."""
    return {k: v for k, v in model.card().items() if v is not None}


def _json(params: dict) -> dict:
    """Method parameters as a job saves them: paths (a prepared statistics file, a VAE
    folder) as strings."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in params.items()}


def register(app: typer.Typer) -> None:
    @app.command()
    @model_options()
    def evaluate(
        model,
        data: str = typer.Option("shapes", help="data set (its test split is used)"),
        images: int = typer.Option(200, help="number of test images (the first N)"),
        n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
        methods: str = typer.Option("all", help="comma list of methods, or 'all' registered"),
        metrics: str = typer.Option(
            "all",
            help="comma list of metrics, or 'all' (the table: deletion, insertion, "
            "degradation-small/large, bbox-score, pointing games, randomisation, completeness); "
            "the optional max-sensitivity, infidelity and road run only when named "
            "(cnnlens.metrics.names())",
        ),
        param: list[str] = typer.Option(  # noqa: B008
            [],
            help="method hyperparameter method:key=value, e.g. rise:n_masks=2000 (repeatable); "
            "what a method needs (IBA's layer statistics, a VAE) is prepared unless given",
        ),
        out: Path = typer.Option(
            ...,
            help="output folder: the tables and plots, and the job's store in OUT/store "
            "(resumable: finished shards are kept; cnnlens serve OUT/store explores it)",
        ),
        chunk: int = typer.Option(32, help="images per shard of the job (its unit of work)"),
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
            help="saved VAE folder, for methods that take a vae (default: found by the "
            "method, e.g. <model run folder>/vae-<data> from `cnnlens train-vae`)",
        ),
        verdict: bool = typer.Option(
            False,
            "--verdict",
            help="also judge the table: verdict.json and verdict.md in OUT (95 % bootstrap "
            "intervals, each method against the random and Sobel baselines per metric family, "
            "Kendall tau between metrics) and print the recommendation",
        ),
        meta: bool = typer.Option(
            False,
            "--meta",
            help="also meta-evaluate every scored metric (MetaQuantus: resilience to minor and "
            "reactivity to disruptive model and input perturbations, IAC/IEC/MC with 95 % "
            "intervals) on the model and images: meta.json and meta.md in OUT, a table in "
            "verdict.md",
        ),
        meta_perturbations: int = typer.Option(3, help="perturbations per test of --meta"),
    ) -> None:
        """Score explanations: metrics.csv, summary.md (mean ± 95 % CI) and curve plots in OUT."""
        from ..chunking import MEMORY
        from ..errors import DataError
        from ..io import check_writable_folder, write_json, write_text
        from ..jobs import JobSpec
        from ..jobs import run as run_job
        from ..jobs.evaluation import evaluation
        from ..loading.spec import model_data
        from ..metrics.evaluate import validate
        from ..metrics.outputs import write_evaluation
        from ..params import Param, check_options
        from ..progress import log_line
        from .explain import given_files, prepare_methods
        from .renamed import renamed

        # validate, then write: every input below is checked before the first file
        n = renamed("--n", "--images", n, images, 200)
        check_options(
            {
                "--images": (n, Param("int", min=1)),
                "--chunk": (chunk, Param("int", min=1)),
                "--sanity-images": (sanity_images, Param("int", min=0)),
                "--batch-size": (batch_size, Param("int", min=1, none=True)),
                "--memory": (memory, MEMORY),
                "--meta-perturbations": (meta_perturbations, Param("int", min=1)),
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
        net = model.open()
        test = model_data(net, data, "test")
        if n > len(test):
            raise DataError(f"--images {n} is more than the {len(test)} test images of {data}")
        validate(net, methods=chosen, metrics=metrics, method_params=method_params)
        # what each method needs prepared (statistics saved once in --out, a VAE found);
        # with --methods all a method that cannot be prepared is skipped
        from ..metrics.evaluate import BASELINE_METHODS

        registered = [m for m in chosen if m not in BASELINE_METHODS]
        for name in registered:
            given_files(method_params.setdefault(name, {}), [name], vae=vae)
        prepare_methods(
            net, registered, method_params, model=model, data=data, folder=out,
            skip=methods.strip() == "all", log=lambda line: log_line(f"evaluate: {line}"),
        )  # fmt: skip
        chosen = [m for m in chosen if m in registered or m in BASELINE_METHODS]
        method_params = {m: p for m, p in method_params.items() if m in chosen and p}
        log_line(f"evaluate: {n} images of {data}, methods={methods}, metrics={metrics}")
        # the work runs as a job into OUT/store: resumable shard by shard, and the explorer
        # opens it (cnnlens serve OUT/store); the tables and plots are read back from it
        spec = JobSpec(
            model=model.spec,
            **_card(model),
            store=out / "store",
            data=data,
            split="test",
            images=n,
            methods={m: _json(method_params.get(m, {})) for m in chosen},
            metrics=metrics,
            shard_size=chunk,
            sanity_images=sanity_images,
            batch_size=batch_size,
            memory=memory,
            seed=seed,
            compile="off",
        )
        run_job(spec)
        ev = evaluation(out / "store")
        write_evaluation(ev, out)
        typer.echo(ev.markdown())
        metas = []
        if meta:
            from ..metrics import registry
            from ..metrics.meta import meta_evaluate

            x, _ = test.tensors(range(n))
            truth = test.boxes is not None or test.masks is not None
            for name in _metrics:
                needs = registry.get(name).needs
                if ("ground-truth" in needs and not truth) or "complete-method" in needs:
                    log_line(f"evaluate: --meta skips {name} (not scored for every method)")
                    continue
                metas.append(
                    meta_evaluate(
                        net, x, name, chosen, method_params=method_params, seed=seed,
                        boxes=None if test.boxes is None else test.boxes[:n],
                        masks=None if test.masks is None else test.masks[:n],
                        perturbations=meta_perturbations, batch_size=batch_size, memory=memory,
                    )
                )  # fmt: skip
                log_line(f"evaluate: meta-evaluated {name}")
            write_json(out / "meta.json", [m.to_dict() for m in metas])
            write_text(out / "meta.md", "\n".join(m.markdown() for m in metas))
            for m in metas:
                typer.echo(m.markdown())
        if verdict:
            from ..metrics.verdict import verdict as judge

            v = judge(ev, seed=seed)
            v.meta = metas
            write_json(out / "verdict.json", v.to_dict())
            write_text(out / "verdict.md", v.markdown())
            typer.echo("Verdict (verdict.md has the numbers):")
            for line in v.lines():
                typer.echo(f"- {line.replace('**', '')}")
        typer.echo(f"results written to {out.resolve()}")
