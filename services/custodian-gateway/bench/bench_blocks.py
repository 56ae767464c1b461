"""Benchmark of block orders (issue 8): approved trades -> blocks -> custodian -> allocation.

    .venv/bin/python services/custodian-gateway/bench/bench_blocks.py \
        [--trades 50000] [--symbols 40] [--per-account 5] [--cancel-rest 0.0] [--windows]

Runs custodian-gateway's own service functions, in one process, on a scratch database of the
local stack (`python3 scripts/stack.py up`) and the custodian simulator in process (its clock
is moved by hand, so no step waits for simulated latency). Prints JSON with the time of each
step:
  * approve: the trades-approved batch handler, 500 events (accounts) per consumer batch;
  * block: pending allocations -> block orders (FOR UPDATE SKIP LOCKED, one statement);
  * send: POST /orders of the blocks;
  * poll_and_allocate: the executions applied to the blocks and, as each block is done, its
    fills shared among its allocations and one event per allocation written to the outbox.
`--windows` also measures what the block window and the longest wait do while a fan-out is
still arriving: the approvals are stored back to back, as fast as one consumer stores them,
while a blocker runs with each setting, and the number of blocks per security and side and
the time until the last trade was in a block are reported.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from ballast_common.auth import Principal, Role
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import TradesApprovedV1, TradeV1
from ballast_common.db import Database
from ballast_common.outbox import unpublished_count
from ballast_common.testing import migrated_database, unit_of_work
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from custodian_gateway.main import spec
from custodian_sim.main import create_app as create_sim
from custodian_sim.settings import SimSettings
from sqlalchemy import text

OPERATOR = Principal("bench", "bench", frozenset({Role.OPERATIONS}))  # reads tenant "bench"

ROOT = Path(__file__).resolve().parents[3]
DATABASE = "ballast_bench_blocks"
CUSTODIAN = "default"
BLOCK_ACCOUNT = "BALLAST-BLOCK"
CONSUMER_BATCH = 500  # trades-approved events per consumer batch (the consumer's default)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _stack(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _database_url() -> str:
    env = {}
    for line in _stack("env").splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    _stack("dropdb", DATABASE)
    _stack("createdb", DATABASE)
    base = env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{DATABASE}".replace("postgresql://", "postgresql+asyncpg://", 1)


def _approvals(trades: int, symbols: int, per_account: int, seed: int) -> list[Delivery]:
    """One trades-approved event per account, `per_account` trades each, over `symbols`."""
    rng = random.Random(seed)
    names = [f"SYM{i:03d}" for i in range(symbols)]
    prices = {s: Decimal(rng.randint(1_000, 50_000)) / 100 for s in names}
    deliveries = []
    for account in range(-(-trades // per_account)):
        count = min(per_account, trades - account * per_account)
        picked = rng.sample(names, count)
        payload = TradesApprovedV1(
            proposal_id=uuid.uuid4(),
            account_id=f"ACC-{account:06d}",
            approved_by="policy:auto-approve",
            trades=[
                TradeV1(
                    trade_id=uuid.uuid4(),
                    symbol=s,
                    side="buy" if rng.random() < 0.6 else "sell",
                    quantity=Decimal(rng.randint(1, 400)),
                    estimated_price=prices[s],
                    estimated_value=prices[s],
                    reason="model-change",
                    explanation="Buy to target.",
                )
                for s in picked
            ],
        )
        envelope = Envelope(
            type="trades-approved",
            version=1,
            tenant="bench",
            key=payload.account_id,
            source="account-svc",
            payload=payload.model_dump(mode="json"),
        )
        deliveries.append(Delivery(envelope, payload))
    return deliveries


def _batches(items: list[Delivery], size: int) -> Iterator[list[Delivery]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _truncate(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("TRUNCATE orders, allocations, executions, poll_cursor, outbox"))


async def _approve_all(db: Database, deliveries: list[Delivery]) -> int:
    stored = 0
    for batch in _batches(deliveries, CONSUMER_BATCH):
        async with unit_of_work(db, "bench") as uow:
            stored += len(await service.record_approved_trades(uow, batch, CUSTODIAN))
    return stored


async def _block_all(db: Database) -> tuple[int, int]:
    blocks = allocations = 0
    while True:
        async with unit_of_work(db, "bench") as uow:
            outcome = await service.block_pending(
                uow,
                custodian=CUSTODIAN,
                block_account=BLOCK_ACCOUNT,
                window_s=0,
                max_wait_s=0,
                limit=50_000,
            )
        blocks += len(outcome.blocks)
        allocations += outcome.allocations
        if not outcome.full:
            return blocks, allocations


async def run(args: argparse.Namespace) -> dict[str, Any]:
    db = await migrated_database(spec, _database_url())
    clock = Clock()
    sim = create_sim(
        SimSettings(
            latency_ms=1,
            latency_jitter_ms=0,
            partial_fill_probability=0.3,
            max_fills=3,
            cancel_rest_probability=args.cancel_rest,
            max_orders_per_request=5000,
            log_level="WARNING",
            store_path=str(Path(tempfile.mkdtemp(prefix="bench-blocks-sim-")) / "book.sqlite3"),
        ),
        clock,
    )
    deliveries = _approvals(args.trades, args.symbols, args.per_account, args.seed)
    steps: dict[str, float] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim), base_url="http://sim"
    ) as http:
        client = CustodianClient(http)

        started = time.perf_counter()
        stored = await _approve_all(db, deliveries)
        steps["approve_s"] = time.perf_counter() - started

        started = time.perf_counter()
        blocks, blocked = await _block_all(db)
        steps["block_s"] = time.perf_counter() - started

        started = time.perf_counter()
        sent = 0
        while True:
            async with unit_of_work(db, "bench") as uow:
                outcome = await service.send_new_orders(uow, client, 500, CUSTODIAN)
            sent += len(outcome.sent)
            if outcome.claimed == 0:
                break
        steps["send_s"] = time.perf_counter() - started

        clock.now += timedelta(seconds=60)  # every planned execution is due
        started = time.perf_counter()
        executions = blocks_done = 0
        while True:
            async with unit_of_work(db, "bench") as uow:
                polled = await service.poll_executions(uow, client, 1000, CUSTODIAN)
            executions += polled.new
            blocks_done += polled.blocks_done
            if not polled.page_full:
                break
        steps["poll_and_allocate_s"] = time.perf_counter() - started

        async with db.sessions() as session:
            events = await unpublished_count(session)
            stats = await service.stats(session, OPERATOR, CUSTODIAN)
        windows = await _windows(db, deliveries) if args.windows else None
    await db.dispose()
    total = sum(steps.values())
    return {
        "trades": args.trades,
        "accounts": len(deliveries),
        "symbols": args.symbols,
        "stored": stored,
        "blocks": blocks,
        "allocations_blocked": blocked,
        "blocks_sent": sent,
        "executions": executions,
        "blocks_done": blocks_done,
        "events_written": events,
        "allocations_by_status": stats["allocations"]["by_status"],
        "steps_s": {k: round(v, 3) for k, v in steps.items()},
        "total_s": round(total, 3),
        "trades_per_s": {
            k.removesuffix("_s"): round(args.trades / v) for k, v in steps.items() if v > 0
        },
        "ms_per_allocation_end_to_end": round(total * 1000 / args.trades, 4),
        "windows": windows,
    }


async def _blocker(db: Database, window_s: float, max_wait_s: float, arrived: asyncio.Event) -> int:
    """The sender loop's blocking steps until the approvals have arrived and all are blocked;
    returns how many blocks it made."""
    count = 0
    while True:
        async with unit_of_work(db, "bench") as uow:
            outcome = await service.block_pending(
                uow,
                custodian=CUSTODIAN,
                block_account=BLOCK_ACCOUNT,
                window_s=window_s,
                max_wait_s=max_wait_s,
                limit=50_000,
            )
        count += len(outcome.blocks)
        if arrived.is_set() and outcome.wait_s is None:
            return count
        if not outcome.full:  # as the sender loop: pause, at most until the next is due
            await asyncio.sleep(min(0.2, outcome.wait_s or 0.2))


async def _windows(db: Database, deliveries: list[Delivery]) -> list[dict[str, Any]]:
    """Blocks per security and side when a blocker runs while the approvals arrive."""
    results = []
    for window, max_wait in ((0.0, 0.0), (0.1, 5.0), (0.25, 1.0), (0.25, 5.0), (0.5, 5.0)):
        await _truncate(db)
        fresh = [
            Delivery(
                d.envelope,
                d.payload.model_copy(
                    update={
                        "trades": [
                            t.model_copy(update={"trade_id": uuid.uuid4()})
                            for t in d.payload.trades
                        ]
                    }
                ),
            )
            for d in deliveries
        ]
        arrived = asyncio.Event()
        task = asyncio.create_task(_blocker(db, window, max_wait, arrived))
        started = time.perf_counter()
        await _approve_all(db, fresh)
        arrival = time.perf_counter() - started
        arrived.set()
        count = await task
        latency = time.perf_counter() - started
        async with db.engine.connect() as conn:
            groups = (
                await conn.execute(text("SELECT count(DISTINCT (symbol, side)) FROM orders"))
            ).scalar_one()
        results.append(
            {
                "window_s": window,
                "max_wait_s": max_wait,
                "arrival_s": round(arrival, 3),
                "blocks": count,
                "blocks_per_security_and_side": round(count / groups, 2),
                "last_trade_blocked_after_s": round(latency, 3),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trades", type=int, default=50_000)
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--per-account", type=int, default=5)
    parser.add_argument("--cancel-rest", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--windows", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
