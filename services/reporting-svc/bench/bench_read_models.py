"""reporting-svc's read models at book scale (a benchmark, not a test).

Applies holdings-reconciled v2 snapshots (30 positions of 3 lots each by default) for N
accounts in consumer batches through the real consumer path (envelope decoding, inbox,
batch handlers) on real Postgres, then a second snapshot of every account as fills leave
it (one lot partly sold, one lot bought: what the settle stage of a model change sends),
then drift verdicts, a run's chunks and a price change, and times the dashboard's list and
summary requests with the whole book stored. Prints JSON; `consumer_cpu_s` is this
process' CPU time in the consumer path (steadier than wall time on a shared machine).

    .venv/bin/python services/reporting-svc/bench/bench_read_models.py --accounts 20000

`--drift-only` applies just the accounts and one scan's drift-detected events (each with
`--drift-securities` securities' drift, as rebalance-svc sends them) and reports the
consumer's CPU time for the drift events.

Needs the local stack (`python3 scripts/stack.py up`); uses a database of its own, dropped
at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from aiokafka.structs import ConsumerRecord
from ballast_common.app import create_app
from ballast_common.consumer import BatchProcessor
from ballast_common.contracts import events as ev
from ballast_common.contracts.envelope import Envelope
from ballast_common.testing import (
    TEST_TENANT,
    bearer,
    envelope,
    migrated_database,
    unit_of_work,
    with_test_issuer,
)
from reporting_svc import repository as repo
from reporting_svc.handlers import SUBSCRIPTIONS
from reporting_svc.main import spec
from reporting_svc.settings import Settings
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def stack(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def database_url(name: str) -> str:
    env = dict(
        line[len("export ") :].split("=", 1) for line in stack("env").splitlines() if "=" in line
    )
    base = env["BALLAST_DATABASE_URL"].strip("'\"").rsplit("/", 1)[0]
    return f"{base}/{name}"


def record(env: Envelope, offset: int) -> ConsumerRecord[bytes, bytes]:
    value = env.to_bytes()
    return ConsumerRecord(
        topic=env.type,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=env.key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(env.key),
        serialized_value_size=len(value),
        headers=[],
    )


class Book:
    """A generated book: symbols with prices, models, and per account its holdings."""

    def __init__(self, accounts: int, positions: int, lots: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.symbols = [f"S{i:04d}" for i in range(400)]
        self.prices = {s: Decimal(self.rng.randint(500, 50000)) / 100 for s in self.symbols}
        self.models = [f"model-{i:02d}" for i in range(20)]
        self.accounts = [f"ACC-{i:07d}" for i in range(accounts)]
        self.positions = positions
        self.lots = lots

    def model_of(self, i: int) -> str:
        return self.models[i % len(self.models)]

    def account_changed(self, i: int) -> Envelope:
        account = self.accounts[i]
        payload = ev.AccountChangedV1(
            account_id=account,
            household_id=f"HH-{i // 2:07d}",
            name=f"Client {i:07d} {'Trust' if i % 3 else 'IRA'}",
            account_type="ira" if i % 4 == 1 else "taxable",
            model_id=self.model_of(i),
            status="suspended" if i % 50 == 7 else "active",
            auto_approve=i % 5 != 0,
        )
        return envelope(payload, key=account, time=T0 + timedelta(seconds=1))

    def holdings(self, i: int, after_fills: bool = False) -> Envelope:
        """Account i's opening snapshot, or (``after_fills``) the one after a sale of part of
        its first lot and a purchase of a new lot of its second position."""
        account = self.accounts[i]
        rng = random.Random(i)
        positions = []
        for symbol in rng.sample(self.symbols, self.positions):
            lots = [
                ev.LotV1(
                    lot_id=f"{account}-{symbol}-{n}",
                    quantity=Decimal(rng.randint(1, 200)),
                    acquired=date(2024, 1, 2) + timedelta(days=rng.randint(0, 600)),
                    cost_basis=Decimal(rng.randint(100, 90000)) / 10,
                )
                for n in range(self.lots)
            ]
            if after_fills and not positions:
                sold = lots[0]
                lots[0] = sold.model_copy(
                    update={
                        "quantity": (sold.quantity + 1) // 2,
                        "cost_basis": (sold.cost_basis / 2).quantize(Decimal("0.01")),
                    }
                )
            if after_fills and len(positions) == 1:
                lots.append(
                    ev.LotV1(
                        lot_id=f"{account}-{symbol}-fill",
                        quantity=Decimal(7),
                        acquired=date(2026, 11, 21),
                        cost_basis=Decimal("701.75"),
                    )
                )
            positions.append(
                ev.PositionV2(
                    symbol=symbol,
                    quantity=sum((lot.quantity for lot in lots), Decimal(0)),
                    cost_basis=sum((lot.cost_basis for lot in lots), Decimal(0)),
                    lots=lots,
                )
            )
        payload = ev.HoldingsReconciledV2(
            account_id=account,
            as_of=date(2026, 11, 21 if after_fills else 20),
            cash=Decimal(rng.randint(0, 5_000_000)) / 100,
            positions=positions,
            cause="fills" if after_fills else "opening-balance",
            fill_ids=[f"F-{account}-1", f"F-{account}-2"] if after_fills else [],
        )
        at = T0 + timedelta(seconds=6 if after_fills else 2)
        return envelope(payload, key=account, time=at)

    def drift(self, i: int, run_id: uuid.UUID, securities: int = 0) -> Envelope:
        account = self.accounts[i]
        rng = random.Random(-i)
        max_abs = Decimal(rng.randint(0, 800)) / 10000
        measured = []
        for symbol in rng.sample(self.symbols, securities):
            target = Decimal(rng.randint(0, 500)) / 10000
            current = Decimal(rng.randint(0, 500)) / 10000
            measured.append(
                ev.SecurityDriftV1(
                    symbol=symbol,
                    target_weight=target,
                    current_weight=current,
                    drift=current - target,
                )
            )
        payload = ev.DriftDetectedV1(
            run_id=run_id,
            account_id=account,
            model_id=self.model_of(i),
            model_version=1,
            total_value=Decimal(rng.randint(10_000, 10_000_000)),
            max_abs_drift=max_abs,
            tolerance=Decimal("0.02"),
            out_of_tolerance=max_abs > Decimal("0.02"),
            securities=measured,
        )
        return envelope(payload, key=account, time=T0 + timedelta(seconds=3))


def batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


CPU = {"consumer_s": 0.0}  # this process' CPU time in the consumer path


async def apply(processor: BatchProcessor, envelopes: list[Envelope]) -> float:
    records = [record(e, n) for n, e in enumerate(envelopes)]
    started, cpu = time.perf_counter(), time.process_time()
    outcome = await processor.process(records)
    elapsed = time.perf_counter() - started
    CPU["consumer_s"] += time.process_time() - cpu
    assert outcome["processed"] == len(records), outcome
    return elapsed


async def apply_holdings(
    processor: BatchProcessor, book: Book, accounts: int, batch: int, after_fills: bool
) -> dict[str, Any]:
    """Every account's snapshot in consumer batches: timings of the consumer path."""
    handler_s, built_s = 0.0, 0.0
    per_batch = []
    cpu = CPU["consumer_s"]
    started = time.perf_counter()
    for part in batches(accounts, batch):
        t = time.perf_counter()
        envelopes = [book.holdings(i, after_fills) for i in part]
        built_s += time.perf_counter() - t
        spent = await apply(processor, envelopes)
        handler_s += spent
        per_batch.append(spent)
    total = time.perf_counter() - started
    lots = accounts * book.positions * book.lots
    return {
        "events": accounts,
        "lots": lots,
        "wall_s": round(total, 2),
        "generating_events_s": round(built_s, 2),
        "consumer_path_s": round(handler_s, 2),
        "consumer_cpu_s": round(CPU["consumer_s"] - cpu, 2),
        "batch_median_s": round(statistics.median(per_batch), 3),
        "batch_max_s": round(max(per_batch), 3),
        "events_per_s": round(accounts / handler_s),
        "lots_per_s": round(lots / handler_s),
    }


async def apply_drift(
    processor: BatchProcessor, book: Book, args: argparse.Namespace
) -> dict[str, Any]:
    """One scan's drift-detected events in consumer batches: the consumer's CPU time."""
    run_id = uuid.uuid4()
    handler_s, cpu = 0.0, CPU["consumer_s"]
    for part in batches(args.accounts, args.batch):
        envelopes = [book.drift(i, run_id, args.drift_securities) for i in part]
        handler_s += await apply(processor, envelopes)
    return {
        "events": args.accounts,
        "securities_per_event": args.drift_securities,
        "consumer_path_s": round(handler_s, 2),
        "consumer_cpu_s": round(CPU["consumer_s"] - cpu, 2),
        "events_per_s": round(args.accounts / handler_s),
    }


async def timed(client: httpx.AsyncClient, path: str, repeat: int) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = await client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    ordered = sorted(times)
    return {
        "path": path,
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    name = f"ballast_bench_reporting_{uuid.uuid4().hex[:6]}"
    stack("createdb", name)
    url = database_url(name)
    db = await migrated_database(spec, url)
    processor = BatchProcessor(
        "reporting-svc", SUBSCRIPTIONS, lambda: unit_of_work(db, "reporting-svc")
    )
    book = Book(args.accounts, args.positions, args.lots, seed=7)
    result: dict[str, Any] = {
        "accounts": args.accounts,
        "positions_per_account": args.positions,
        "lots_per_position": args.lots,
        "batch_size": args.batch,
    }
    try:
        securities = ev.SecuritiesChangedV1(
            securities=[
                ev.SecurityV1(
                    symbol=s, name=f"{s} Inc", asset_class="US Equity", sector="Tech", price=p
                )
                for s, p in book.prices.items()
            ]
        )
        await apply(processor, [envelope(securities, key="security-master", time=T0)])
        started = time.perf_counter()
        for part in batches(args.accounts, args.batch):
            await apply(processor, [book.account_changed(i) for i in part])
        result["account_changed_s"] = round(time.perf_counter() - started, 2)
        if args.drift_only:
            result["drift_detected"] = await apply_drift(processor, book, args)
            return result

        result["holdings_reconciled"] = await apply_holdings(
            processor, book, args.accounts, args.batch, after_fills=False
        )
        result["holdings_reconciled_after_fills"] = await apply_holdings(
            processor, book, args.accounts, args.batch, after_fills=True
        )

        run_id = uuid.uuid4()
        started = time.perf_counter()
        for part in batches(args.accounts, args.batch):
            await apply(processor, [book.drift(i, run_id, args.drift_securities) for i in part])
        result["drift_detected_s"] = round(time.perf_counter() - started, 2)
        chunks = [
            envelope(
                ev.RebalanceChunkCompletedV1(
                    run_id=run_id, chunk=c, chunks=len(range(0, args.accounts, 200)),
                    kind="scan", trigger="scan", model_id="*", model_version=0,
                    status="completed", accounts=len(part), accounts_evaluated=len(part),
                    accounts_out_of_tolerance=0, accounts_skipped=0, proposals=0, trades=0,
                ),
                key=str(run_id), time=T0 + timedelta(seconds=4),
            )
            for c, part in enumerate(batches(args.accounts, 200))
        ]  # fmt: skip
        started = time.perf_counter()
        for start in range(0, len(chunks), args.batch):
            await apply(processor, chunks[start : start + args.batch])
        result["chunks_completed_s"] = round(time.perf_counter() - started, 3)

        moved = book.symbols[:4]
        new_prices = ev.SecuritiesChangedV1(
            securities=[
                ev.SecurityV1(
                    symbol=s, name=f"{s} Inc", asset_class="US Equity", sector="Tech",
                    price=book.prices[s] + Decimal("1.25"),
                )
                for s in moved
            ]
        )  # fmt: skip
        async with db.engine.connect() as conn:
            holders = (
                await conn.execute(
                    text("SELECT COUNT(DISTINCT account_id) FROM positions WHERE symbol = ANY(:s)"),
                    {"s": moved},
                )
            ).scalar_one()
        spent = await apply(
            processor,
            [envelope(new_prices, key="security-master", time=T0 + timedelta(seconds=5))],
        )
        result["price_change"] = {
            "symbols": len(moved),
            "accounts_revalued": holders,
            "s": round(spent, 3),
        }

        # the book's events are the test tenant's; a sponsor of it reads them
        settings = with_test_issuer(Settings())
        app = create_app(spec, settings)
        app.state.runtime = SimpleNamespace(db=db, settings=settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://reporting",
            headers=bearer(TEST_TENANT, ["sponsor"]),
        ) as client:
            paths = [
                "/summary",
                "/accounts?limit=25&sort=max_drift&order=desc",  # the dashboard's default
                "/accounts?limit=25&sort=market_value&order=desc",
                "/accounts?limit=25&sort=account_id&order=asc",
                "/accounts?limit=25&sort=name&order=asc",
                "/accounts?limit=25&sort=cash&order=asc&offset=10000",
                f"/accounts?limit=25&sort=max_drift&order=desc&model_id={book.models[3]}",
                "/accounts?limit=25&sort=max_drift&order=desc&out_of_tolerance=true",
                "/accounts?limit=25&status=suspended&sort=market_value&order=desc",
                "/accounts?limit=25&search=0001234",
                f"/accounts/{book.accounts[args.accounts // 2]}",
                "/runs?limit=6",
                f"/runs/{run_id}",
                f"/runs/{run_id}/accounts?limit=500",
                "/models",
            ]
            for path in paths:
                await client.get(path)  # warm
            result["requests"] = [await timed(client, p, args.repeat) for p in paths]
            # the summary of a tenant that shares the book: summed over its rows, not tallied
            summed = []
            for _ in range(args.repeat):
                async with db.sessions() as session:
                    started = time.perf_counter()
                    await repo.tenant_summary_counts(session, TEST_TENANT, from_tallies=False)
                    summed.append((time.perf_counter() - started) * 1000)
            result["summary_summed_over_rows_median_ms"] = round(statistics.median(summed), 2)
            summary = (await client.get("/summary")).json()
            result["summary"] = {
                k: summary[k]
                for k in ("accounts", "accounts_out_of_tolerance", "total_market_value")
            }
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return result
    finally:
        await db.dispose()
        if not args.keep:
            stack("dropdb", name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="bench_read_models.py")
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--positions", type=int, default=30)
    parser.add_argument("--lots", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--drift-securities", type=int, default=30)
    parser.add_argument(
        "--drift-only", action="store_true", help="only accounts and one scan's drift"
    )
    parser.add_argument("--keep", action="store_true", help="keep the database")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
