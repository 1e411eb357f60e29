"""``cnnlens decompose`` and ``cnnlens decompose-depth``: paper 002 from the shell.

``decompose`` finds a saved model's class-specific influential features,
scores the decomposed final layer (r_A, k1/k2 sweep, noise ablation, in-mask
energy, class overlap, optional retraining) and writes JSON, CSV, markdown
and PNG files. ``decompose-depth`` trains (or reuses) ResNets of several
depths and plots r_A against depth.
"""

from __future__ import annotations

from pathlib import Path

import typer

from .model_spec import model_options, out_folder


def _ints(text: str, what: str) -> list[int]:
    from ..errors import InputError

    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise InputError(f"{what} must be a comma list of integers, got {text!r}") from None
    if not values:
        raise InputError(f"{what} must name at least one integer, got {text!r}")
    return values


def _save_rows(out: Path, stem: str, rows: list[dict]) -> None:
    from ..analysis.tables import to_csv, to_markdown
    from ..io import write_json, write_text

    write_json(out / f"{stem}.json", rows)
    write_text(out / f"{stem}.csv", to_csv(rows))
    write_text(out / f"{stem}.md", to_markdown(rows))


def _save_fig(path: Path, fig) -> None:
    from ..io import write_bytes
    from ..plotting import to_png

    write_bytes(path, to_png(fig))


PAPER = '"Decomposing the Deep: Finding Class Specific Filters in Deep CNNs" (Badola et al.)'


def register(app: typer.Typer) -> None:
    @app.command(
        help="Find class-specific influential features and decompose the final layer.\n\n"
        f"The method of {PAPER}."
    )
    @model_options()
    def decompose(
        model,
        data: str = typer.Option("shapes", help="data set the model was trained on"),
        k1: str = typer.Option(
            "5",
            help="top features kept per image, or 'coverage': the smallest k1 whose top "
            "features hold --coverage of an image's l1 mass on average (paper 002, sec. 4.4)",
        ),
        k2: int = typer.Option(
            5, help="influential features kept per class (may exceed k1; see the README)"
        ),
        coverage: float = typer.Option(0.9, help="share of the l1 mass for --k1 coverage"),
        by: str = typer.Option("label", help="group training images by 'label' or 'predicted'"),
        sweep_k: str = typer.Option(
            None, help="k values of the k1/k2 sweep (default 1,2,3,5,8,10,15,20 up to m)"
        ),
        seeds: int = typer.Option(3, min=1, help="noise-ablation seeds"),
        retrain: int = typer.Option(0, min=0, help="epochs of retraining the decomposed head"),
        retrain_whole: bool = typer.Option(False, help="retrain the whole network, not the head"),
        out: Path = typer.Option(None, help="output folder (default MODEL/decompose)"),
    ) -> None:
        """Find class-specific influential features and decompose the final layer."""
        from ..errors import InputError
        from ..io import check_writable_folder
        from ..studies.decompose import InfluentialFeatures, run_decompose

        ks = None if sweep_k is None else _ints(sweep_k, "--sweep-k")
        try:
            k1_value = k1 if k1 == "coverage" else int(k1)
        except ValueError:
            raise InputError(f"--k1 must be an integer or 'coverage', got {k1!r}") from None
        InfluentialFeatures(k1=k1_value, k2=k2, coverage=coverage, by=by)._check_params()
        out = check_writable_folder(out_folder(out, model, "decompose"))
        net = model.open()
        summary = run_decompose(  # checks every setting against the model before it writes
            net,
            data=data,
            out=out,
            k1=k1_value,
            k2=k2,
            by=by,
            coverage=coverage,
            sweep_k=ks,
            seeds=seeds,
            retrain_epochs=retrain,
            retrain_whole=retrain_whole,
        )
        r = summary["relative"]
        if k1 == "coverage":
            typer.echo(f"k1 = {summary['k1']} (covers {coverage:g} of the l1 mass on average)")
        typer.echo(
            f"A_f {100 * r['A_f']:.2f} %  A_d {100 * r['A_d']:.2f} %  r_A {r['r_A']:.4f}  "
            f"(final layer {r['macs_full']} -> {r['macs_decomposed']} MACs)"
        )
        typer.echo(f"results written to {out}")

    @app.command(
        "decompose-depth",
        help="Train (or reuse) ResNets of several depths and plot r_A against depth.\n\n"
        f"The depth study of {PAPER}.",
    )
    def decompose_depth(
        data: str = typer.Option("shapes", help="data set to train on"),
        depths: str = typer.Option("8,14,20,32,44,56", help="ResNet depths"),
        epochs: int = typer.Option(8, min=1, help="training epochs (demo recipe otherwise)"),
        images: int = typer.Option(None, min=1, help="training images (default: the whole split)"),
        n: int = typer.Option(None, hidden=True, help="old spelling of --images"),
        ratio: float = typer.Option(5 / 64, help="k1 = k2 = round(ratio x m), in (0, 1]"),
        seed: int = typer.Option(0),
        out: Path = typer.Option(Path("runs/depth"), help="run folder; trained nets are reused"),
        overwrite: bool = typer.Option(
            False, help="train over nets in --out made with other settings (else refused)"
        ),
    ) -> None:
        """Train (or reuse) ResNets of several depths and plot r_A against depth."""
        import dataclasses

        from ..studies.decompose import depth_study
        from ..studies.decompose.plots import depth_plot
        from ..train.classifier import DEMO_CONFIG
        from .renamed import renamed

        n = renamed("--n", "--images", n, images, None)

        config = dataclasses.replace(DEMO_CONFIG, epochs=epochs, seed=seed)
        rows = depth_study(  # checks every setting before the first network trains
            out=out,
            config=config,
            data=data,
            depths=_ints(depths, "--depths"),
            data_options=None if n is None else {"n": n},
            ratio=ratio,
            overwrite=overwrite,
        )
        _save_rows(out, "depth", rows)
        _save_fig(out / "depth.png", depth_plot(rows))
        for row in rows:
            typer.echo(
                f"ResNet-{row['depth']:<3d} A_f {100 * row['A_f']:.2f} %  "
                f"A_d {100 * row['A_d']:.2f} %  r_A {row['r_A']:.4f}"
            )
        typer.echo(f"results written to {out}")
