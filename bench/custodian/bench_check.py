"""Benchmark of `ballast custodian check`: generate a custodian's daily file set for N
accounts (about 25 lots an account) and time its offline check; writes JSON.

    python bench/custodian/bench_check.py [--accounts 10000] [--out FILE.json]

The check runs in a child process, once per format (the canonical one and the second
custodian's, which converts dates, codes and signs on every row), so its peak memory is its
own. Wall and CPU seconds are both given: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

from ballast_common.custodian_files import adapter_for, check_file_set
from ballast_common.custodian_files.generator import generate

ROOT = Path(__file__).resolve().parents[2]


def _check_in_this_process(folder: Path, custodian: str, day: date) -> None:
    """The child: check one set, print its timing and outcome as JSON."""
    started, cpu = time.perf_counter(), time.process_time()
    report = check_file_set(folder, adapter_for(custodian), day)
    result = {
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "valid": report.valid,
        "problems": report.problem_count,
        "rows": {f.kind: f.rows for f in report.files.values()},
        "bytes": sum(f.size for f in report.files.values()),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(result))


def _check(folder: Path, custodian: str, day: date) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", str(folder), custodian, day.isoformat()]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    rows = result["rows"]
    assert isinstance(rows, dict) and isinstance(result["seconds"], float)
    result["rows_per_second"] = round(sum(rows.values()) / result["seconds"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--formats", default="ballast,northwind", help="custodians to time")
    parser.add_argument("--dir", type=Path, default=ROOT / ".state" / "bench" / "custodian")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/custodian_check.json")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        folder, custodian, day = args.child
        _check_in_this_process(Path(folder), custodian, date.fromisoformat(day))
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    results: dict[str, object] = {}
    generated: dict[str, object] = {}
    for custodian in args.formats.split(","):
        started = time.perf_counter()
        made = generate(
            args.dir,
            accounts=args.accounts,
            seed=args.seed,
            custodian=custodian,
            adapter=adapter_for(custodian),
        )
        generated[custodian] = {"seconds": round(time.perf_counter() - started, 3)}
        results[custodian] = _check(made.folder, custodian, made.business_date)
        print(f"{custodian}: {json.dumps(results[custodian])}", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)
    out = {
        "benchmark": "custodian_check",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "accounts": args.accounts,
        "seed": args.seed,
        "generate": generated,
        "check": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
