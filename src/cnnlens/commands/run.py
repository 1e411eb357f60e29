"""``cnnlens run job.yaml``: a dataset-scale explain + evaluate job into a resumable store."""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options


def register(app: typer.Typer) -> None:
    @app.command()
    @model_options(required=False)
    def run(
        job: Path = typer.Argument(None, help="job.yaml (its fields; flags given override them)"),
        model=None,
        data: str = typer.Option(None, help="data set name as cnnlens.data.load reads it"),
        split: str = typer.Option(None, help="split of the data set (default test)"),
        images: int = typer.Option(None, min=1, help="the first n images (default: all)"),
        methods: str = typer.Option(None, help="comma list of methods (default saliency)"),
        param: list[str] = typer.Option(  # noqa: B008
            [], help="method parameter method:key=value, e.g. rise:n_masks=2000 (repeatable)"
        ),
        metrics: str = typer.Option(None, help="comma list of metrics, or 'all' (default)"),
        metric_param: list[str] = typer.Option(  # noqa: B008
            [], help="metric setting metric:key=value, e.g. deletion:step=32 (repeatable)"
        ),
        batch_size: int = typer.Option(None, min=1, help="forward batch (default: automatic)"),
        memory: str = typer.Option(
            None, help="memory budget of expanded chunks: bytes or e.g. 2GiB (default: automatic)"
        ),
        shard_size: int = typer.Option(None, min=1, help="images per shard (default 32)"),
        store: Path = typer.Option(None, help="output store folder (resumed when it exists)"),
        engine: str = typer.Option(None, help="local (default) or ray"),
        workers: int = typer.Option(None, min=1, help="worker processes / Ray actors"),
        threads: int = typer.Option(None, min=1, help="torch threads per worker"),
        address: str = typer.Option(None, help="ray: auto or ray://host:port"),
        dtype: str = typer.Option(None, help="maps stored as float32 (default) or float16"),
        compile: str = typer.Option(None, help="auto (default), on or off: torch.compile"),
        seed: int = typer.Option(None),
        sanity_images: int = typer.Option(None, min=0, help="images for the randomisation check"),
        new_store: bool = typer.Option(
            False, "--new-store", help="replace a store that holds another job's results"
        ),
    ) -> None:
        """Explain and score a whole data set into a store (Zarr maps, Parquet tables)."""
        from ..errors import ConfigError, InputError
        from ..jobs import JobSpec
        from ..jobs import run as run_job
        from .evaluate import parse_method_params

        flags = {
            "model": None if model is None else model.spec,
            **({} if model is None else model.card()),
            "data": data,
            "split": split,
            "images": images,
            "metrics": metrics,
            "shard_size": shard_size,
            "store": store,
            "engine": engine,
            "workers": workers,
            "threads": threads,
            "address": address,
            "dtype": dtype,
            "compile": compile,
            "seed": seed,
            "sanity_images": sanity_images,
            "batch_size": batch_size,
            "memory": memory,
        }
        if metric_param:
            flags["metric_params"] = parse_method_params(metric_param)
        if new_store:
            flags["new_store"] = True
        params = parse_method_params(param)
        if job is not None:
            spec = JobSpec.from_yaml(job, **{k: v for k, v in flags.items() if v is not None})
        else:
            spec = JobSpec.from_dict({k: v for k, v in flags.items() if v is not None}, where="run")
        if methods is not None:
            spec.methods = {m.strip(): {} for m in methods.split(",") if m.strip()}
        if params:
            if isinstance(spec.methods, list | tuple | str):
                names = spec.methods.split(",") if isinstance(spec.methods, str) else spec.methods
                spec.methods = {str(m).strip(): {} for m in names}
            stray = sorted(set(params) - set(spec.methods))
            if stray:
                raise InputError(f"--param names methods the job does not run: {', '.join(stray)}")
            for name, values in params.items():
                given = spec.methods[name] or {}
                if not isinstance(given, dict):
                    raise ConfigError(
                        f"methods: {name}'s parameters must be a mapping of name: value, "
                        f"got {given!r}"
                    )
                spec.methods[name] = {**given, **values}
        result = run_job(spec)
        typer.echo(result.markdown())
        typer.echo(
            f"{len(result.ran)} shard(s) run, {len(result.skipped)} finished before; "
            f"{result.seconds:.1f} s; store {result.store.resolve()}"
        )
