"""cnnlens.evaluate, the CLI command, the sanity check and the report section."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

import cnnlens
from cnnlens import metrics
from cnnlens.hooks import model_fingerprint, same_fingerprint
from cnnlens.metrics.evaluate import evaluate
from cnnlens.metrics.outputs import write_evaluation


class SmallCNN(nn.Module):
    def __init__(self, k=8):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, k)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(h.mean((2, 3)))


def gradient_map(model, x, target):
    """Plain |gradient| saliency, written here so the test does not depend on the registry."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x).gather(1, target[:, None]).sum()
        (g,) = torch.autograd.grad(out, x)
    return g.abs().amax(1, keepdim=True)


@pytest.fixture(scope="module")
def small_batch(shapes_test):
    x, _ = shapes_test.tensors(range(6))
    return x, shapes_test.boxes[:6], shapes_test.masks[:6]


def test_randomisation_check_passes_gradients_and_fails_model_independent_maps(small_batch):
    x, _, _ = small_batch
    model = SmallCNN()
    fp = model_fingerprint(model)
    target = model(x).argmax(1)
    maps = gradient_map(model, x, target)
    good = metrics.randomisation_check(model, x, maps, method=gradient_map)
    bad = metrics.randomisation_check(
        model, x, metrics.sobel_map(x), method=lambda m, xx, t: metrics.sobel_map(xx)
    )
    assert good.params["layers"] == ["head", "conv2", "conv1"]
    assert good.curves.shape == (6, 3) and good.extras["ssim"].shape == (6, 3)
    assert float(good.extras["fails"][0]) == 0.0 and float(good.curves[:, -1].mean()) < 0.5
    assert float(bad.extras["fails"][0]) == 1.0
    assert torch.allclose(bad.curves, torch.ones_like(bad.curves))
    assert same_fingerprint(fp, model_fingerprint(model))  # the cascade ran on a copy


def test_cascade_groups_resnet_blocks_top_first():
    from cnnlens import nets

    groups = metrics.cascade_groups(nets.create("resnet20", num_classes=8))
    assert [g for g, _ in groups][:3] == ["head", "layer3.2", "layer3.1"]
    assert groups[-1] == ("conv1", ["conv1"]) and len(groups) == 11


def test_evaluate_writes_rows(small_batch, tmp_path):
    x, boxes, masks = small_batch
    model = SmallCNN()
    kwargs = dict(
        methods=[],
        metrics=["deletion", "degradation-large", "bbox-score", "pointing-game", "randomisation"],
        boxes=boxes,
        masks=masks,
        chunk=4,
        sanity_images=2,
        metric_params={"deletion": {"step": 64}},
        progress=False,
    )
    ev = evaluate(model, x, **kwargs)
    assert list(ev.values) == ["random", "sobel"]  # baselines always present
    # the deletion result equals a direct call with the same settings
    direct = metrics.deletion(model, x, metrics.sobel_map(x), step=64)
    assert torch.allclose(ev.values["sobel"]["deletion"], direct.values, atol=1e-6)
    assert ev.values["sobel"]["randomisation"][2:].isnan().all()
    assert ev.sanity_fails == {"random": True, "sobel": True}
    # chunks of 3 give the same numbers as chunks of 4 (an image's score is its own)
    other = evaluate(model, x, **{**kwargs, "chunk": 3})
    for name, values in ev.values["sobel"].items():
        assert torch.allclose(other.values["sobel"][name], values, atol=1e-6, equal_nan=True)
    # saving and resuming is the job engine's: out= is refused with the way to do it
    with pytest.raises(cnnlens.ConfigError, match="cnnlens evaluate --out"):
        evaluate(model, x, **kwargs, out=tmp_path)
    files = write_evaluation(ev, tmp_path)
    rows = list(csv.DictReader(open(files["csv"])))
    # 6 images x 2 methods x (5 metrics + randomisation_final)
    assert len(rows) == 6 * 2 * 6
    text = files["summary"].read_text()
    assert "| sobel |" in text and "FAILS" in text
    assert (tmp_path / "curves_deletion.png").stat().st_size > 1000


def test_cli_evaluate_runs_as_a_resumable_job_with_the_apis_numbers(tmp_path, shapes_test):
    """cnnlens evaluate --out writes through a job store: its numbers are evaluate()'s,
    a second run reads finished shards back instead of recomputing them, and a shard lost
    from the manifest (a killed run) is computed again to the same numbers."""
    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.store import layout

    torch.manual_seed(0)
    model = nets.create("resnet8", num_classes=8).eval()
    checkpoint.save(model, tmp_path / "model", classes=shapes_test.classes)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(tmp_path / "model"), "--images", "6", "--chunk", "4"]
    args += ["--methods", "integrated-gradients", "--param", "integrated-gradients:steps=4"]
    args += ["--metrics", "deletion,pointing-game,randomisation", "--sanity-images", "2"]
    args += ["--out", str(out)]
    assert main(args) == 0
    x, _ = shapes_test.tensors(range(6))
    api = evaluate(
        model, x, methods=["integrated-gradients"],
        metrics=["deletion", "pointing-game", "randomisation"],
        masks=shapes_test.masks[:6], boxes=shapes_test.boxes[:6], chunk=4, sanity_images=2,
        method_params={"integrated-gradients": {"steps": 4}}, progress=False,
    )  # fmt: skip

    def table() -> dict:
        return {
            (r["method"], r["metric"], int(r["image"])): float(r["value"] or "nan")
            for r in csv.DictReader(open(out / "metrics.csv"))
        }

    got = table()
    for method, per_metric in api.values.items():
        for metric, values in per_metric.items():
            for i, v in enumerate(values.tolist()):
                if v == v:  # not NaN
                    assert got[(method, metric, i)] == pytest.approx(v, abs=1e-5), (method, metric)
    # resume: a finished shard is read back, not recomputed (poisoned to prove it)
    import pandas as pd

    table_file = layout.shard_file(out / "store" / layout.METRICS, 0)
    saved = pd.read_parquet(table_file)
    saved.loc[saved["metric"] == "deletion", "value"] = 7.0
    saved.to_parquet(table_file, index=False)
    assert main(args) == 0
    again = table()
    assert all(again[("integrated-gradients", "deletion", i)] == 7.0 for i in range(4))
    # a shard missing from the manifest (a run killed mid-shard) is computed again
    manifest = json.loads((out / "store" / layout.MANIFEST).read_text())
    manifest["shards"].pop("0")
    (out / "store" / layout.MANIFEST).write_text(json.dumps(manifest))
    assert main(args) == 0
    third = table()
    assert third.keys() == got.keys()
    assert all(third[k] == pytest.approx(v, abs=1e-6, nan_ok=True) for k, v in got.items())


def test_evaluate_rejects_unknown_names(small_batch):
    x, _, _ = small_batch
    with pytest.raises(cnnlens.InputError, match="unknown metric"):
        evaluate(SmallCNN(), x, methods=[], metrics=["delete"], progress=False)
    with pytest.raises(cnnlens.InputError, match="unknown attribution method"):
        evaluate(SmallCNN(), x, methods=["no-such-method"], progress=False)


def test_cli_evaluate_end_to_end(tmp_path, shapes_test):
    from cnnlens import checkpoint, nets
    from cnnlens.cli import main

    model = nets.create("lenet5", num_classes=8, in_channels=3)
    checkpoint.save(model, tmp_path / "model", classes=shapes_test.classes)
    rc = main(
        [
            "evaluate",
            "--model", str(tmp_path),
            "--images", "4",
            "--methods", "random",
            "--metrics", "bbox-score,energy-pointing-game",
            "--out", str(tmp_path / "eval"),
        ]
    )  # fmt: skip
    assert rc == 0
    assert (tmp_path / "eval" / "metrics.csv").is_file()
    assert "energy-pointing-game" in (tmp_path / "eval" / "summary.md").read_text()
    assert main(["evaluate", "--model", str(tmp_path), "--images", "999999", "--out", "x"]) == 2


@pytest.mark.slow
def test_faithfulness_report_section_builds(shapes_test, tmp_path):
    from cnnlens import nets
    from cnnlens.report import ReportContext
    from cnnlens.report.sections.faithfulness import faithfulness

    model = nets.create("lenet5", num_classes=8, in_channels=3).eval()
    fp = model_fingerprint(model)
    ctx = ReportContext(model=model, train=None, test=shapes_test.subset(range(8)), out=tmp_path)
    page = faithfulness(ctx)
    assert "<table>" in page and ">sobel<" in page and ">random<" in page
    assert "fails" in page  # the baselines fail the randomisation check
    assert same_fingerprint(fp, model_fingerprint(model))


def test_evaluate_command_method_params_and_iba_statistics(tmp_path, capsys):
    """--param method:key=value reaches the method; IBA gets training-image statistics once."""
    import torch

    from cnnlens import checkpoint, nets
    from cnnlens.cli import main
    from cnnlens.data import load

    test = load("shapes", split="test")
    torch.manual_seed(0)
    folder = tmp_path / "model"
    checkpoint.save(nets.create("resnet8", num_classes=8), folder, classes=test.classes)
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(folder), "--images", "4", "--methods", "iba,rise"]
    args += ["--metrics", "pointing-game", "--sanity-images", "0", "--out", str(out)]
    args += ["--param", "iba:steps=2", "--param", "rise:n_masks=32"]
    assert main(args) == 0
    saved = json.loads((out / "store" / "job.json").read_text())["methods"]
    assert saved["rise"] == {"n_masks": 32}
    assert saved["iba"]["steps"] == 2
    assert saved["iba"]["statistics"].endswith(".safetensors")
    assert (out / saved["iba"]["statistics"].rsplit("/", 1)[-1]).is_file()
    capsys.readouterr()
    assert main([*args[:-4], "--param", "rsie:n_masks=3"]) == 2
    assert "rsie" in capsys.readouterr().err
