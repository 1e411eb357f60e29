"""``cnnlens drib prune-baseline``: DRIB's static pruning baselines at one MAC budget.

    cnnlens drib prune-baseline --model runs/demo --data shapes --reduction 50 --epochs 2 \\
        --out runs/demo/prune-baseline

Prunes a copy of a trained model with Torch-Pruning to the same MAC count by L1-norm filter
pruning (Li et al. 2017), network slimming (Liu et al. 2017), FPGM (He et al. 2019), Taylor
importance (Molchanov et al. 2019) and soft filter pruning (He et al. 2018), trains the
dynamic baseline FBS (Gao et al. 2019) to the same MACs per input, fine-tunes each with the
same epoch budget and writes
``baselines.md`` / ``baselines.csv`` / ``baselines.json`` (method, static or dynamic, MACs,
reduction ratio %, accuracy, CPU latency; paper 000, Tables 1-2) and each pruned model under
``OUT/<method>/model`` (loadable with :func:`cnnlens.load`; the FBS model is not saved).

The function :func:`prune_baseline` is the command; the ``drib`` sub-app
(:mod:`cnnlens.commands.drib`) registers it as ``prune-baseline``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options

GROUPS = {"both": ("l1", "slimming")}  # the two of the first release


def _methods(text: str) -> tuple[str, ...]:
    """``--method``: a comma list of methods, ``all`` or ``both`` (l1 and slimming)."""
    from ..errors import InputError
    from ..studies.drib.baseline_study import ALL_METHODS

    if text == "all":
        return ALL_METHODS
    if text in GROUPS:
        return GROUPS[text]
    chosen = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    if not chosen or any(m not in ALL_METHODS for m in chosen):
        raise InputError(
            f"--method takes a comma list of {', '.join(ALL_METHODS)}, all or both; got {text!r}"
        )
    return chosen


def _first(dataset, n: int | None, option: str):
    from ..errors import InputError

    if n is None:
        return dataset
    if not hasattr(dataset, "subset"):
        raise InputError(f"{option} needs an in-memory data set; {dataset.name} is not one")
    return dataset.subset(range(min(n, len(dataset))))


@model_options()
def prune_baseline(
    model,
    data: str = typer.Option(
        None, help="data set: shapes, digits, cifar10:/path (default: the one the model records)"
    ),
    method: str = typer.Option(
        "both",
        help="comma list of l1, slimming, fpgm, taylor, sfp (static), fbs (dynamic); all; both "
        "(l1,slimming)",
    ),
    macs: float = typer.Option(None, help="target MACs per image, in millions (e.g. 20.3)"),
    reduction: float = typer.Option(
        None, help="target MAC reduction in percent of the unpruned model (default 50)"
    ),
    epochs: int = typer.Option(1, min=0, help="fine-tune epochs after pruning, per method"),
    sparsity_epochs: int = typer.Option(
        None, min=0, help="slimming: epochs of L1-on-BN-scale training before (default --epochs)"
    ),
    lam: float = typer.Option(1e-4, "--lambda", min=0.0, help="slimming: weight of sum |gamma|"),
    lr: float = typer.Option(0.01, help="SGD learning rate of the fine-tune (cosine to 0)"),
    n_train: int = typer.Option(None, min=1, help="fine-tune on the first n training images"),
    n_test: int = typer.Option(None, min=1, help="evaluate on the first n test images"),
    ignore: str = typer.Option(
        None,
        help="comma list of layers whose output channels stay (default: the final linear "
        "layer; in a padding-shortcut ResNet every conv but each block's first)",
    ),
    latency_batch: int = typer.Option(
        64, min=0, help="time every model on this many test images (0: no timing)"
    ),
    seed: int = typer.Option(0),
    out: Path = typer.Option(..., help="output folder (tables and the pruned models)"),
) -> None:
    """Prune by each method to one MAC budget, fine-tune, time, tabulate."""
    import dataclasses

    import torch

    from ..data import check_count
    from ..errors import ConfigError, InputError
    from ..io import check_writable_folder, write_json, write_text
    from ..loading.spec import model_data
    from ..studies.drib.baseline_study import FINE_TUNE, run_baselines
    from ..studies.drib.pruned_models import save_pruned
    from ..train.config import OptimizerConfig

    methods = _methods(method)
    if macs is not None and reduction is not None:
        raise InputError("give --macs or --reduction, not both")
    if macs is None and reduction is None:
        reduction = 50.0
    if not lr > 0:
        raise ConfigError(f"--lr must be > 0, got {lr}")
    check_writable_folder(out)
    net = model.open()
    meta = getattr(net, "meta", {}) or {}
    data = data or (meta.get("extra") or {}).get("data")
    if not data:
        raise InputError(f"{model} records no data set; pass --data (shapes, cifar10:/path, ...)")
    check_count(n_train, data, "train", option="--n-train")
    check_count(n_test, data, "test", option="--n-test")
    train = model_data(net, data, "train")
    train = _first(train, n_train, "--n-train")
    test = model_data(net, data, "test")
    test = _first(test, n_test, "--n-test")
    config = dataclasses.replace(
        FINE_TUNE, optimizer=OptimizerConfig(name="sgd", lr=lr, weight_decay=5e-4), seed=seed
    )
    torch.manual_seed(seed)
    study = run_baselines(  # checks the budget and layers before it trains
        net,
        train,
        test,
        methods=methods,
        macs=None if macs is None else macs * 1e6,
        reduction=reduction,
        epochs=epochs,
        sparsity_epochs=sparsity_epochs,
        lam=lam,
        config=config,
        ignored=None if ignore is None else [n.strip() for n in ignore.split(",") if n.strip()],
        latency_batch=latency_batch or None,
    )
    for name, pruned in study.models.items():
        if name == "fbs":  # FBS layers are no architecture cnnlens.load rebuilds
            continue
        row = next(r for r in study.rows if r.method == name)
        save_pruned(
            pruned,
            out / name / "model",
            classes=meta.get("classes") or test.classes,
            mean=meta.get("mean") or test.mean,
            std=meta.get("std") or test.std,
            input_shape=test.image_shape,
            extra={"data": data, "test_accuracy": row.accuracy, "pruned": {"method": name}},
        )
    settings = {
        "model": str(model),
        "data": data,
        "n_train": len(train),
        "n_test": len(test),
        "budget_macs": study.budget,
        "lambda": lam,
        "lr": lr,
        "seed": seed,
        "latency_batch": study.latency_batch,
        "latency": "median wall-clock ms on this machine's CPU (shared: load varies)",
    }
    rows = [r.to_dict() for r in study.rows]
    write_json(out / "baselines.json", {"settings": settings, "rows": rows})
    write_text(out / "baselines.csv", study.csv())
    write_text(out / "baselines.md", study.markdown())
    typer.echo(study.markdown())
    typer.echo(f"results written to {out}")
