"""``cnnlens drib ...``: dynamic per-input channel gating (paper 000).

    cnnlens drib train    --data shapes --arch resnet20 --out runs/drib [--masks 4 --density 0.7]
    cnnlens drib train    --model runs/demo --data shapes --out runs/drib   (gate a trained model)
    cnnlens drib train    ... --plane [--plane-images 500]   (+ the gated net's information plane)
    cnnlens drib evaluate --run runs/drib [--parts macs,latency,credibility,usage,attribution]

``train`` trains (or reuses) the ungated model in ``OUT/base`` unless ``--model`` names one
(any model spec; the data are read as its card says: input size, mean/std, classes by name;
a copy of it is kept in ``OUT/ungated``, so the run needs nothing outside it), gates it,
trains heads and masks alternating with the backbone, fine-tunes with fixed decisions and
saves ``OUT/model`` and ``OUT/run.json`` (accuracy, dynamic MACs, reduction ratio).
``--plane`` measures the information plane of the gated network while it trains (after every
epoch of both phases, on test images) and writes ``OUT/plane.json`` and ``OUT/plane.png``
with the transition and convergence points (paper 000, Tables 3-4). It is a flag of
``train``, not a command of its own, because the trajectory exists only during the training:
a command on a finished run would have to train it again. ``evaluate`` writes
``RUN/evaluation.json`` (or ``--out``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .model_spec import model_options

drib_app = typer.Typer(
    name="drib",
    help="Dynamic channel gating (DRIB, paper 000): train gated models, count and realise the "
    "savings, check the decisions.",
    no_args_is_help=True,
)

PARTS = ("macs", "latency", "credibility", "usage", "attribution")


def _summary(evaluation: dict) -> str:
    u, g = evaluation["ungated"], evaluation["gated"]
    return (
        f"ungated: accuracy {100 * u['accuracy']:.2f} %, {u['macs'] / 1e6:.2f} M MACs | "
        f"gated: accuracy {100 * g['accuracy']:.2f} %, {g['macs'] / 1e6:.2f} M MACs (mean per "
        f"input) | reduction {evaluation['reduction_ratio']:.1f} %, accuracy change "
        f"{-evaluation['accuracy_drop_pt']:+.2f} pt on {evaluation['n_test']} test images"
    )


@drib_app.command(
    help="Gate a model and train it (heads + masks, then fixed-decision fine-tune). The "
    "decision head and the loss follow Wang et al. 2020 (dynamic pruning): paper 000 gives "
    "neither; the gated layers are cnnlens' choice."
)
@model_options(
    required=False,
    help="a model to gate instead of training --arch first (a cnnlens model or run folder, "
    "package.module:callable with --weights: your own code, imported as you would import "
    "it, so it runs that code; a model.yaml; ...)",
)
def train(
    data: str = typer.Option("shapes", help="data set: shapes, digits, cifar10:/path, ..."),
    arch: str = typer.Option("resnet20", help="architecture of the ungated model (resnet*, vgg*)"),
    model=None,
    out: Path = typer.Option(..., help="run folder: base/, model/, run.json"),
    masks: int = typer.Option(4, min=1, help="masks per gated layer (m)"),
    density: float = typer.Option(0.7, min=0.0, max=5.0, help="target mean |mask| (s)"),
    lam: float = typer.Option(0.5, "--lambda", min=0.0, help="weight of the sparsity term"),
    penalty: str = typer.Option(
        "target",
        help="target: lambda (mean|mask| - s)^2 (Wang et al. 2020's loss; paper 000 gives "
        "none); l1: lambda mean|mask|",
    ),
    epochs: int = typer.Option(4, min=1, help="epochs of the alternating gate training"),
    finetune_epochs: int = typer.Option(2, min=0, help="epochs with fixed decisions"),
    gate_lr: float = typer.Option(0.01, min=0.0, help="Adam lr of heads and masks"),
    backbone_lr: float = typer.Option(0.01, min=0.0, help="SGD lr of the backbone"),
    tau: float = typer.Option(1.0, min=0.0, help="Gumbel-softmax temperature"),
    base_epochs: int = typer.Option(
        None, min=1, help="epochs of the ungated model (no --model); default 8, 15 for VGG nets"
    ),
    n_train: int | None = typer.Option(
        None, min=1, help="train the gates on the first n training images"
    ),
    n_test: int | None = typer.Option(None, min=1, help="evaluate on the first n test images"),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(
        False, help="train over runs in --out made with other settings (else refused)"
    ),
    plane: bool = typer.Option(
        False,
        help="measure the gated network's information plane after every epoch of both "
        "phases: OUT/plane.json, OUT/plane.png, transition and convergence points",
    ),
    plane_images: int = typer.Option(500, min=2, help="--plane: test images measured"),
    plane_layers: str | None = typer.Option(
        None,
        help="--plane: comma list of layers (default: a ResNet's stages, else the last "
        "spatial layer)",
    ),
) -> None:

    from .. import nets
    from ..data import check_count
    from ..loading.spec import card_data, model_data
    from ..runs import saved_run
    from ..studies.drib.runs import check_gateable, check_gated_run, gated_run
    from ..studies.drib.training import GateRecipe
    from ..train.classifier import classifier_identity, demo_config, train_classifier

    recipe = GateRecipe(
        gate_epochs=epochs,
        finetune_epochs=finetune_epochs,
        density=density,
        lam=lam,
        penalty=penalty,
        gate_lr=gate_lr,
        backbone_lr=backbone_lr,
        finetune_lr=backbone_lr,
        tau=tau,
        seed=seed,
    )
    # validate, then write: names, sizes, the model/data fit and both run folders first
    check_count(n_train, data, "train", option="--n-train")
    check_count(n_test, data, "test", option="--n-test")
    if model is not None:
        base = model.open()
        check_gateable(base)
        train_set = model_data(base, data, "train", n=n_train)
        test = model_data(base, data, "test", n=n_test)
        base_id = model.identity()
    else:
        check_gateable(nets.create(arch))  # an untrained copy: is the architecture gateable?
        epochs_of_base = {} if base_epochs is None else {"epochs": base_epochs}
        config = demo_config(arch, seed=seed, **epochs_of_base)
        base_id = {"model": str((out / "base" / "model").resolve()), "config": config.to_dict()}
        saved_run(out / "base", classifier_identity(data, arch, config), overwrite=overwrite)
    identity = {**base_id, "data": data, "n_train": n_train, "n_test": n_test}
    plane_settings = None
    if plane:
        names = None if plane_layers is None else [n.strip() for n in plane_layers.split(",")]
        plane_settings = {"layers": names, "n": plane_images, "bins": 30, "noise_variance": 0.1}
        if names is not None:
            from ..layers import get_layer

            probe = base if model is not None else nets.create(arch)
            for name in names:
                get_layer(probe, name)  # a LayerError naming close layers
    planned = identity if plane_settings is None else {**identity, "plane": plane_settings}
    check_gated_run(out, planned, masks=masks, recipe=recipe, overwrite=overwrite)
    if model is None:
        run = train_classifier(
            data=data, arch=arch, out=out / "base", config=config, overwrite=overwrite
        )
        base, train_set = run.model, run.train
        test = run.test if n_test is None else card_data(data, "test", base, n=n_test)
        verb = "reused" if run.reused else f"trained in {run.seconds:.0f} s"
        typer.echo(f"ungated {arch}: test accuracy {100 * run.test_accuracy:.2f} % ({verb})")
    if n_train is not None and len(train_set) > n_train:
        train_set = train_set.subset(range(n_train))
    result = gated_run(
        base,
        identity=identity,
        train=train_set,
        val=None,
        test=test,
        out=out,
        masks=masks,
        recipe=recipe,
        overwrite=overwrite,
        plane=plane_settings,
        keep_base=model is not None,
    )
    verb = "reused" if result.reused else f"trained in {result.seconds:.0f} s"
    typer.echo(f"gated model {verb}; saved in {out / 'model'}")
    typer.echo(_summary(result.evaluation))
    if result.plane is not None:
        _write_plane(out, result.plane)


def _write_plane(out: Path, plane: dict) -> None:
    """``OUT/plane.png`` from ``OUT/plane.json``'s content, and its key points printed."""
    from ..io import write_bytes
    from ..plotting import to_png
    from ..report.information_plane_plot import information_plane_plot

    write_bytes(out / "plane.png", to_png(information_plane_plot(plane)))  # to_png closes it
    for p in plane["key_points"]:
        typer.echo(
            f"{p['layer']} {p['estimator']}: {p['point']} at epoch {p['epoch']} ({p['phase']}), "
            f"I(X;Z) {p['ixz']:.3f}, I(Z;Y) {p['izy']:.3f} bits, accuracy "
            f"{100 * p['accuracy']:.1f} %"
        )
    typer.echo(f"information plane written to {out / 'plane.json'} and {out / 'plane.png'}")


@drib_app.command(help="Measure a gated run: MACs, latency, credibility, usage, Table 5.")
def evaluate(
    run: Path = typer.Option(..., help="run folder written by 'cnnlens drib train'"),
    data: str | None = typer.Option(None, help="data set to evaluate on (default: the run's)"),
    parts: str = typer.Option(",".join(PARTS), help=f"comma list of {', '.join(PARTS)}"),
    n_test: int | None = typer.Option(None, min=1, help="use the first n test images"),
    quick: bool = typer.Option(False, help="small settings (fewer images, IBA steps, repeats)"),
    out: Path | None = typer.Option(None, help="folder for evaluation.json (default: RUN)"),
) -> None:
    from ..data import check_count
    from ..errors import CheckpointError, InputError
    from ..io import check_writable_folder, write_json
    from ..loading.spec import card_data, model_data
    from ..studies.drib.runs import load_gated, load_ungated
    from ..studies.drib.study import FULL, QUICK, study

    chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        raise InputError(f"--parts takes a comma list of {', '.join(PARTS)}; got {parts!r}")
    folder = check_writable_folder(out or run)
    identity = _run_identity(run)
    spec = data or identity.get("data", "shapes")
    if not isinstance(spec, str):
        raise CheckpointError(f"{run / 'run.json'}: its data is not a data set name: {spec!r}")
    check_count(n_test, spec, "test", option="--n-test")
    gated = load_gated(run / "model")
    base = load_ungated(run, identity)
    # read as the gated model's card says (the base's, recorded at training)
    test = model_data(gated, spec, "test", n=n_test)
    model_data(base, spec, "test", n=1)
    train_set = card_data(spec, "train", gated, n=256)  # IBA's layer statistics read <= 256
    result = study(base, gated, train_set, test, settings=QUICK if quick else FULL, parts=chosen)
    result["measured_on"] = {"run": str(run.resolve()), "data": spec, "n_test": n_test}
    result = _merged(folder / "evaluation.json", result)
    path = write_json(folder / "evaluation.json", result)
    if "macs" in result:
        typer.echo(_summary(result["macs"]))
    for row in result.get("latency", []):
        cells = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "batch")
        typer.echo(f"latency at batch {row['batch']}: {cells}")
    if "credibility" in result:
        o = result["credibility"]["overall"]
        typer.echo(
            f"credibility {100 * o['credibility']:.1f} % (chance {100 * o['chance']:.1f} %), "
            f"kept channels carry {100 * o['kept_bits']:.1f} % of the bits"
        )
    for row in result.get("attribution", []):  # the method first (a merged file's keys are sorted)
        cells = [f"{k}: {v:.3f}" for k, v in row.items() if k != "method"]
        typer.echo("  ".join([str(row.get("method", "")), *cells]))
    typer.echo(f"written {path}")


def _run_identity(run: Path) -> dict:
    """The identity recorded in ``run/run.json`` of 'cnnlens drib train'; a missing or
    unreadable record is a CheckpointError naming the file."""
    from ..errors import CheckpointError

    run_file = run / "run.json"
    if not run_file.is_file():
        raise CheckpointError(f"no run.json in {run}; expected a folder of 'cnnlens drib train'")
    try:
        saved = json.loads(run_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{run_file} is not a readable run record: {exc}") from None
    identity = saved.get("identity") if isinstance(saved, dict) else None
    if not isinstance(identity, dict):
        raise CheckpointError(f"{run_file} records no identity; expected 'cnnlens drib train'")
    return identity


def _merged(path: Path, result: dict) -> dict:
    """``result`` plus the parts an earlier ``evaluation.json`` at ``path`` holds and this
    call did not measure, where both measured the same run, data, test images and settings.
    An earlier file measured otherwise is kept beside it as ``evaluation.previous.json``
    (``evaluation.previous-2.json``, ... when that name is taken: none is overwritten)."""
    if not path.is_file():
        return result
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = None
    same = isinstance(earlier, dict) and all(
        earlier.get(key) == result[key] for key in ("measured_on", "settings")
    )
    if not same:
        previous, k = path.with_name("evaluation.previous.json"), 1
        while previous.exists():
            k += 1
            previous = path.with_name(f"evaluation.previous-{k}.json")
        path.replace(previous)
        typer.echo(f"{path.name} measured another run, data or settings; kept as {previous}")
        return result
    merged = {**{k: v for k, v in earlier.items() if k in PARTS}, **result}
    merged["seconds"] = {**earlier.get("seconds", {}), **result["seconds"]}
    return merged


def register(app: typer.Typer) -> None:
    from .drib_baseline import prune_baseline

    drib_app.command(
        "prune-baseline",
        help="Pruning baselines at one MAC budget (paper 000): L1, slimming, FPGM, Taylor "
        "(static), FBS (dynamic); MACs, accuracy, CPU latency.",
    )(prune_baseline)
    app.add_typer(drib_app)
