"""Benchmark of taxlot-svc's book on the real PostgreSQL; writes JSON.

    uv run python services/taxlot-svc/bench/bench_book.py \
        [--database-url postgresql://ballast:ballast@127.0.0.1:15432/ballast_scratch_taxlot2] \
        [--fills 200] [--out bench/results/taxlot_book.json]

Needs the local stack (``python3 scripts/stack.py status``) and a database of its own
(``python3 scripts/stack.py createdb NAME``); the schema is migrated on start.

Scenario: one 500-name account opened with 1,500 lots (its own household), then
``--fills`` fills applied one unit of work each, in date order, alternating buys and sells
over the names (each fill replays the household: see taxlot_svc.book), then one fill dated
before all of them (a late fill). Reports the opening time, fills per second and the
latency of the late fill.
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
from taxlot_svc import service
from taxlot_svc.main import spec
from taxlot_svc.schemas import HoldingsIn

DEFAULT_URL = "postgresql://ballast:ballast@127.0.0.1:15432/ballast_scratch_taxlot2"


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


async def run(url: str, fills: int) -> dict[str, object]:
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--fills", type=int, default=200)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(run(args.database_url, args.fills))
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
