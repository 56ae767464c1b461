"""The optimizer before and after a change, side by side in one run (a benchmark, not a test).

    .venv/bin/python bench/optimizer/compare_baseline.py [--baseline HEAD] [--accounts 100]
        [--cpu N] [--variants] [--out bench/results/optimizer_compare.json]

The engine at ``--baseline`` (a git revision; read with ``git archive``, nothing in the work
tree changes) is unpacked into a temporary folder as the package ``ballast_engine_baseline``
and imported beside the working tree's ``ballast_engine``. Each generated sleeve
(``generate.sleeve``) goes through both ``optimize()`` calls one after the other, alternating
which goes first, so both see the same load on a shared machine. Reported: wall and CPU time
per account (median, p99, mean) for each, the phases, the CPU time with every trade written
out (``to_dict()``, which reads each sentence), the sum of the objectives, and how many
results differ (trades, sentences, numbers; ``--variants`` adds exclusions, equivalence sets,
wash-sale blocks, tilts, fractional shares and bounds that give way to the generated
sleeves).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import ballast_engine.optimizer as current
from generate import sleeve

ROOT = Path(__file__).resolve().parents[2]
ENGINE = "libs/engine/src/ballast_engine"
SETTINGS = current.PlainSettings(
    tax_sensitivity="medium", tracking_tolerance=0.01, gain_budget=20_000
)


def baseline_package(revision: str, into: Path) -> ModuleType:
    """The engine at ``revision`` imported as ``ballast_engine_baseline``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision, ENGINE],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "ballast_engine_baseline"
    (into / ENGINE).rename(package)
    word = re.compile(r"\bballast_engine\b")
    for source in package.rglob("*.py"):
        source.write_text(word.sub("ballast_engine_baseline", source.read_text()))
    sys.path.insert(0, str(into))
    import ballast_engine_baseline.optimizer as baseline

    return baseline


def variants(seed: int, names: int) -> Iterator[tuple[str, Any, Any]]:
    """The generated sleeve, then (``--variants``) the same with every optional input used."""
    p = sleeve(seed, names=names)
    yield "generated", p, SETTINGS
    rng = np.random.default_rng(seed)
    n = p.n_names
    excluded = np.zeros(n, dtype=bool)
    excluded[rng.choice(n, 8, replace=False)] = True
    equivalence = np.full(n, -1)
    equivalence[:40] = np.arange(40) // 2
    identical = np.zeros(n, dtype=bool)
    identical[:10] = True
    blocked = np.zeros(n, dtype=bool)
    blocked[rng.choice(n, 5, replace=False)] = True
    for rule in ("pro_rata", "sector", "equivalence"):
        personalized = dataclasses.replace(
            p,
            excluded=excluded,
            equivalence=equivalence,
            identical=identical,
            buy_blocked=blocked,
            redistribution=rule,
            cash_reserve=5_000.0,
        )
        yield (
            f"exclusions-{rule}",
            personalized,
            current.PlainSettings(
                tax_sensitivity="high",
                tracking_tolerance=0.02,
                gain_budget=5_000,
                tilts={"value": 0.1},
            ),
        )
    yield (
        "fractional-low",
        dataclasses.replace(p, fractional=True, share_decimals=3),
        current.PlainSettings(tax_sensitivity="low", tracking_tolerance=0.005, harvesting=False),
    )
    # a whole sector excluded under a tight sector bound, gains forced past a zero budget
    emptied = excluded | (p.sectors == 3)
    yield (
        "bounds-give-way",
        dataclasses.replace(p, excluded=emptied),
        current.PlainSettings(sector_bound=0.001, gain_budget=0, harvesting=False),
    )


EXPONENT = re.compile(r"\b\d+(?:\.\d+)?E\+\d+\b")


def plain_numbers(sentence: str) -> str:
    """A sentence with quantities written out (an older engine wrote 20 shares as 2E+1)."""
    return EXPONENT.sub(lambda m: format(Decimal(m.group()), "f"), sentence)


def fingerprint(result: Any) -> tuple[Any, ...]:
    """Everything a caller sees of a result (every trade field, sentences included);
    quantities compare as numbers."""
    trades = tuple(
        (
            t.symbol,
            t.side,
            t.quantity,
            t.price,
            t.estimated_value,
            t.reason,
            plain_numbers(t.explanation),
            t.lot_id,
            t.acquired,
            t.cost_basis,
            t.gain,
            t.term,
            t.estimated_tax,
        )
        for t in result.trades
    )
    fields = result.to_dict()
    fields.pop("trades")
    return trades, json.dumps(fields), result.objective, result.post_shares.tobytes()


def timed(optimize: Any, problem: Any, settings: Any) -> tuple[Any, float, float, float]:
    """(result, wall ms, CPU ms, CPU ms with every trade written out as the wire has it)."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = optimize(problem, settings)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    for trade in result.trades:
        trade.to_dict()
    return result, wall * 1e3, cpu * 1e3, (time.process_time() - c0) * 1e3


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(statistics.fmean(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git revision of the 'before'")
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--variants", action="store_true", help="also personalized sleeves")
    parser.add_argument("--out", default="bench/results/optimizer_compare.json")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory() as folder:
        baseline = baseline_package(args.baseline, Path(folder))
        runs = {"before": baseline.optimize, "after": current.optimize}
        cases = [
            case
            for seed in range(args.accounts)
            for k, case in enumerate(variants(seed, args.names))
            if args.variants or k == 0
        ]
        for optimize in runs.values():  # warm-up: imports, OR-Tools' first model
            optimize(cases[0][1], cases[0][2])
        wall: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        read: dict[str, list[float]] = {k: [] for k in runs}
        phases: dict[str, dict[str, list[float]]] = {k: {} for k in runs}
        objective: dict[str, float] = dict.fromkeys(runs, 0.0)
        differ: list[str] = []
        for n, (name, problem, settings) in enumerate(cases):
            order = list(runs) if n % 2 == 0 else list(reversed(runs))
            seen: dict[str, Any] = {}
            for key in order:
                result, w, c, r = timed(runs[key], problem, settings)
                seen[key] = result
                if name == "generated":
                    wall[key].append(w)
                    cpu[key].append(c)
                    read[key].append(r)
                    for phase, ms in result.timings_ms.items():
                        phases[key].setdefault(phase, []).append(ms)
                    objective[key] += result.objective
            if fingerprint(seen["before"]) != fingerprint(seen["after"]):
                differ.append(f"{problem.account_id} {name}")
    out: dict[str, Any] = {
        "benchmark": "optimizer before/after",
        "baseline": args.baseline,
        "machine": {"pinned_cpu": args.cpu, "load_average": os.getloadavg()},
        "accounts": args.accounts,
        "cases_compared": len(cases),
        "results_differ": len(differ),
        "differing_cases": differ[:20],
    }
    for key in runs:
        out[key] = {
            "optimize_wall": summary(wall[key]),
            "optimize_cpu": summary(cpu[key]),
            "with_every_trade_to_dict_cpu": summary(read[key]),
            "phases_median_ms": {k: round(statistics.median(v), 3) for k, v in phases[key].items()},
            "accounts_per_second_cpu": round(1e3 / statistics.fmean(cpu[key]), 1),
            "objective_sum": objective[key],
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
