"""``cnnlens attributes ...``: the human-predictable attribute network of paper 003.

    cnnlens attributes train          --data shapes --out runs/attr [--epochs 3 --size 16 --resume]
    cnnlens attributes prune          --run runs/attr [--prefer lower --seeds 3]
    cnnlens attributes robustness     --run runs/attr [--transforms 1:0,2:0,4:0.2]
    cnnlens attributes predictability --run runs/attr

``train`` trains (or reuses) the network on the data set's attributes and writes the reading of
its channels (``roles.json``: mask means, top channels, attribute and channel correlations;
``mask_grid.png``, ``top_masks.png``, ``channel_correlation.png``; ``correlations.md``);
the others read that run folder and write their JSON under ``RUN/<subcommand>`` (or ``--out``).
"""

from __future__ import annotations

from pathlib import Path

import typer

attributes_app = typer.Typer(
    name="attributes",
    help="The multi-attribute channel-attention network of paper 003: train, semantic pruning, "
    "mask transformation under noise, measured predictability.",
    no_args_is_help=True,
)

RUN_HELP = "run folder written by 'cnnlens attributes train'"


def _out(out: Path | None, run: Path, name: str) -> Path:
    from ..io import check_writable_folder

    return check_writable_folder(out or (run / name))


N_HELP = "test images, the first N (default 500, or all where fewer)"


def _test_images(n: int | None, test, *, default: int = 500) -> int:
    """``--n``: given, at most the run's test images; else ``default`` or all where fewer."""
    from ..data import check_subset

    check_subset(n, test, option="--images")
    return min(default, len(test)) if n is None else n


def _own_plain_cache(folder: Path) -> bool:
    """Whether ``folder`` holds a plain baseline this command trained (its own cache, retrained
    when the run's settings changed); anything else there is refused, not overwritten."""
    import json

    try:
        return json.loads((folder / "run.json").read_text())["identity"]["kind"] == "plain"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_figure(path: Path, fig) -> None:
    from ..io import write_bytes
    from ..plotting import plt, to_png

    write_bytes(path, to_png(fig))
    plt.close(fig)


def _write_role_figures(out: Path, run, roles) -> None:
    """mask_grid.png (Fig. 5), top_masks.png (Fig. 4, two test images), channel_correlation.png."""
    import torch

    from ..report.attribute_figures import channel_correlation_plot, mask_grid_plot, top_mask_grid
    from ..studies.channel_roles.reading import channel_masks

    names = roles.attribute_names_
    _write_figure(out / "mask_grid.png", mask_grid_plot(roles.mask_means_.numpy(), names))
    x, _ = run.test.tensors(range(min(2, len(run.test))))
    top = roles.top_channels_
    masks = torch.stack([channel_masks(run.model, x, k, top[k]) for k in range(len(names))])
    figure = top_mask_grid(run.test.denormalize(x), masks, names, top)
    _write_figure(out / "top_masks.png", figure)
    correlation = roles.channel_correlation_.numpy()
    _write_figure(out / "channel_correlation.png", channel_correlation_plot(correlation))


def _floats(text: str, option: str) -> list[float]:
    from ..errors import InputError

    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{option} must be a comma list of numbers, got {text!r}") from None


def parse_transforms(text: str) -> list[tuple[float, float]]:
    """``"1:0,2:0.2"`` -> ``[(1.0, 0.0), (2.0, 0.2)]``, each checked (n > 0, 0 <= beta < 1)."""
    from ..errors import InputError
    from ..studies.channel_roles.transform import check_parameters

    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            n, beta = (float(p) for p in parts)
        except ValueError:
            raise InputError(
                f"--transforms takes n:beta pairs like 1:0,2:0.2; got {item.strip()!r}"
            ) from None
        check_parameters(n, beta)
        pairs.append((n, beta))
    return pairs


@attributes_app.command(help="Train (or reuse) the attribute network; write its channel roles.")
def train(
    data: str = typer.Option("shapes", help="a data set with attributes (shapes, celeba:/path)"),
    out: Path = typer.Option(..., help="run folder (model/, run.json, roles.json)"),
    size: int = typer.Option(16, min=8, help="image size (the extractor never downsamples)"),
    n_train: int = typer.Option(
        None, min=1, help="training images, the first n (default 2500, or all where fewer)"
    ),
    n_test: int = typer.Option(
        None, min=1, help="test images, the first N (default 1000, or all where fewer)"
    ),
    epochs: int = typer.Option(3, min=1),
    lam: float = typer.Option(1e-5, "--lambda", min=0.0, help="weight of ||M||_1 (Eq. 10)"),
    reduction: str = typer.Option("sum", help="||M||_1 reduction: sum (per image) or mean"),
    plain: bool = typer.Option(False, help="train the plain multi-label CNN baseline instead"),
    seed: int = typer.Option(0),
    resume: bool = typer.Option(False, help="continue a killed training from its last epoch"),
    overwrite: bool = typer.Option(
        False, help="train over a run in --out made with other settings (else refused)"
    ),
) -> None:
    from ..data import split_size
    from ..io import write_json, write_text
    from ..studies.channel_roles.reading import ChannelRoles
    from ..studies.channel_roles.study import construction_check, correlation_table
    from ..studies.channel_roles.training import SHAPES_RECIPE, attribute_run

    def default(n: int | None, split: str) -> int:  # the recipe's size, or all where fewer
        return (
            min(SHAPES_RECIPE[f"n_{split}"], split_size(data, split, size=size)) if n is None else n
        )

    run = attribute_run(  # checks every setting before it writes a file
        data=data,
        out=out,
        size=size,
        n_train=default(n_train, "train"),
        n_test=default(n_test, "test"),
        epochs=epochs,
        lam=lam,
        reduction=reduction,
        seed=seed,
        kind="plain" if plain else "attention",
        resume=resume,
        overwrite=overwrite,
    )
    typer.echo(
        f"{'reused' if run.reused else 'trained'}: mean attribute accuracy "
        f"{100 * run.mean_accuracy:.1f}% on {len(run.test)} test images"
    )
    typer.echo(", ".join(f"{k} {100 * v:.1f}" for k, v in run.accuracy.items()))
    if not plain:
        roles = ChannelRoles(n=1000).fit(run.model, run.train)
        write_json(
            out / "roles.json",
            {
                **roles.to_dict(),
                "construction_check": construction_check(
                    roles.attribute_names_, roles.attribute_correlation_
                ),
            },
        )
        _write_role_figures(out, run, roles)
        table = correlation_table(roles)
        write_text(out / "correlations.md", table + "\n")
        typer.echo(table)
    typer.echo(f"results written to {out}")


@attributes_app.command(help="Semantic channel pruning against random and lowest-L1 pruning.")
def prune(
    run: Path = typer.Option(..., help=RUN_HELP),
    prefer: str = typer.Option("lower", help="prune the pair's channel with the lower|higher L1"),
    seeds: int = typer.Option(3, min=1, help="random-pruning seeds"),
    fractions: str = typer.Option("0.25,0.5,0.75", help="pruned shares of the channels"),
    images: int = typer.Option(None, min=1, help=N_HELP),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    save: float = typer.Option(
        None, help="also save the semantically pruned network at this share, in (0, 1)"
    ),
    out: Path = typer.Option(None, help="output folder (default RUN/prune)"),
) -> None:
    import cnnlens

    from ..errors import InputError
    from ..io import write_json, write_text
    from ..studies.channel_roles.pruning import PREFER
    from ..studies.channel_roles.runs import open_run
    from ..studies.channel_roles.study import counts_for, pruning_study, pruning_table
    from ..studies.channel_roles.training import save_attribute_network
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)

    if prefer not in PREFER:
        raise InputError(f"--prefer must be one of {PREFER}, got {prefer!r}")
    shares = _floats(fractions, "--fractions")
    counts_for(128, shares)  # checks the shares before any work
    if save is not None:
        counts_for(128, [save])
    folder = _out(out, run, "prune")
    trained = open_run(run)
    n = _test_images(n, trained.test)
    model = trained.model
    curves, pruner = pruning_study(
        model,
        trained.train,
        trained.test,
        prefer=prefer,
        seeds=range(seeds),
        fractions=shares,
        n_eval=n,
    )
    c = model.feature_channels
    shape = tuple(trained.test.image_shape)
    macs = {
        m: cnnlens.macs(pruner.transform(model, m), shape).total_m
        for m in curves[next(iter(curves))].counts
    }
    write_json(
        folder / "pruning.json",
        {
            "prefer": prefer,
            "order": pruner.order_,
            "curves": {k: v.to_dict() for k, v in curves.items()},
            "macs_m": macs,
        },
    )
    table = pruning_table(curves, c)
    write_text(folder / "pruning.md", table + "\n")
    from ..report.attribute_figures import pruning_plot

    _write_figure(
        folder / "pruning.png", pruning_plot({k: v.to_dict() for k, v in curves.items()}, c)
    )
    typer.echo(table)
    typer.echo(
        "MACs (M) by pruned channels: " + ", ".join(f"{m}: {v:.1f}" for m, v in macs.items())
    )
    if save is not None:
        count = counts_for(c, [save])[1]
        save_attribute_network(pruner.transform(model, count), folder / "model", trained.train)
    typer.echo(f"results written to {folder}")


@attributes_app.command(help="Accuracy under input noise for a grid of mask transformations.")
def robustness(
    run: Path = typer.Option(..., help=RUN_HELP),
    transforms: str = typer.Option(
        "1:0,2:0,4:0,2:0.2,4:0.2,4:0.5", help="n:beta pairs of g(M; n, beta) (1:0 = none)"
    ),
    stds: str = typer.Option("0,0.1,0.2,0.3,0.4,0.5", help="noise std, share of the [0,1] range"),
    images: int = typer.Option(None, min=1, help=N_HELP),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="output folder (default RUN/robustness)"),
) -> None:
    from ..io import write_bytes, write_json, write_text
    from ..plotting import to_png
    from ..report.attribute_figures import robustness_plot
    from ..studies.channel_roles.robustness import robustness_grid
    from ..studies.channel_roles.runs import open_run
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)

    grid_transforms = parse_transforms(transforms)
    noise = _floats(stds, "--stds")
    folder = _out(out, run, "robustness")
    trained = open_run(run)
    n = _test_images(n, trained.test)
    grid = robustness_grid(
        trained.model, trained.test, stds=noise, transforms=grid_transforms, n=n, seed=seed
    )
    write_json(folder / "robustness.json", grid.to_dict())
    write_text(folder / "robustness.md", grid.table() + "\n")
    write_bytes(folder / "robustness.png", to_png(robustness_plot(grid.to_dict())))
    typer.echo(grid.table())
    typer.echo(f"results written to {folder}")


@attributes_app.command(help="Measured predictability: attention network vs plain CNN.")
def predictability(
    run: Path = typer.Option(..., help=RUN_HELP),
    repeats: int = typer.Option(4, min=1, help="edits per size and family"),
    sizes: str = typer.Option("8,16,32,64", help="channels per edit, each in [1, channels)"),
    images: int = typer.Option(
        None, min=3, help="test images, the first N (default 300, or all where fewer)"
    ),
    n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="output folder (default RUN/predictability)"),
) -> None:
    from ..io import write_json
    from ..studies.channel_roles.predictability import (
        attention_predictability,
        check_edit_sizes,
        paired_difference,
        plain_predictability,
    )
    from ..studies.channel_roles.runs import open_run
    from ..studies.channel_roles.training import attribute_run
    from .decompose import _ints
    from .renamed import renamed

    n = renamed("--n", "--images", n, images, None)
    edit_sizes = _ints(sizes, "--sizes")
    folder = _out(out, run, "predictability")
    trained = open_run(run)
    check_edit_sizes(edit_sizes, trained.model.feature_channels)
    n = _test_images(n, trained.test, default=300)
    ident = trained.identity
    config = ident["config"]
    plain = attribute_run(  # the baseline of this run, kept in RUN/plain: retrained if stale
        data=ident["data"],
        out=run / "plain",
        size=ident["size"],
        n_train=ident["n_train"],
        n_test=ident["n_test"],
        epochs=config["epochs"],
        seed=config["seed"],
        kind="plain",
        overwrite=_own_plain_cache(run / "plain"),
    )
    options = {"sizes": edit_sizes, "repeats": repeats, "n": n, "seed": seed}
    att = attention_predictability(trained.model, trained.test, **options)
    pla = plain_predictability(plain.model, plain.test, **options)
    families = {None: "all", **{f: f for f in sorted(set(att.family))}}
    difference = {
        name: paired_difference(att, pla, family, seed=seed) for family, name in families.items()
    }
    scores = {"attention network": att.to_dict(), "plain CNN": pla.to_dict()}  # bootstraps once
    result = {
        "attention": {**scores["attention network"], "mean_accuracy": trained.mean_accuracy},
        "plain": {**scores["plain CNN"], "mean_accuracy": plain.mean_accuracy},
        "attention_minus_plain": difference,
        "protocol": {**options, "interval": "95 % percentile bootstrap over the points, 1000"},
    }
    write_json(folder / "predictability.json", result)
    for name, d in scores.items():
        fam = ", ".join(
            f"{f} {v:+.3f} [{lo:+.2f}, {hi:+.2f}] on {d['points_by_family'][f]} points"
            for (f, v), (lo, hi) in zip(
                d["score_by_family"].items(), d["interval_by_family"].values(), strict=True
            )
        )
        lo, hi = d["interval"]
        typer.echo(
            f"{name}: predictability {d['score']:+.3f} [{lo:+.2f}, {hi:+.2f}] "
            f"(Spearman, 95 % bootstrap; {fam})"
        )
        for other, reading in d["other_predictors"].items():
            typer.echo(f"  predicted from {other}: {reading['score']:+.3f}")
    for name, d in difference.items():
        lo, hi = d["interval"]
        typer.echo(
            f"attention - plain ({name} points): {d['difference']:+.3f} [{lo:+.2f}, {hi:+.2f}]"
        )
    typer.echo(f"results written to {folder}")


def register(app: typer.Typer) -> None:
    app.add_typer(attributes_app)
