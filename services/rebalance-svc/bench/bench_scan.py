"""Benchmark of rebalance-svc's drift scan per chunk (a benchmark, not a test); prints JSON.

    .venv/bin/python services/rebalance-svc/bench/bench_scan.py \
        [--database postgresql://ballast:ballast@127.0.0.1:15432/ballast_scale3k] \
        [--chunk-size 100] [--repeats 2] [--limit N] [--plain-only] [--profile] [--digest]

Runs the scan of every chunk of the database's book (rebalance-svc's schema `rebalance`, in
account-id order, as a run plans them), each in its own transaction that is ROLLED BACK, two
ways, alternating chunk by chunk so both see the same machine load:
  * before: the scan as it was (`preparation.prepare` for every account, the book laid out
    through `plan_sleeve` only: `book_arrays(..., vectorized=False)`, one drift-detected at a
    time with `engine_input.drift_event_json`);
  * after: `service._scan_chunk`, i.e. `scan.scan_chunk` (plain SMAs as arrays laid out with
    numpy, UMAs and restricted SMAs as engine Accounts, one reference from light queries,
    `prepare` only for the accounts it skips; payloads written for the chunk at once).
A chunk's time runs from reading its accounts to its events written to the outbox (into a
temporary table that shadows the outbox in the rolled-back transaction: nothing is written
to the database). It reports ms/account for each, wall clock and this process's CPU time
(the best of the repeats: the machine is shared, the database's own work shows only in the
wall clock), checks that both publish the same payloads (byte for byte) and skip the same
accounts, with --profile where the `after` scan's time goes, and with --digest a hash of
the `after` scan's payloads, skips and counts (chunk by chunk), to show a change of the code
leaves its output byte for byte the same.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from ballast_common.contracts.events import RebalanceChunkRequestedV1
from ballast_common.db import Database
from ballast_common.uow import UnitOfWork
from ballast_engine.drift import book_arrays, scan_drift
from ballast_engine.model import Book
from rebalance_svc import preparation, scan, service
from rebalance_svc import repository as repo
from rebalance_svc.engine_input import drift_event_json, scanned_accounts
from rebalance_svc.settings import Settings
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

DATABASE = "postgresql://ballast:ballast@127.0.0.1:15432/ballast_scale3k"
SHADOW_OUTBOX = "CREATE TEMP TABLE outbox (LIKE rebalance.outbox INCLUDING ALL) ON COMMIT DROP"


async def legacy_scan(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    accounts: list[Any],
    settings: Settings,
    tally: service.Tally,
) -> None:
    """The chunk's scan as `service._scan_chunk` did it before `scan.py`."""
    prepared = await preparation.prepare(uow.session, accounts, settings, [], tax=False)
    tally.skipped.update(prepared.skipped)
    arrays, failures = book_arrays(
        Book(prepared.reference, tuple(prepared.accounts.values())), vectorized=False
    )
    for failure in failures:
        tally.skipped[failure.account_id] = failure.error
    for verdict in scanned_accounts(arrays, scan_drift(arrays)):
        tally.accounts_evaluated += 1
        tally.accounts_out_of_tolerance += int(verdict.out_of_tolerance)
        uow.publish_json(
            scan.DriftDetectedV1,
            drift_event_json(request.run_id, prepared.labels[verdict.account_id], verdict),
            key=verdict.account_id,
            tenant=prepared.rows[verdict.account_id].tenant,
        )


async def new_scan(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    accounts: list[Any],
    settings: Settings,
    tally: service.Tally,
) -> None:
    await service._scan_chunk(uow, request, accounts, settings, tally)


ScanFn = Callable[
    [UnitOfWork, RebalanceChunkRequestedV1, list[Any], Settings, service.Tally], Awaitable[None]
]


async def one_chunk(
    session: AsyncSession, scan_fn: ScanFn, ids: list[str], settings: Settings
) -> tuple[tuple[float, float], service.Tally, dict[str, bytes]]:
    """One chunk scanned in a transaction that is rolled back: its time (wall clock, and CPU
    time of this process), tally and payloads."""
    await session.execute(text(SHADOW_OUTBOX))
    uow = UnitOfWork(session, "rebalance-svc")
    request = RebalanceChunkRequestedV1(
        run_id=uuid.UUID(int=0),
        chunk=0,
        chunks=1,
        kind="scan",
        trigger="scan",
        model_id="*",
        model_version=0,
        account_ids=ids,
    )
    tally = service.Tally()
    started, cpu = time.perf_counter(), time.process_time()
    accounts = await repo.accounts_by_ids(session, ids)
    await scan_fn(uow, request, accounts, settings, tally)
    messages = list(uow._pending)
    await uow.flush_events()
    elapsed = (time.perf_counter() - started, time.process_time() - cpu)
    await session.rollback()
    payloads = {m.key: _payload(m.value) for m in messages}
    return elapsed, tally, payloads


def _payload(envelope: bytes) -> bytes:
    """The payload's bytes as written (the envelope's last field: `,"payload":{...}}`)."""
    return envelope[envelope.index(b',"payload":') + len(b',"payload":') : -1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="only the first N accounts")
    parser.add_argument("--profile", action="store_true", help="where the time goes (cProfile)")
    parser.add_argument("--digest", action="store_true", help="a hash of the `after` output")
    parser.add_argument(
        "--plain-only", action="store_true", help="only the SMAs without restrictions"
    )
    args = parser.parse_args()
    db = Database(args.database, "rebalance", pool_size=1)
    settings = Settings()
    which = "WHERE model_id IS NOT NULL AND restrictions = '[]'" if args.plain_only else ""
    async with db.sessions() as session:
        query = text(f"SELECT account_id FROM accounts {which}")
        ids = list((await session.execute(query)).scalars())
    ids.sort()
    ids = ids[: args.limit] if args.limit else ids
    chunks = [ids[i : i + args.chunk_size] for i in range(0, len(ids), args.chunk_size)]
    best: dict[str, float] = {}
    mismatches: list[str] = []
    digests: set[str] = set()
    for _ in range(args.repeats):
        digest = hashlib.sha256()
        totals: dict[str, float] = defaultdict(float)
        for chunk in chunks:
            seen = {}
            for name, fn in (("before", legacy_scan), ("after", new_scan)):
                async with db.sessions() as session:
                    (wall, cpu), tally, payloads = await one_chunk(session, fn, chunk, settings)
                totals[name] += wall
                totals[f"{name}_cpu"] += cpu
                seen[name] = (tally.skipped, tally.accounts_evaluated, payloads)
            if seen["before"] != seen["after"]:
                mismatches.append(chunk[0])
            _add_to_digest(digest, *seen["after"])
        digests.add(digest.hexdigest())
        for name, total in totals.items():
            best[name] = min(best.get(name, float("inf")), total)
    breakdown = await profile_after(db, chunks, settings) if args.profile else {}
    await db.dispose()
    per_account = {k: round(v * 1000 / len(ids), 3) for k, v in best.items()}
    print(
        json.dumps(
            {
                "database": args.database.rsplit("/", 1)[-1],
                "plain_smas_only": args.plain_only,
                "accounts": len(ids),
                "chunks": len(chunks),
                "chunk_size": args.chunk_size,
                "repeats": args.repeats,
                "seconds": {k: round(v, 3) for k, v in best.items()},
                "ms_per_account": per_account,
                "speedup": round(best["before"] / best["after"], 2),
                "speedup_cpu": round(best["before_cpu"] / best["after_cpu"], 2),
                "accounts_per_second_after": round(len(ids) / best["after"]),
                "same_events_and_skips": not mismatches,
                "chunks_that_differ": mismatches[:10],
                "after_breakdown_share": breakdown,
                **({"digest": " ".join(sorted(digests))} if args.digest else {}),
            },
            indent=2,
        )
    )


def _add_to_digest(
    digest: hashlib._Hash, skipped: dict[str, str], evaluated: int, payloads: dict[str, bytes]
) -> None:
    """A chunk's output in a stable order: its skips, its count, each payload by account."""
    digest.update(json.dumps(sorted(skipped.items())).encode())
    digest.update(str(evaluated).encode())
    for key in sorted(payloads):
        digest.update(key.encode() + b"\0" + payloads[key] + b"\0")


async def profile_after(
    db: Database, chunks: list[list[str]], settings: Settings
) -> dict[str, float]:
    """Where the `after` scan spends its time (cProfile over every chunk, cumulative time of
    its main steps as a share of the whole)."""
    import cProfile
    import pstats

    profile = cProfile.Profile()
    for chunk in chunks:
        async with db.sessions() as session:
            profile.enable()
            await one_chunk(session, new_scan, chunk, settings)
            profile.disable()
    stats = pstats.Stats(profile)
    entries: dict[str, float] = {}
    total = 0.0
    for (file, _line, name), (_cc, _nc, _tt, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name == "one_chunk":
            total = cumulative
        for label, (where, what) in STEPS.items():
            if file.endswith(where) and name == what:
                entries[label] = entries.get(label, 0.0) + cumulative
    return {k: round(v / total, 3) for k, v in entries.items()} if total else {}


STEPS = {
    "accounts_by_ids": ("repository.py", "accounts_by_ids"),
    "prepare (accounts skipped)": ("preparation.py", "prepare"),
    "read the chunk (SQL)": ("scan.py", "_read_chunk"),
    "reference (SQL + reference_for)": ("preparation.py", "engine_reference"),
    "UMAs and restricted SMAs (SQL + engine_account)": ("scan.py", "_engine_accounts"),
    "sma_book_arrays (engine)": ("drift.py", "sma_book_arrays"),
    "  of which plan_sleeve": ("tactical.py", "plan_sleeve"),
    "scan_drift (engine)": ("drift.py", "scan_drift"),
    "scanned_accounts (verdicts)": ("engine_input.py", "scanned_accounts"),
    "drift_payloads (JSON)": ("scan.py", "drift_payloads"),
    "publish_json": ("uow.py", "publish_json"),
    "flush to the outbox": ("uow.py", "flush_events"),
}


if __name__ == "__main__":
    asyncio.run(main())
