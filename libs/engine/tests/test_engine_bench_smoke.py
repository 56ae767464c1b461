"""The engine benchmark still runs (``--quick`` sizes) and writes its JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "engine" / "bench_engine.py"


def test_engine_bench_quick_run_writes_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "engine.json"
    monkeypatch.setattr(sys, "argv", ["bench_engine.py", "--quick", "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    assert result["drift_scan"]["accounts"] == 10_000
    for key in ("tactical", "strategic"):
        r = result[key]
        assert r["trades_proposed"] > 0 and r["accounts_per_second"] > 0
        assert r["with_to_dict"]["accounts_per_second"] > 0
        assert r["where_time_goes"] and r["where_time_goes_with_to_dict"]
