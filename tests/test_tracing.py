"""The one function-call watcher (cnnlens.tracing) its three users share."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnlens.tracing import CallWatch, base_name, tensors


def test_watch_sees_each_outer_call_with_its_arguments_and_result():
    seen = []
    x = torch.randn(2, 3)
    with CallWatch(lambda name, args, kwargs, out: seen.append((name, args, kwargs, out))):
        y = F.relu(x)  # its inner torch.relu runs unseen
        z = y + x
        z.mul_(2)
    assert [s[0] for s in seen] == ["relu", "add", "mul_"]
    assert seen[0][1][0] is x and seen[0][3] is y and seen[1][3] is z
    torch.testing.assert_close(z, 2 * (torch.relu(x) + x))


def test_depth_hides_calls_and_call_can_change_the_result():
    class Doubling(CallWatch):
        def call(self, func, name, args, kwargs):
            return (
                func(*args, **kwargs) * 2 if name in ("add", "__add__") else func(*args, **kwargs)
            )

    x = torch.ones(2)
    watch = Doubling()
    with watch:
        doubled = x + x
        watch.depth += 1
        plain = x + x
        watch.depth -= 1
    assert doubled.tolist() == [4.0, 4.0] and plain.tolist() == [2.0, 2.0]


def test_names_and_tensors():
    assert base_name("relu_") == ("relu", True)
    assert base_name("__iadd__") == ("__iadd__", False) and base_name("relu") == ("relu", False)
    a, b = torch.zeros(1), torch.ones(1)
    assert [t is a or t is b for t in tensors(((a, 3), {"k": [b]}, "s"))] == [True, True]
