"""The tax benchmark still runs (tiny sizes) and its year of harvesting never washes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[4] / "bench" / "tax" / "bench_tax.py"


def test_bench_runs_small_and_writes_json(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_tax", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "tax.json"
    argv = ["--out", str(out), "--accounts", "20", "--names", "40", "--repeat", "2"]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    year = result["direct_index_year"]
    assert year["harvests"] > 0 and year["wash_sales_created"] == 0
    assert result["daily_fills"]["fills"] == 20 * result["daily_fills"]["fills_per_account"]
    assert result["household_wash_check"]["open_lots"] >= 6000
