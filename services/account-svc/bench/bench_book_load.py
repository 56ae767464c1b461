"""Timing of account-svc's part of a book load (issue 8); prints JSON. A benchmark, not a test.

    .venv/bin/python services/account-svc/bench/bench_book_load.py [--accounts 100000]

On a scratch database of the local stack (`scripts/stack.py up`), created and dropped here:
generates households.csv (one per two accounts), accounts.csv (10% UMAs, with 3 sleeves each
in sleeves.csv; the rest SMAs on 20 models) and restrictions.csv (10% of the accounts, one
restriction each: a symbol or a security list), then stages them (COPY), validates and applies
them through account-svc's BookLoadSpec, as its /book-loads routes do. Reports each stage's
seconds, the rows, the account-changed events written, and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from account_svc import service
from account_svc.book_load import BOOK_LOAD
from account_svc.main import spec
from account_svc.schemas import SecurityListIn
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions, StagedLoad
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1
from ballast_common.db import Database
from ballast_common.testing import migrated_database, unit_of_work
from ballast_common.uow import UnitOfWork
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[3]
STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]
MODELS = [f"bench-m{i}" for i in range(20)]
CHUNK = 1 << 20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stack(*args: str) -> str:
    return subprocess.run([*STACK, *args], capture_output=True, text=True, check=True).stdout


def scratch_database(name: str) -> str:
    stack("dropdb", name)
    stack("createdb", name)
    for line in stack("env").splitlines():
        if line.startswith("export BALLAST_DATABASE_URL="):
            base = line.split("=", 1)[1].strip("'\"").rsplit("/", 1)[0]
            return f"{base}/{name}"
    raise RuntimeError("stack.py env gave no BALLAST_DATABASE_URL")


def write_book(folder: Path, accounts: int) -> dict[str, int]:
    """The four files, written a row at a time; returns their rows."""
    counts = {"households.csv": 0, "accounts.csv": 0, "sleeves.csv": 0, "restrictions.csv": 0}
    with (
        open(folder / "households.csv", "w") as households,
        open(folder / "accounts.csv", "w") as accounts_csv,
        open(folder / "sleeves.csv", "w") as sleeves,
        open(folder / "restrictions.csv", "w") as restrictions,
    ):
        households.write("household_id,name\n")
        accounts_csv.write(
            "account_id,household_id,name,account_type,model_id,min_trade_value,"
            "relief_method,rebalance_range\n"
        )
        sleeves.write("account_id,sleeve_id,model_id,weight,band_kind,band_width\n")
        restrictions.write("account_id,kind,scope,value,source,reason\n")
        for i in range(accounts):
            household = f"HH-{i // 2:06d}"
            if i % 2 == 0:
                households.write(f'{household},"Family {i // 2}, of {household}"\n')
                counts["households.csv"] += 1
            account = f"ACC-{i:06d}"
            kind = "ira" if i % 3 == 0 else "taxable"
            relief = "hifo" if i % 4 == 0 else ""
            if i % 10 == 0:  # a UMA: three sleeves
                accounts_csv.write(f"{account},{household},Account {i},{kind},,,{relief},band\n")
                for sleeve, weight, band in (("core", "0.5", "0.05"), ("bonds", "0.3", "0.03")):
                    model = MODELS[(i + len(sleeve)) % len(MODELS)]
                    sleeves.write(f"{account},{sleeve},{model},{weight},absolute,{band}\n")
                sleeves.write(f"{account},intl,{MODELS[(i + 7) % len(MODELS)]},0.2,relative,0.1\n")
                counts["sleeves.csv"] += 3
            else:
                model = MODELS[i % len(MODELS)]
                accounts_csv.write(
                    f"{account},{household},Account {i},{kind},{model},25.00,{relief},\n"
                )
            counts["accounts.csv"] += 1
            if i % 10 == 5:
                if i % 20 == 5:
                    restrictions.write(f"{account},do_not_buy,security,XOM,client,no oil\n")
                else:
                    restrictions.write(f"{account},do_not_hold,list,esg,compliance,ESG screen\n")
                counts["restrictions.csv"] += 1
    return counts


async def chunks(path: Path) -> AsyncIterator[bytes]:
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while block := await asyncio.to_thread(file.read, CHUNK):
            yield block
    finally:
        file.close()


async def prepare(db: Database) -> None:
    async with unit_of_work(db, "bench") as uow:
        for model_id in MODELS:
            await service.remember_model(
                uow,
                "demo",
                ModelChangedV1(
                    model_id=model_id,
                    name=model_id,
                    version=1,
                    changed_by="bench",
                    targets=[ModelTargetV1(symbol="AAA", weight=Decimal(1))],
                ),
            )
        await service.put_security_list(
            uow, "demo", "bench", "esg", SecurityListIn(name="ESG", symbols=["XOM", "CVX"])
        )


async def run(accounts: int, keep: bool) -> dict[str, Any]:
    name = f"ballast_bench_account_{os.getpid()}"
    db = await migrated_database(spec, scratch_database(name))
    seconds: dict[str, float] = {}
    try:
        await prepare(db)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            started = time.perf_counter()
            rows = write_book(folder, accounts)
            seconds["write_csv_files"] = time.perf_counter() - started
            rss_before = peak_rss_mib()
            load_id = f"bench-{accounts}"
            started = time.perf_counter()
            for file in rows:
                async with unit_of_work(db, spec.name) as uow:
                    await loads.stage_file(
                        uow.session, BOOK_LOAD, "demo", load_id, file, chunks(folder / file)
                    )
            seconds["stage_copy"] = time.perf_counter() - started
        options = LoadOptions(as_of=date(2026, 12, 4), tenant="demo")
        started = time.perf_counter()
        async with db.sessions() as session, session.begin():
            checked = await loads.validate(session, BOOK_LOAD, load_id, options)
        seconds["validate"] = time.perf_counter() - started
        if not checked["valid"]:
            raise RuntimeError(f"the generated book is not valid: {checked['problems'][:5]}")

        inner: dict[str, float] = {}

        async def timed_apply(uow: UnitOfWork, staged: StagedLoad) -> dict[str, Any]:
            began = time.perf_counter()
            result = await BOOK_LOAD.apply(uow, staged)
            inner["writes_and_events"] = time.perf_counter() - began
            return result

        timed = dataclasses.replace(BOOK_LOAD, apply=timed_apply)
        started = time.perf_counter()
        async with unit_of_work(db, spec.name) as uow:
            result = await loads.apply(uow, timed, load_id, options)
        seconds["apply_total"] = time.perf_counter() - started
        seconds["apply_writes_and_events"] = inner["writes_and_events"]
        seconds["apply_checks_again_and_commit"] = (
            seconds["apply_total"] - inner["writes_and_events"]
        )
        async with db.sessions() as session:
            events = (
                await session.execute(
                    text("SELECT count(*) FROM outbox WHERE topic = 'account-changed'")
                )
            ).scalar_one()
        total = seconds["stage_copy"] + seconds["validate"] + seconds["apply_total"]
        return {
            "benchmark": "account-svc book load",
            "accounts": accounts,
            "rows": rows,
            "result": {k: v for k, v in result.items() if k not in ("load_id", "status")},
            "account_changed_events": int(events),
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "staged_validated_applied_seconds": round(total, 3),
            "accounts_per_second": round(accounts / total),
            "peak_rss_mib": {
                "after_writing_files": round(rss_before, 1),
                "at_end": round(peak_rss_mib(), 1),
            },
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        await db.dispose()
        if not keep:
            stack("dropdb", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.accounts, args.keep_db)), indent=2))


if __name__ == "__main__":
    main()
