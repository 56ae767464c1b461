"""Benchmark of taxlot-svc's book load from files on the real PostgreSQL; writes JSON.

    uv run python services/taxlot-svc/bench/bench_book_load.py --accounts 10000 \
        [--database-url postgresql://ballast:ballast@127.0.0.1:15432/ballast_bench_taxlot] \
        [--out bench/results/taxlot_book_load.json] [--keep DIR]

Needs the local stack (``python3 scripts/stack.py status``) and a database of its own
(``python3 scripts/stack.py createdb NAME``); the schema is migrated on start. A benchmark,
not a test: issue 8's goal is 100,000 accounts (about 6M positions and 17M lots) in
minutes.

The book is generated as issue 8 describes it: 10% of the accounts hold 300 names, the
others 20 to 40; 2 to 4 lots per position; 10% are three-sleeve UMAs (their lots carry a
sleeve); one to three accounts per household. The files are written to a temporary folder
(``--keep`` keeps them), then staged (streamed with COPY, as ``PUT /book-loads/...``),
validated and applied as the service's routes do. Reports the time of each stage, rows per
second, and where the apply's time goes (each set-based step, the replays, the
holdings-reconciled pages), plus the outbox bytes written and the process' peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import platform
import random
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ballast_common import book_loads as loads
from ballast_common import uow as uow_module
from ballast_common.book_loads import LoadOptions
from ballast_common.testing import migrated_database, unit_of_work
from sqlalchemy import text
from taxlot_svc import book_load
from taxlot_svc import repository as repo
from taxlot_svc.main import spec

DEFAULT_URL = "postgresql://ballast:ballast@127.0.0.1:15432/ballast_bench_taxlot"
AS_OF = date(2026, 11, 30)
SYMBOLS = 3000
CHUNK = 1 << 20


def generate(folder: Path, accounts: int, run: str, seed: int = 8) -> dict[str, int]:
    """Write the five files of taxlot-svc for ``accounts`` accounts; returns rows per file."""
    rng = random.Random(seed)
    symbols = [f"S{n:04d}" for n in range(SYMBOLS)]
    counts = {"accounts.csv": 0, "cash.csv": 0, "positions.csv": 0, "lots.csv": 0}
    files = {name: (folder / name).open("w", encoding="utf-8") for name in counts}
    files["accounts.csv"].write("account_id,household_id,name,account_type\n")
    files["cash.csv"].write("account_id,amount\n")
    files["positions.csv"].write("account_id,symbol,quantity\n")
    files["lots.csv"].write("account_id,symbol,lot_id,quantity,acquired_on,cost_basis,sleeve_id\n")
    household, left_in_household = 0, 0
    try:
        for n in range(accounts):
            if left_in_household == 0:
                household += 1
                left_in_household = rng.randint(1, 3)
            left_in_household -= 1
            account = f"A{run}-{n:06d}"
            kind = "ira" if rng.random() < 0.15 else "taxable"
            files["accounts.csv"].write(f"{account},H{run}-{household:06d},Account {n},{kind}\n")
            files["cash.csv"].write(f"{account},{rng.randint(0, 5_000_000) / 100:.2f}\n")
            names = 300 if n % 10 == 0 else rng.randint(20, 40)
            uma = n % 10 == 5
            for k, sym in enumerate(rng.sample(symbols, names)):
                lots = rng.randint(2, 4)
                quantities = [rng.randint(1, 400) for _ in range(lots)]
                files["positions.csv"].write(f"{account},{sym},{sum(quantities)}\n")
                sleeve = ("core", "income", "growth")[k % 3] if uma else ""
                for j, q in enumerate(quantities):
                    on = AS_OF - timedelta(days=rng.randint(1, 3650))
                    basis = q * rng.randint(500, 50_000) / 100
                    files["lots.csv"].write(
                        f"{account},{sym},L{k}-{j},{q},{on.isoformat()},{basis:.2f},{sleeve}\n"
                    )
                    counts["lots.csv"] += 1
                counts["positions.csv"] += 1
            counts["accounts.csv"] += 1
            counts["cash.csv"] += 1
    finally:
        for f in files.values():
            f.close()
    with (folder / "prices.csv").open("w", encoding="utf-8") as f:
        f.write("symbol,price\n")
        for sym in symbols:
            f.write(f"{sym},{rng.randint(500, 50_000) / 100:.2f}\n")
    counts["prices.csv"] = len(symbols)
    return counts


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


class Timings:
    """Wall time of the apply's steps (the service's functions, wrapped for the run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, owner: Any, name: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        @functools.wraps(original)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

        setattr(owner, name, timed)


async def run(url: str, accounts: int, keep: Path | None) -> dict[str, Any]:
    db = await migrated_database(spec, url)
    run_id = uuid.uuid4().hex[:6]
    folder = keep or Path(tempfile.mkdtemp(prefix="taxlot-book-"))
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = generate(folder, accounts, run_id)
    generated = time.perf_counter() - started
    bytes_in = sum((folder / n).stat().st_size for n in rows)
    load_id = f"bench-{run_id}"
    options = LoadOptions(as_of=AS_OF, tenant="bench")
    stage_seconds: dict[str, float] = {}
    for name in ("prices.csv", "accounts.csv", "cash.csv", "positions.csv", "lots.csv"):
        started = time.perf_counter()
        async with unit_of_work(db, "bench") as uow:
            await loads.stage_file(
                uow.session, book_load.SPEC, options.tenant, load_id, name, _read(folder / name)
            )
        stage_seconds[name] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    async with db.sessions() as session, session.begin():
        checked = await loads.validate(session, book_load.SPEC, load_id, options)
    validate = time.perf_counter() - started
    assert checked["valid"], checked["problems"][:5]
    timings = Timings()
    for name in (
        "lock_writes",
        "lots_refused_by_actions",
        "load_prices",
        "load_account_facts",
        "load_books",
        "load_typed_lots",
        "load_households_to_replay",
        "load_tax_inputs",
        "load_ledger_entries",
        "load_lots",
        "load_household_states",
        "book_load_problems",
        "position_documents",
    ):
        timings.wrap(repo, name)
    for name in ("_replay", "_publish"):
        timings.wrap(book_load, name)
    timings.wrap(loads, "row_problems")
    timings.wrap(uow_module, "add_to_outbox")  # the events' outbox rows
    started = time.perf_counter()
    async with unit_of_work(db, "bench") as uow:
        result = await loads.apply(uow, book_load.SPEC, load_id, options)
    apply = time.perf_counter() - started
    async with db.sessions() as session:
        outbox = (
            await session.execute(
                text(
                    "SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox"
                    " WHERE topic = 'holdings-reconciled' AND key LIKE :p"
                ),
                {"p": f"A{run_id}-%"},
            )
        ).one()
    await db.dispose()
    if keep is None:
        shutil.rmtree(folder)
    stage_total = sum(stage_seconds.values())
    lots = rows["lots.csv"]
    return {
        "benchmark": "taxlot-svc book load from files",
        "python": platform.python_version(),
        "accounts": accounts,
        "rows": rows,
        "csv_megabytes": round(bytes_in / 1e6, 1),
        "generate_seconds": round(generated, 2),
        "stage_seconds": stage_seconds,
        "stage_total_seconds": round(stage_total, 2),
        "stage_rows_per_second": round(sum(rows.values()) / stage_total),
        "validate_seconds": round(validate, 2),
        "validate_lots_per_second": round(lots / validate),
        "apply_seconds": round(apply, 2),
        "apply_lots_per_second": round(lots / apply),
        "apply_steps_seconds": {k: round(v, 2) for k, v in timings.seconds.items()},
        "total_seconds": round(stage_total + validate + apply, 2),
        "result": {k: v for k, v in result.items() if k not in ("load_id", "status")},
        "holdings_reconciled": outbox[0],
        "holdings_reconciled_megabytes": round(outbox[1] / 1e6, 1),
        "peak_rss_megabytes": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.database_url, args.accounts, args.keep))
    out = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(out, encoding="utf-8")
    print(out, end="")


if __name__ == "__main__":
    main()
