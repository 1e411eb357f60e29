"""The demo job behind ``make demo``: everything on offline data, on a laptop CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .progress import log_line
from .report import ReportContext, build_report
from .train.classifier import DEMO_CONFIG, train_classifier

QUICK_SIZES = {"n_train": 2000, "n_test": 500}
# The VAE of re-label distillation (report section "Re-label distillation"): 20 epochs
# of the 10,000 training images at width 32, as `cnnlens train-vae` trains by default
# (quick: 2 of 1,000, a VAE of width 8), saved in out/vae-shapes and reused by a second run.
DEMO_VAE_EPOCHS = 20


def demo_vae(out: Path, *, quick: bool, seed: int = 0):
    """Train (or reuse) the demo's VAE on ``shapes`` in ``out/vae-shapes``."""
    from .studies.relabel import QUICK_VAE, VAE_CONFIG, train_vae, vae_folder
    from .studies.relabel.vae_training import DEFAULT_WIDTH

    config = dataclasses.replace(VAE_CONFIG, epochs=DEMO_VAE_EPOCHS, seed=seed)
    options, width = {}, DEFAULT_WIDTH
    if quick:
        config = dataclasses.replace(config, epochs=QUICK_VAE["epochs"])
        options, width = {"n": QUICK_VAE["n_train"]}, QUICK_VAE["width"]
    run = train_vae(
        "shapes",
        out=vae_folder(out, "shapes"),
        config=config,
        width=width,
        data_options=options,
        overwrite=True,  # the demo's own folder: a quick run's VAE makes way for the full one
    )
    state = "reused" if run.reused else f"trained in {run.seconds:.0f} s"
    log_line(
        f"demo: VAE for re-label distillation {state}; reconstruction MSE {run.quality['mse']:.3f}"
    )
    return run


def run_demo(
    *, out: str | Path = "runs/demo", quick: bool = False, epochs: int | None = None, seed: int = 0
) -> Path:
    """Train (or reuse) ResNet-20 on ``shapes`` in ``out`` and write ``out/report.html``.

    A second ResNet-20 trained the same way with seed ``seed + 1`` (in
    ``out/seed<k>``, also reused) lets the report compare layers across training
    runs. ``quick`` trains on 2,000 images for 2 epochs (batch 64) and reports on
    500 test images: a smoke test of the whole pipeline, not a good model.
    """
    out = Path(out)
    config = dataclasses.replace(DEMO_CONFIG, seed=seed)
    if quick:
        config = dataclasses.replace(config, epochs=2, batch_size=64)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    options = {"n": QUICK_SIZES["n_train"]} if quick else {}
    log_line(f"demo: ResNet-20 on shapes, {config.epochs} epochs, output in {out}")
    run = train_classifier(
        data="shapes",
        arch="resnet20",
        out=out,
        config=config,
        data_options=options,
        overwrite=True,  # the demo's own folder: `--quick` then the full demo retrains
    )
    test = run.test
    if quick:
        test = test.subset(range(min(QUICK_SIZES["n_test"], len(test))))
    state = "reused the saved model" if run.reused else f"trained in {run.seconds:.0f} s"
    log_line(f"demo: {state}; test accuracy {100 * run.test_accuracy:.2f} %")
    other_seed = seed + 1
    other = train_classifier(
        data="shapes",
        arch="resnet20",
        out=out / f"seed{other_seed}",
        config=dataclasses.replace(config, seed=other_seed),
        data_options=options,
        overwrite=True,
    )
    state = "reused" if other.reused else f"trained in {other.seconds:.0f} s"
    log_line(
        f"demo: seed-{other_seed} model {state}; test accuracy {100 * other.test_accuracy:.2f} %"
    )
    vae_run = demo_vae(out, quick=quick, seed=seed)
    attributes = train_attribute_demo(out / "attributes", quick=quick, seed=seed)
    drib = demo_drib(out, run, quick=quick, seed=seed)
    ctx = ReportContext(
        model=run.model,
        train=run.train,
        val=run.val,
        test=test,
        out=out,
        history=run.history,
        title="cnnlens demo: ResNet-20 on shapes",
        options={
            "quick": quick,
            "vae": vae_run.vae,
            "vae_run": vae_run,
            "attributes_run": attributes,
            "drib_run": drib,
            "drib_base": run.model,
            "drib_baselines": True,  # pruning baselines + information plane (paper 000)
        },
        other_seeds={str(other_seed): other.model},
    )
    return build_report(ctx, out / "report.html")


def train_attribute_demo(folder: Path, *, quick: bool, seed: int = 0) -> Path:
    """Train (or reuse) paper 003's attribute network on ``shapes`` attributes in ``folder``
    for the report's "Channel roles and pruning" section; returns ``folder``."""
    from .studies.channel_roles.training import QUICK_RECIPE, SHAPES_RECIPE, attribute_run

    recipe = QUICK_RECIPE if quick else SHAPES_RECIPE
    run = attribute_run(data="shapes", out=folder, seed=seed, overwrite=True, **recipe)
    state = "reused" if run.reused else f"trained in {run.seconds:.0f} s"
    log_line(
        f"demo: attribute network {state}; mean attribute accuracy {100 * run.mean_accuracy:.1f} %"
    )
    return folder


# Dynamic channel gating (report section "Dynamic channel gating"): the demo's trained
# ResNet-20 is gated, its heads and masks trained alternating with the backbone on the first
# n training images, then fine-tuned with fixed decisions; saved in out/drib and reused.
DEMO_DRIB = {"n_train": 3000, "gate_epochs": 2, "finetune_epochs": 2}
QUICK_DRIB = {"n_train": 300, "gate_epochs": 1, "finetune_epochs": 0}


def demo_drib(out: Path, run, *, quick: bool, seed: int = 0):
    """Gate (or reuse) the demo's ResNet-20 in ``out/drib``; returns the GatedRun."""
    from .checkpoint import read_meta
    from .studies.drib.runs import gated_run
    from .studies.drib.training import DEMO_RECIPE

    sizes = QUICK_DRIB if quick else DEMO_DRIB
    recipe = dataclasses.replace(
        DEMO_RECIPE,
        gate_epochs=sizes["gate_epochs"],
        finetune_epochs=sizes["finetune_epochs"],
        seed=seed,
    )
    train = run.train.subset(range(min(sizes["n_train"], len(run.train))))
    identity = {"base_sha256": read_meta(out / "model").get("sha256"), "n_train": len(train)}
    test = run.test.subset(range(min(QUICK_SIZES["n_test"], len(run.test)))) if quick else run.test
    gated = gated_run(
        run.model,
        identity=identity,
        train=train,
        val=None,
        test=test,
        out=out / "drib",
        masks=4,
        recipe=recipe,
        overwrite=True,
    )
    ev = gated.evaluation
    state = "reused" if gated.reused else f"trained in {gated.seconds:.0f} s"
    log_line(
        f"demo: gated ResNet-20 {state}; accuracy {100 * ev['gated']['accuracy']:.2f} %, "
        f"MAC reduction {ev['reduction_ratio']:.1f} %"
    )
    return gated
