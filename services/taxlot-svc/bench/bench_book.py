"""Benchmark of taxlot-svc's book on the real PostgreSQL; writes JSON.

    uv run python services/taxlot-svc/bench/bench_book.py \
        [--database-url postgresql://ballast:ballast@127.0.0.1:15432/ballast_bench_taxlot] \
        [--fills 200] [--out bench/results/taxlot_book.json]

Needs the local stack (``python3 scripts/stack.py status``) and a database of its own
(``python3 scripts/stack.py createdb NAME``); the schema is migrated on start.

Scenarios:

* one 500-name account opened with 1,500 lots (its own household), then ``--fills`` fills
  applied one unit of work each, in date order, alternating buys and sells over the names
  (the incremental path), then one fill dated before all of them (a late fill: the
  household's security is replayed). Reports the opening time, fills per second, the
  median latency and the late fill's latency.
* consumer batches: ``--accounts`` accounts (20 lots each) opened in one bulk request,
  then 5 fills per account applied in batches of 500 fills per unit of work (as the
  consumer does), and the snapshot loop's publishing: fills per second and
  holdings-reconciled events per batch (coalesced per account).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.testing import migrated_database, unit_of_work
from taxlot_svc import service, snapshots
from taxlot_svc.main import spec
from taxlot_svc.schemas import AccountHoldingsIn, HoldingsIn

DEFAULT_URL = "postgresql://ballast:ballast@127.0.0.1:15432/ballast_bench_taxlot"


def _fill(account: str, symbol: str, side: str, price: str, at: datetime) -> FillsReceivedV1:
    return FillsReceivedV1(
        fill_id=uuid.uuid4().hex,
        client_order_id="bench",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=symbol,
        side=side,
        quantity=Decimal(1),
        price=Decimal(price),
        executed_at=at,
    )


async def run(url: str, fills: int, accounts: int) -> dict[str, object]:
    db = await migrated_database(spec, url)
    account = f"BENCH-{uuid.uuid4().hex[:8]}"
    symbols = [f"B{i:03d}" for i in range(500)]
    body = HoldingsIn.model_validate(
        {
            "tenant": "bench",
            "as_of": "2025-01-02",
            "cash": "1000000",
            "positions": [
                {
                    "symbol": s,
                    "lots": [
                        {"quantity": "10", "cost_basis": "1000", "acquired_on": f"2024-01-0{k + 1}"}
                        for k in range(3)
                    ],
                }
                for s in symbols
            ],
        }
    )
    started = time.perf_counter()
    async with unit_of_work(db, "bench") as uow:
        await service.open_account(uow, account, body, today=date(2026, 11, 22))
    opening = time.perf_counter() - started
    latencies = []
    first_day = datetime(2025, 1, 6, 15, tzinfo=UTC)
    started = time.perf_counter()
    for i in range(fills):
        side = "sell" if i % 2 else "buy"
        at = first_day + timedelta(days=i // 2)
        one = time.perf_counter()
        async with unit_of_work(db, "bench") as uow:
            await service.apply_fill(
                uow, _fill(account, symbols[i % 500], side, "95" if i % 2 else "99", at)
            )
        latencies.append(time.perf_counter() - one)
    elapsed = time.perf_counter() - started
    one = time.perf_counter()
    async with unit_of_work(db, "bench") as uow:
        await service.apply_fill(uow, _fill(account, symbols[7], "buy", "98", first_day))
    late = time.perf_counter() - one
    batch = await consumer_batches(db, accounts)
    await db.dispose()
    return {
        "benchmark": "taxlot-svc book",
        "python": platform.python_version(),
        "lots_opened": 1500,
        "opening_seconds": round(opening, 4),
        "fills": fills,
        "fills_per_second": round(fills / elapsed, 2),
        "fill_latency_ms_median": round(statistics.median(latencies) * 1000, 2),
        "fill_latency_ms_last": round(latencies[-1] * 1000, 2),
        "late_fill_ms": round(late * 1000, 2),
        **batch,
    }


async def consumer_batches(db: object, accounts: int) -> dict[str, object]:
    run = uuid.uuid4().hex[:6]
    ids = [f"BB{run}-{n:05d}" for n in range(accounts)]
    symbols = [f"C{i:03d}" for i in range(40)]
    bodies = [
        AccountHoldingsIn.model_validate(
            {
                "account_id": a,
                "tenant": "bench",
                "as_of": "2025-01-02",
                "cash": "100000",
                "positions": [
                    {
                        "symbol": symbols[(n + k) % 40],
                        "quantity": "10",
                        "cost_basis": "1000",
                        "acquired_on": "2024-03-01",
                    }
                    for k in range(20)
                ],
            }
        )
        for n, a in enumerate(ids)
    ]
    started = time.perf_counter()
    async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
        await service.open_accounts(uow, bodies, today=date(2026, 11, 22))
    bulk_opening = time.perf_counter() - started
    at = datetime(2025, 2, 3, 15, tzinfo=UTC)
    # An account's fills arrive together (its proposal's orders), as in the demo.
    fills = [
        _fill(a, symbols[(n + k) % 40], "sell" if k % 2 else "buy", "101", at)
        for n, a in enumerate(ids)
        for k in range(5)
    ]
    events = 0
    started = time.perf_counter()
    for start in range(0, len(fills), 500):
        async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
            for f in fills[start : start + 500]:
                await service.apply_fill(uow, f)
        async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
            events += await snapshots.publish_pending(uow, limit=100_000)
    elapsed = time.perf_counter() - started
    batches = (len(fills) + 499) // 500
    return {
        "bulk_opening_accounts": accounts,
        "bulk_opening_lots": accounts * 20,
        "bulk_opening_seconds": round(bulk_opening, 3),
        "batch_fills": len(fills),
        "batch_fills_per_second": round(len(fills) / elapsed, 1),
        "holdings_reconciled_per_batch": round(events / batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--fills", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.database_url, args.fills, args.accounts))
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
