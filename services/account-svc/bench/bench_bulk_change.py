"""Timing of a bulk change over a whole book (issue 13); prints JSON. A benchmark, not a test.

    .venv/bin/python services/account-svc/bench/bench_bulk_change.py [--accounts 100000]

On a scratch database of the local stack, created and dropped here: loads the book of
bench_book_load.py (its files, staged, validated and applied), then previews "do not buy XYZ"
for every account of the tenant (a filter with no conditions), exempts one account, and applies
it, through account-svc's service functions as its /bulk-changes routes call them. Reports
each stage's seconds, the accounts changed, the audit records and account-changed events
written, and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from account_svc import bulk_changes
from account_svc.book_load import BOOK_LOAD
from account_svc.bulk_changes_schemas import BulkChangeIn, ExemptionIn
from account_svc.main import spec
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.db import Database
from ballast_common.testing import migrated_database, unit_of_work
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
import bench_book_load as book

TENANT, ACTOR = "demo", "bench"
CHANGE = {
    "selection": {"conditions": []},
    "change": {
        "kind": "add_restriction",
        "restriction": {
            "kind": "do_not_buy",
            "scope": "security",
            "value": "XYZ",
            "source": "firm",
            "reason": "bench",
        },
    },
    "note": "bench",
}


async def load_book(db: Database, accounts: int) -> None:
    await book.prepare(db)
    load_id = f"bench-{accounts}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = book.write_book(folder, accounts)
        for file in rows:
            async with unit_of_work(db, spec.name) as uow:
                await loads.stage_file(
                    uow.session, BOOK_LOAD, TENANT, load_id, file, book.chunks(folder / file)
                )
    options = LoadOptions(as_of=date(2026, 12, 4), tenant=TENANT)
    async with unit_of_work(db, spec.name) as uow:
        await loads.apply(uow, BOOK_LOAD, load_id, options)


async def count(db: Database, sql: str) -> int:
    async with db.sessions() as session:
        return int((await session.execute(text(sql))).scalar_one())


async def run(accounts: int, keep: bool) -> dict[str, Any]:
    name = f"ballast_bench_bulk_{os.getpid()}"
    db = await migrated_database(spec, book.scratch_database(name))
    seconds: dict[str, float] = {}
    try:
        started = time.perf_counter()
        await load_book(db, accounts)
        seconds["load_book"] = time.perf_counter() - started
        events_before = await count(
            db, "SELECT count(*) FROM outbox WHERE topic = 'account-changed'"
        )
        audit_before = await count(db, "SELECT count(*) FROM audit_records")
        body = BulkChangeIn.model_validate(CHANGE)
        started = time.perf_counter()
        async with unit_of_work(db, spec.name) as uow:
            previewed = await bulk_changes.preview(uow, TENANT, ACTOR, body)
        seconds["preview"] = time.perf_counter() - started
        bulk_change_id = previewed.bulk_change_id
        started = time.perf_counter()
        async with db.sessions() as session:
            page = await bulk_changes.accounts(
                session,
                TENANT,
                bulk_change_id,
                with_problems=None,
                exempted=None,
                limit=101,
                offset=50_000 if accounts > 50_100 else 0,
            )
        seconds["read_a_page_of_accounts"] = time.perf_counter() - started
        async with unit_of_work(db, spec.name) as uow:
            exemption = ExemptionIn(account_id=page[0].account_id, reason="bench")
            await bulk_changes.exempt(uow, TENANT, ACTOR, bulk_change_id, exemption)
        started = time.perf_counter()
        async with unit_of_work(db, spec.name) as uow:
            applied = await bulk_changes.apply(uow, TENANT, ACTOR, bulk_change_id)
        seconds["apply"] = time.perf_counter() - started
        events = (
            await count(db, "SELECT count(*) FROM outbox WHERE topic = 'account-changed'")
            - events_before
        )
        audit = await count(db, "SELECT count(*) FROM audit_records") - audit_before
        return {
            "benchmark": "account-svc bulk change",
            "accounts": accounts,
            "counts": previewed.counts.model_dump(),
            "changed": applied.changed,
            "account_changed_events": events,
            "audit_records": audit,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "peak_rss_mib": round(book.peak_rss_mib(), 1),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
    finally:
        await db.dispose()
        if not keep:
            book.stack("dropdb", name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.accounts, args.keep_db)), indent=2))


if __name__ == "__main__":
    main()
