"""Does r_A grow with depth? The depth study of paper 002 (section 5.2.2, Figure 4).

Trains (or reuses, through :func:`cnnlens.train.classifier.train_classifier`'s run
cache) CIFAR ResNets of several depths with one training setting, then fits
the influential features of each with the same ``k2 / m`` ratio and reports
``A_f``, ``A_d`` and ``r_A`` per depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...analysis.features import collect_features
from ...data import load as load_data
from ...progress import log_line
from ...train import TrainConfig
from .influential import InfluentialFeatures
from .overlap import jaccard_matrix, mean_overlap
from .relative import relative_accuracy

DEPTHS = (8, 14, 20, 32, 44, 56)


def check_depth_study(
    *,
    out: str | Path,
    config: TrainConfig,
    data: str,
    depths: Sequence[int],
    data_options: dict | None,
    ratio: float,
    overwrite: bool = False,
) -> None:
    """Refuse any setting of :func:`depth_study` before the first network trains: depths
    without a CIFAR ResNet, ``ratio`` outside (0, 1] (k = round(ratio x m) must lie in
    [1, m]), ``n`` beyond the training split, an unwritable ``out``, or a folder
    ``out/resnet<depth>`` holding a run with other settings (unless ``overwrite``)."""
    from ... import nets
    from ...data import check_count
    from ...errors import InputError
    from ...io import check_writable_folder
    from ...runs import saved_run
    from ...train.classifier import classifier_identity

    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a cnnlens.train.TrainConfig, got {type(config).__name__}")
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 < ratio <= 1:
        raise InputError(f"ratio must lie in (0, 1] (k1 = k2 = round(ratio x m)), got {ratio!r}")
    if not depths:
        raise InputError("depths must name at least one ResNet depth")
    known = sorted(int(n[len("resnet") :]) for n in nets.names() if n.startswith("resnet"))
    bad = [d for d in depths if d not in known]
    if bad:
        raise InputError(f"no CIFAR ResNet of depth {bad}; depths are {known}")
    options = dict(data_options or {})
    check_count(options.get("n"), data, "train", option="n")
    check_writable_folder(out)
    for depth in depths:
        arch = f"resnet{depth}"
        identity = classifier_identity(data, arch, config, options)
        saved_run(Path(out) / arch, identity, overwrite=overwrite)


def depth_study(
    *,
    out: str | Path,
    config: TrainConfig,
    data: str = "shapes",
    depths: Sequence[int] = DEPTHS,
    data_options: dict | None = None,
    ratio: float = 5 / 64,
    batch_size: int | None = None,
    overwrite: bool = False,
) -> list[dict]:
    """One row per depth: ``A_f``, ``A_d``, ``r_A`` with ``k1 = k2 = round(ratio x m)``.

    Each depth trains into ``out/resnet<depth>`` (an identical finished run
    there is reused; one with other settings is refused unless ``overwrite``).
    The analysis fits on the training split and scores on the standard test
    split (``data_options`` other than ``n`` apply to it). Every setting is
    checked before the first network trains (:func:`check_depth_study`).
    """
    from ...train.classifier import train_classifier

    check_depth_study(
        out=out,
        config=config,
        data=data,
        depths=depths,
        data_options=data_options,
        ratio=ratio,
        overwrite=overwrite,
    )
    out = Path(out)
    options = dict(data_options or {})
    test_options = {k: v for k, v in options.items() if k != "n"}
    test = load_data(data, split="test", **test_options)
    rows = []
    for depth in depths:
        arch = f"resnet{depth}"
        run = train_classifier(
            data=data,
            arch=arch,
            out=out / arch,
            config=config,
            data_options=options,
            overwrite=overwrite,
        )
        how = "reused" if run.reused else f"trained in {run.seconds:.0f} s"
        train_feats = collect_features(run.model, run.train, batch_size=batch_size)
        m = int(train_feats.features.shape[1])
        k = max(1, round(ratio * m))
        est = InfluentialFeatures(k1=k, k2=k)
        est.classes_ = list(run.train.classes)
        est.fit_features(train_feats.features, train_feats.labels, n_classes=run.train.num_classes)
        est.head_name_ = train_feats.head_name
        scores = relative_accuracy(run.model, est, test, batch_size=batch_size)
        row = {
            "depth": depth,
            "arch": arch,
            "m": m,
            "k1": k,
            "k2": k,
            "k2/m": k / m,
            "k2/c": k / run.train.num_classes,
            "A_f": scores["A_f"],
            "A_d": scores["A_d"],
            "r_A": scores["r_A"],
            "coverage": float(est.coverage_.mean()),
            "mean_overlap": mean_overlap(jaccard_matrix(est)),
            "epochs": config.epochs,
            "train_images": len(run.train),
            "run": how,
        }
        log_line(
            f"depth {depth}: A_f {row['A_f']:.4f} A_d {row['A_d']:.4f} r_A {row['r_A']:.4f} ({how})"
        )
        rows.append(row)
    return rows
