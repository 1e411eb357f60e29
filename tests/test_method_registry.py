"""The method registry: every method carries its facts, and methods registered outside
cnnlens.attribution (a paper's package, a third-party entry point) are found."""

from __future__ import annotations

import sys

import pytest

from cnnlens import attribution
from cnnlens.attribution.base import FAMILIES, Setup
from cnnlens.errors import CnnlensError


def test_every_method_declares_family_cost_completeness_and_needs():
    for name in attribution.methods():
        cls = attribution.get(name)
        assert cls.family in FAMILIES, name
        cost = cls.cost()
        assert cost is None or cost >= 1, name
        assert isinstance(cls.complete, bool) and isinstance(cls.needs, str)
    assert {n for n in attribution.methods() if attribution.get(n).complete} == {
        "integrated-gradients", "deeplift", "lrp",
    }  # fmt: skip
    assert attribution.get("integrated-gradients").cost({"steps": 8}) == 9
    assert {n for n in attribution.methods() if attribution.get(n).needs} == {"iba", "relabel"}


def test_relabel_is_registered_from_the_paper_package():
    assert attribution.get("relabel").__module__ == "cnnlens.studies.relabel.method"


def test_prepare_says_what_is_missing():
    with pytest.raises(CnnlensError, match="train-vae"):
        attribution.get("relabel").prepare(Setup(model=None), {})
    with pytest.raises(CnnlensError, match="statistics"):
        attribution.get("iba").prepare(Setup(model=None), {})
    assert attribution.get("iba").prepare(Setup(model=None), {"statistics": "f"}) == {}


def test_a_third_party_entry_point_registers_a_method(tmp_path, monkeypatch):
    """An installed distribution's ``cnnlens.methods`` entry point (its metadata on
    sys.path, as pip writes it) is imported by the registry's discovery."""
    (tmp_path / "thirdparty_method.py").write_text(
        "from cnnlens.attribution import register\n"
        "from cnnlens.attribution.gradient import Saliency\n"
        "@register\n"
        "class Mine(Saliency):\n"
        "    name = 'third-party-saliency'\n"
        "    description = 'a method from another package'\n"
    )
    info = tmp_path / "thirdparty-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[cnnlens.methods]\nmine = thirdparty_method\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    attribution.methods()  # discovered once already, without it
    monkeypatch.setattr(attribution, "_DISCOVERED", [])
    try:
        assert "third-party-saliency" in attribution.methods()
        assert attribution.get("third-party-saliency").family == "Gradient"
    finally:
        attribution._METHODS.pop("third-party-saliency", None)
        sys.modules.pop("thirdparty_method", None)
