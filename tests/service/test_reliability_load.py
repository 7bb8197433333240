"""The short load run of CI: ``rnnlm.bench.load --quick`` against a real ``rnnlm serve`` on the tiny model.

Mixed traffic at and beyond capacity and with abandoning clients, 4 s per phase: it must end
with no 5xx crash, every answer matching its request, no transport error, every 503 carrying
Retry-After, no slot leaked and flat memory. (The long run, on the shipped model, is
``make reliability``; its figures are in docs/RELIABILITY.md.)
"""

from __future__ import annotations

import json

from rnnlm.bench import load


def test_quick_load_run_has_no_crash_no_mixup_and_no_leak(tiny_model_dir, tmp_path):
    out = tmp_path / "load.json"
    rc = load.main(["--quick", "--model-dir", str(tiny_model_dir), "--capacity", "4", "--json", str(out)])
    result = json.loads(out.read_text())
    failures = {
        ph["name"]: (ph["transport_errors"], ph["mismatches"][:3], ph["leaked"]) for ph in result["phases"]
    }
    assert rc == 0 and all(result["ok"].values()), (result["ok"], failures)
    _at_capacity, beyond, abandoning = result["phases"]
    for phase in result["phases"]:
        assert phase["statuses"].get("200", 0) > 0, phase
        assert set(phase["statuses"]) <= {"200", "503"}, phase  # nothing but answers and overload
        assert phase["by_kind"].keys() == {"score", "next_token", "generate", "stream"}, phase
    assert beyond["statuses"].get("503", 0) > 0, beyond  # 16 clients, 4 slots: some are refused at once
    assert abandoning["abandoned"] > 0
