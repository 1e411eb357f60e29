"""Default settings stay within the memory budget on large inputs.

A ResNet at 224x224 with random weights: IG (50 steps), SmoothGrad (50
samples), Score-CAM, DeepLIFT and LRP run at their defaults on 2 images in a
subprocess with ``CNNLENS_MEMORY_BUDGET=96 MB``. Without chunking IG alone
would hold 100 images' activations and gradients (several GB); the peak
resident memory of the subprocess must stay under 1.5 GB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, torch
torch.set_num_threads(1)
from cnnlens import nets
from cnnlens.attribution import explain
torch.manual_seed(0)
model = nets.create("resnet8", num_classes=10).eval()
x = torch.randn(2, 3, 224, 224)
def status(key):  # kB, from /proc/self/status (this process alone)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
# the peak counter restarts here: a forked child inherits its parent's ru_maxrss, which
# made the pytest process's own peak (GBs after the 224 px family tests) count as ours
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")
start = status("VmRSS")
shapes = {}
for name in ["integrated-gradients", "smoothgrad", "score-cam", "deeplift", "lrp", "grad-cam"]:
    shapes[name] = list(explain(model, x, name, target=1).maps.shape)
peak = status("VmHWM")
print(json.dumps({"start_kb": start, "peak_kb": peak, "shapes": shapes}))
"""


@pytest.mark.slow
def test_defaults_fit_memory_budget_at_224():
    env = dict(os.environ, CNNLENS_MEMORY_BUDGET=str(96 << 20), CNNLENS_QUIET="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=1200
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    for shape in info["shapes"].values():
        assert shape == [2, 1, 224, 224]
    assert info["peak_kb"] < 1.5 * 1024 * 1024, info  # this process's peak, the model included
