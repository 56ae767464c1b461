"""Benchmark of the rebalancing engine (issue 3); writes JSON results.

    uv run python bench/engine/bench_engine.py [--out bench/results/engine.json] [--quick]
                                               [--cpu N]

Measures, in one process (``--cpu N`` pins it to one CPU):
  * drift scan of 100,000 accounts x 30 positions (goal <= 2 s);
  * tactical rebalance of 20-position model accounts (goal >= 5,000 accounts/s);
  * strategic rebalance of 4-sleeve UMAs with 25 positions per sleeve (goal >= 1,000/s).
and, for each, where the time goes. ``rebalance()`` returns its trades' sentences and its
drift reports unbuilt (they are written when first read), so the goals are measured on
``rebalance()``; ``with_to_dict`` reports the rate when every result is also read whole and
serialized (``to_dict()``), as a service does, for information.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import time
from io import StringIO
from pathlib import Path

import numpy as np
from ballast_engine.builders import synthetic_sma_book, synthetic_uma_book
from ballast_engine.drift import BookArrays, scan_drift
from ballast_engine.model import RebalanceInput
from ballast_engine.rebalance import rebalance


def synthetic_arrays(n: int, p: int, seed: int = 1) -> tuple[dict, BookArrays]:  # type: ignore[type-arg]
    """A book of n accounts x p positions (one sleeve each) as arrays."""
    rng = np.random.default_rng(seed)
    universe = 3000
    prices = rng.uniform(5, 500, universe)
    security = rng.integers(0, universe, (n, p))
    target = rng.uniform(0.5, 1.5, (n, p))
    target = target / target.sum(axis=1, keepdims=True) * 0.98
    value_acct = rng.uniform(50_000, 1_000_000, n)
    quantity = np.floor(
        target * value_acct[:, None] / prices[security] * rng.uniform(0.9, 1.1, (n, p))
    )
    band = 0.01
    classes = 6
    slot_class = (security % classes).astype(np.int64)
    class_target = np.zeros((n, classes))
    np.add.at(class_target, (np.repeat(np.arange(n), p), slot_class.ravel()), target.ravel())
    raw = {"quantity": quantity, "security": security, "prices": prices}
    arrays = BookArrays(
        account_ids=[f"A{i}" for i in range(n)],
        value=np.zeros((n, p)),
        slot_sleeve=np.zeros((n, p), dtype=np.int64),
        slot_target=target,
        slot_lo=np.maximum(target - band, 0),
        slot_hi=target + band,
        slot_class=slot_class,
        sleeve_cash=(value_acct * rng.uniform(0, 0.05, n))[:, None],
        sleeve_cash_target=np.full((n, 1), 0.02),
        sleeve_cash_lo=np.full((n, 1), 0.01),
        sleeve_cash_hi=np.full((n, 1), 0.03),
        sleeve_valid=np.ones((n, 1), dtype=bool),
        sleeve_target=np.full((n, 1), np.nan),
        sleeve_lo=np.full((n, 1), np.nan),
        sleeve_hi=np.full((n, 1), np.nan),
        account_cash=np.zeros(n),
        class_target=class_target,
        class_band_kind=np.zeros(n, dtype=np.int64),
        class_band_width=np.full(n, 0.05),
        class_names=[f"class{k}" for k in range(classes)],
    )
    return raw, arrays


def bench_scan(n: int, p: int, repeats: int) -> dict:  # type: ignore[type-arg]
    raw, arrays = synthetic_arrays(n, p)
    times, value_times = [], []
    res = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        arrays.value = BookArrays.values_from(raw["quantity"], raw["security"], raw["prices"])
        t1 = time.perf_counter()
        res = scan_drift(arrays)
        t2 = time.perf_counter()
        times.append(t2 - t0)
        value_times.append(t1 - t0)
    assert res is not None
    best = min(times)
    return {
        "accounts": n,
        "positions": p,
        "seconds_best": round(best, 4),
        "seconds_median": round(float(np.median(times)), 4),
        "accounts_out_of_tolerance": int(res.out_of_tolerance.sum()),
        "goal_seconds": 2.0,
        "meets_goal": best <= 2.0,
        "breakdown": {
            "values_q_x_price_s": round(min(value_times), 4),
            "scan_s": round(best - min(value_times), 4),
        },
    }


def _profile(fn, inputs) -> list[dict]:  # type: ignore[no-untyped-def, type-arg]
    prof = cProfile.Profile()
    prof.enable()
    for x in inputs:
        fn(x)
    prof.disable()
    stats = pstats.Stats(prof, stream=StringIO())
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = []
    for (file, _line, name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((tt, f"{Path(file).name}:{name}"))
    rows.sort(reverse=True)
    return [{"function": f, "share_of_time": round(t / total, 3)} for t, f in rows[:8]]


def _materialize(x: RebalanceInput) -> None:
    """A rebalance with everything read: every sentence and both drift reports (the engine
    builds those on first read), as a service serializing each result to JSON does."""
    rebalance(x).to_dict()


def bench_rebalance(inputs: list[RebalanceInput], goal: float, label: str) -> dict:  # type: ignore[type-arg]
    for x in inputs[:20]:  # warm up (validation caches per reference)
        rebalance(x)
    best = best_cpu = float("inf")
    trades = 0
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        trades = 0
        for x in inputs:
            trades += len(rebalance(x).trades)
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    full = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for x in inputs:
            _materialize(x)
        full = min(full, time.perf_counter() - t0)
    rate = len(inputs) / best
    sample = inputs[: max(50, len(inputs) // 10)]
    return {
        "what": label,
        "accounts": len(inputs),
        "seconds_best": round(best, 4),
        "accounts_per_second": round(rate, 1),
        "accounts_per_cpu_second": round(len(inputs) / best_cpu, 1),
        "ms_per_account": round(1000 * best / len(inputs), 4),
        "trades_proposed": trades,
        "goal_accounts_per_second": goal,
        "meets_goal": rate >= goal,
        "with_to_dict": {  # for information: the whole result read and serialized
            "accounts_per_second": round(len(inputs) / full, 1),
            "ms_per_account": round(1000 * full / len(inputs), 4),
        },
        "where_time_goes": _profile(rebalance, sample),
        "where_time_goes_with_to_dict": _profile(_materialize, sample),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="bench/results/engine.json")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    n_scan = 10_000 if args.quick else 100_000
    n_tac = 500 if args.quick else 5_000
    n_str = 100 if args.quick else 1_000
    sma = synthetic_sma_book(n_tac, 20)
    uma = synthetic_uma_book(n_str, 4, 25)
    results = {
        "benchmark": "ballast-engine",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "single_core": True,  # one process, one thread
        "pinned_cpu": args.cpu,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "drift_scan": bench_scan(n_scan, 30, 3),
        "tactical": bench_rebalance(
            [RebalanceInput(a, sma.reference) for a in sma.accounts],
            5_000.0,
            "SMA, 20-position weight model, whole shares, $50 minimum trade, 1% bands",
        ),
        "strategic": bench_rebalance(
            [RebalanceInput(a, uma.reference) for a in uma.accounts],
            1_000.0,
            "UMA, 4 sleeves x 25 positions, relative bands 10%, fractional shares",
        ),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}, indent=2))
    for k in ("drift_scan", "tactical", "strategic"):
        r = results[k]
        print(k, {x: r[x] for x in r if not x.startswith("where_time_goes") and x != "breakdown"})


if __name__ == "__main__":
    main()
