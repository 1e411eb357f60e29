"""runs.measured: a measurement reused while its key holds, measured again otherwise."""

from __future__ import annotations

from cnnlens.runs import measured


def test_cache_reuses_then_remeasures_on_a_new_key_or_a_damaged_file(tmp_path):
    calls = []

    def measure():
        calls.append(1)
        return {"value": len(calls)}

    path = tmp_path / "sub" / "report-cache.json"
    assert measured(path, {"settings": (1, 2)}, measure) == {"value": 1}
    assert measured(path, {"settings": [1, 2]}, measure) == {"value": 1}  # as stored
    assert len(calls) == 1
    assert measured(path, {"settings": [1, 3]}, measure) == {"value": 2}
    path.write_text("{not json")
    assert measured(path, {"settings": [1, 3]}, measure) == {"value": 3}
    assert measured(path, {"settings": [1, 3]}, measure) == {"value": 3}
    assert len(calls) == 3
