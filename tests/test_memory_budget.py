"""The memory budget (``memory=`` / ``--memory``) of methods and metrics that expand a batch.

A small budget cuts the expanded items (IG steps, RISE masks) into many chunks, seen
as the model's forward calls by a forward hook, and the maps equal those of one big
chunk; sizes parse as ``2GiB`` / ``512MB`` and anything else is an ``InputError``; the
flag reaches the methods and metrics from ``explain``, ``evaluate`` and a job.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlens import chunking, nets
from cnnlens.attribution import explain, get, methods
from cnnlens.chunking import chunk_size, item_bytes, model_bytes, parse_memory
from cnnlens.cli import main
from cnnlens.errors import ConfigError, InputError
from cnnlens.metrics import deletion


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nets.create("resnet8", num_classes=10).eval()


def batches_seen(model: nn.Module, run) -> list[int]:
    """Batch sizes of every forward of ``model`` while ``run()`` runs, and its result."""
    sizes: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _out: sizes.append(len(args[0])))
    try:
        result = run()
    finally:
        handle.remove()
    return sizes, result


def budget_for(model: nn.Module, x: torch.Tensor, items: int, *, backward: bool) -> int:
    """A budget that holds exactly ``items`` items of ``x`` (besides a model copy)."""
    return model_bytes(model) + items * item_bytes(model, x[:1], backward=backward) + 1


def assert_same_maps(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert scale > 0
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_small_budget_runs_integrated_gradients_in_many_chunks(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    memory = budget_for(model, x, 3, backward=True)
    assert chunk_size(model, x, backward=True, memory=memory) == 3
    run = lambda mem: explain(model, x, "integrated-gradients", target=1, steps=16, memory=mem)  # noqa: E731
    small_sizes, small = batches_seen(model, lambda: run(memory))
    big_sizes, big = batches_seen(model, lambda: run("1GiB"))
    # 2 images x 16 steps = 32 items: at most 3 per forward, so at least 11 forwards
    assert max(small_sizes) <= 3
    assert len(small_sizes) >= 11
    assert max(big_sizes) == 32  # one chunk holds every step of both images
    assert_same_maps(small.maps, big.maps)


def test_small_budget_runs_rise_in_many_chunks(model):
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    memory = budget_for(model, x, 4, backward=False)
    assert chunk_size(model, x, backward=False, memory=memory) == 4
    run = lambda mem: explain(model, x, "rise", target=3, n_masks=40, s=4, memory=mem)  # noqa: E731
    small_sizes, small = batches_seen(model, lambda: run(memory))
    big_sizes, big = batches_seen(model, lambda: run(10**9))
    assert max(small_sizes) <= 4
    assert len(small_sizes) >= 10
    assert max(big_sizes) == 40
    assert_same_maps(small.maps, big.maps)


def test_metric_chunks_to_its_budget(model):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    memory = budget_for(model, x, 2, backward=False)
    small_sizes, small = batches_seen(
        model, lambda: deletion(model, x, maps, 1, step=128, memory=memory)
    )
    _big_sizes, big = batches_seen(model, lambda: deletion(model, x, maps, 1, step=128))
    assert max(small_sizes) <= 2
    assert len(small_sizes) >= 9  # 2 images x 9 steps, two at a time
    assert_same_maps(small.curves, big.curves)


def test_batch_size_overrides_the_budget(model):
    x = torch.randn(1, 3, 32, 32)
    assert chunk_size(model, x, batch_size=7, memory=1) == 7
    sizes, _ = batches_seen(
        model,
        lambda: explain(model, x, "integrated-gradients", target=0, steps=8, batch_size=5),
    )
    assert max(sizes) == 5


def test_estimate_covers_what_the_backward_saves(model):
    """The per-item estimate is at least the tensors autograd keeps for one item (counted
    independently here, by saved-tensor hooks) plus the item, and forward-only less."""
    x = torch.randn(1, 3, 32, 32)
    shared = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in shared:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    leaf = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(leaf)
    backward = item_bytes(model, x, backward=True)
    forward = item_bytes(model, x, backward=False)
    assert backward >= sum(saved.values()) + x.numel() * 4
    assert x.numel() * 4 < forward < backward


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GiB", 2 << 30),
        ("512MB", 512 * 10**6),
        ("512 MiB", 512 << 20),
        ("1.5g", int(1.5 * (1 << 30))),
        ("64k", 64 << 10),
        ("1000", 1000),
        (4096, 4096),
        (2e9, 2 * 10**9),
    ],
)
def test_sizes_parse(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("bad", ["2 apples", "GiB", "", "-1GiB", "0", 0, -5, True, "1e-3", None])
def test_bad_sizes_are_input_errors(bad):
    with pytest.raises(InputError, match="memory must be"):
        parse_memory(bad)


def test_every_chunking_method_declares_memory_once(model):
    """Every method that declares a batch_size declares the shared memory Param; a bad
    size is refused before any work, naming the method."""
    chunked = [name for name in methods() if "batch_size" in get(name).hyperparameters]
    assert {"integrated-gradients", "rise", "occlusion", "lime", "smoothgrad"} <= set(chunked)
    for name in chunked:
        assert get(name).hyperparameters["memory"] is chunking.MEMORY, name
    with pytest.raises(InputError, match="integrated-gradients: memory must be"):
        get("integrated-gradients")(model, memory="2 apples")


@pytest.fixture
def budgets_asked(monkeypatch):
    """The ``memory`` each chunking call asks the real budget for (a spy, not a stand-in)."""
    asked: list = []
    real = chunking.memory_budget

    def spy(device, memory=None):
        asked.append(memory)
        return real(device, memory)

    monkeypatch.setattr(chunking, "memory_budget", spy)
    return asked


@pytest.fixture(scope="module")
def saved(tmp_path_factory, shapes_test):
    from cnnlens import checkpoint

    torch.manual_seed(0)
    net = nets.create("resnet8", num_classes=len(shapes_test.classes))
    folder = tmp_path_factory.mktemp("memory-model") / "model"
    checkpoint.save(
        net, folder, classes=shapes_test.classes, mean=shapes_test.mean, std=shapes_test.std
    )
    return folder


def test_explain_flag_reaches_the_method(saved, tmp_path, budgets_asked):
    code = main(
        ["explain", "--model", str(saved), "--data", "shapes", "--index", "0:2",
         "--method", "integrated-gradients,grad-cam", "--param", "steps=4",
         "--memory", "3MiB", "--out", str(tmp_path / "explain")]
    )  # fmt: skip
    assert code == 0
    assert "3MiB" in budgets_asked


def test_explain_refuses_a_bad_size(saved, tmp_path, capsys):
    out = tmp_path / "explain"
    args = ["explain", "--model", str(saved), "--memory", "2 apples", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: memory must be") and "2 apples" in err
    assert not out.exists()


def test_evaluate_flag_reaches_methods_and_metrics(saved, tmp_path, budgets_asked):
    code = main(
        ["evaluate", "--model", str(saved), "--data", "shapes", "--images", "2",
         "--methods", "integrated-gradients", "--param", "integrated-gradients:steps=4",
         "--metrics", "deletion", "--memory", "5MiB", "--out", str(tmp_path / "ev")]
    )  # fmt: skip
    assert code == 0
    # the method's chunks, and the metric's for it and for the random / Sobel baselines
    assert budgets_asked.count("5MiB") >= 4


def test_job_memory_reaches_the_work(saved, tmp_path, budgets_asked):
    from cnnlens.jobs.spec import JobSpec, prepare
    from cnnlens.jobs.work import ShardWorker

    fields = {
        "model": str(saved),
        "store": str(tmp_path / "store"),
        "images": 2,
        "methods": {"integrated-gradients": {"steps": 4}},
        "metrics": ["deletion"],
    }
    with pytest.raises((InputError, ConfigError), match="memory must be"):
        prepare(JobSpec.from_dict({**fields, "memory": "2 apples"}))
    job = prepare(JobSpec.from_dict({**fields, "memory": "7MiB"}))
    assert job.job["memory"] == "7MiB"
    ShardWorker(job.model, job.dataset, job.job).compute(0, 0, 2)
    assert budgets_asked.count("7MiB") >= 2  # the method's chunks and the metric's
