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
* consumer batches: ``--accounts`` accounts (20 lots each, households of three) opened in
  one bulk request, then ``--fills-per-account`` fills per account (an account's fills
  arrive together, as its proposal's orders do) applied in batches of ``--batch`` fills
  per unit of work with ``service.apply_fills`` (what the fills consumer does), and the
  snapshot loop's publishing: fills per second and holdings-reconciled events per batch
  (coalesced per account), and this process' CPU time per fill and per event (steadier
  than wall time on a shared machine). ``--one-by-one`` applies the same batches with one
  ``apply_fill`` call per fill inside the unit of work (the consumer before batching), for
  a comparison on the same machine.
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

from ballast_common.contracts.events import AccountChangedV1, FillsReceivedV1
from ballast_common.testing import migrated_database, unit_of_work
from taxlot_svc import service, snapshots, taxes
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


async def run(
    url: str, fills: int, accounts: int, per_account: int, batch_size: int, one_by_one: bool
) -> dict[str, object]:
    db = await migrated_database(spec, url)
    account = f"BENCH-{uuid.uuid4().hex[:8]}"
    symbols = [f"B{i:03d}" for i in range(500)]
    body = HoldingsIn.model_validate(
        {
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
        await service.open_account(uow, "bench", account, body, today=date(2026, 11, 22))
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
    batch = await consumer_batches(db, accounts, per_account, batch_size, one_by_one)
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


async def consumer_batches(
    db: object, accounts: int, per_account: int, batch: int, one_by_one: bool
) -> dict[str, object]:
    run = uuid.uuid4().hex[:6]
    ids = [f"BB{run}-{n:05d}" for n in range(accounts)]
    symbols = [f"C{i:03d}" for i in range(40)]
    async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
        for n, account in enumerate(ids):
            await taxes.account_changed(
                uow,
                AccountChangedV1(
                    account_id=account,
                    household_id=f"HB{run}-{n // 3:05d}",
                    name=account,
                    account_type="ira" if n % 3 == 1 else "taxable",
                    model_id=None,
                    status="active",
                    auto_approve=True,
                ),
            )
    bodies = [
        AccountHoldingsIn.model_validate(
            {
                "account_id": a,
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
    for start in range(0, len(bodies), 2000):
        async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
            await service.open_accounts(
                uow, "bench", bodies[start : start + 2000], today=date(2026, 11, 22)
            )
    bulk_opening = time.perf_counter() - started
    at = datetime(2025, 2, 3, 15, tzinfo=UTC)
    # An account's fills arrive together (its proposal's orders), as in the demo; sells
    # at a loss and buys in the household make wash sales.
    fills = [
        _fill(
            a,
            symbols[(n + k) % 40],
            "sell" if k % 2 else "buy",
            "95" if k % 4 == 1 else "101",
            at,
        )
        for n, a in enumerate(ids)
        for k in range(per_account)
    ]
    events = 0
    applying = applying_cpu = publishing_cpu = 0.0
    started = time.perf_counter()
    for start in range(0, len(fills), batch):
        part = fills[start : start + batch]
        one, cpu = time.perf_counter(), time.process_time()
        async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
            if one_by_one:
                for f in part:
                    await service.apply_fill(uow, f)
            else:
                await service.apply_fills(uow, [(f, None) for f in part])
        applying += time.perf_counter() - one
        applying_cpu += time.process_time() - cpu
        cpu = time.process_time()
        async with unit_of_work(db, "bench") as uow:  # type: ignore[arg-type]
            events += await snapshots.publish_pending(uow, limit=100_000)
        publishing_cpu += time.process_time() - cpu
    elapsed = time.perf_counter() - started
    batches = (len(fills) + batch - 1) // batch
    return {
        "bulk_opening_accounts": accounts,
        "bulk_opening_lots": accounts * 20,
        "bulk_opening_seconds": round(bulk_opening, 3),
        "batch_mode": "one apply_fill per fill" if one_by_one else "apply_fills per batch",
        "batch_size": batch,
        "batch_fills": len(fills),
        "batch_fills_per_second": round(len(fills) / applying, 1),
        "batch_fills_per_second_with_snapshots": round(len(fills) / elapsed, 1),
        "batch_ms_mean": round(applying / batches * 1000, 1),
        # this process' CPU time (steadier than wall time on a shared machine)
        "batch_cpu_ms_per_fill": round(applying_cpu / len(fills) * 1000, 3),
        "snapshot_cpu_ms_per_event": round(publishing_cpu / max(events, 1) * 1000, 3),
        "holdings_reconciled_per_batch": round(events / batches, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--fills", type=int, default=500)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--fills-per-account", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--one-by-one", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(
        run(
            args.database_url,
            args.fills,
            args.accounts,
            args.fills_per_account,
            args.batch,
            args.one_by_one,
        )
    )
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    print(text, end="")


if __name__ == "__main__":
    main()
