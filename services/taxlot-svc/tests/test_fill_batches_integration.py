"""fills-received in batches against the real PostgreSQL: a batch gives exactly the book the
same fills give one at a time (wash sales across household accounts, a late fill), a bad
fill is dead-lettered alone, duplicates stay harmless, one snapshot request per account,
and two consumers racing over the same households neither deadlock nor lose a fill."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.events import AccountChangedV1, FillsReceivedV1
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.testing import consumer_record, envelope, unit_of_work
from sqlalchemy import text
from taxlot_svc import service, taxes
from taxlot_svc.handlers import on_fills_received
from taxlot_svc.schemas import AccountHoldingsIn

pytestmark = pytest.mark.integration

D = Decimal
TODAY = date(2026, 12, 6)
START = date(2026, 2, 2)


def record(fill: FillsReceivedV1, offset: int) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(envelope(fill, tenant="acme"), offset)


def processor(db: Database) -> BatchProcessor:
    return BatchProcessor(
        f"taxlot-batch-{uuid.uuid4().hex[:6]}",
        [Subscription.batch("fills-received", on_fills_received)],
        lambda: unit_of_work(db, "taxlot-svc"),
    )


def a_fill(
    fill_id: str, account: str, sym: str, side: str, qty: D, price: str, on: date
) -> FillsReceivedV1:
    return FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"co-{fill_id}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=sym,
        side=side,
        quantity=qty,
        price=D(price),
        executed_at=datetime(on.year, on.month, on.day, 15, tzinfo=UTC),
    )


async def open_books(db: Database, accounts: list[str], symbols: list[str], per: int = 3) -> None:
    """Households of ``per`` accounts (the second of each an IRA), each account holding
    100 of every symbol at 10 a share."""
    for n, account in enumerate(accounts):
        payload = AccountChangedV1(
            account_id=account,
            household_id=f"H-{accounts[n - n % per]}",
            name=account,
            account_type="ira" if n % per == 1 else "taxable",
            model_id=None,
            status="active",
            auto_approve=True,
        )
        async with unit_of_work(db, "taxlot-svc") as uow:
            await taxes.account_changed(uow, payload)
    bodies = [
        AccountHoldingsIn.model_validate(
            {
                "account_id": a,
                "as_of": "2026-01-30",
                "cash": "10000.00",
                "positions": [
                    {
                        "symbol": s,
                        "quantity": "100",
                        "cost_basis": "1000",
                        "acquired_on": "2025-12-01",
                    }
                    for s in symbols
                ],
            }
        )
        for a in accounts
    ]
    async with unit_of_work(db, "taxlot-svc") as uow:
        await service.open_accounts(uow, "acme", bodies, today=TODAY)


def trading(
    rng: random.Random,
    held: dict[tuple[str, str], D],
    prefix: str,
    count: int,
    start: date = START,
) -> list[FillsReceivedV1]:
    """Fills in date order from ``start``, never overselling what ``held`` says (kept up to
    date): losses (sells under 10) and buys within 30 days in the same household, so wash
    sales happen across accounts."""
    day = start
    pairs = sorted(held)
    out = []
    for k in range(count):
        day += timedelta(days=rng.choice([0, 0, 1, 3]))
        account, sym = rng.choice(pairs)
        side = rng.choice(["buy", "sell", "sell"])
        qty = D(rng.randint(1, 30))
        if side == "sell":
            qty = min(qty, held[(account, sym)])
            if qty <= 0:
                side, qty = "buy", D(5)
        held[(account, sym)] += qty if side == "buy" else -qty
        price = rng.choice(["7.5", "8", "9.25", "10.5", "12"])
        out.append(a_fill(f"{prefix}{k:03d}", account, sym, side, qty, price, day))
    return out


async def book_of(db: Database, accounts: list[str]) -> dict[str, Any]:
    async def q(sql: str) -> list[dict[str, Any]]:
        async with db.sessions() as s:
            return [dict(r._mapping) for r in await s.execute(text(sql), {"ids": accounts})]

    return {
        "books": await q(
            "SELECT account_id, cash, as_of FROM account_books WHERE account_id = ANY(:ids)"
            " ORDER BY account_id"
        ),
        "lots": await q(
            "SELECT account_id, lot_id, seq, symbol, quantity, cost_basis, acquired_on,"
            " holding_start, cause, fill_id, wash_adjustment, replacement, purchase_id, sleeve"
            " FROM lots WHERE account_id = ANY(:ids) ORDER BY account_id, lot_id"
        ),
        "gains": await q(
            "SELECT account_id, fill_id, lot_id, symbol, quantity, proceeds, cost_basis, gain,"
            " term, sold_on, adjustment, washed_quantity, permanent, account_type, cause, seq"
            " FROM realized_gains WHERE account_id = ANY(:ids)"
            " ORDER BY account_id, seq, lot_id"
        ),
        "fills": await q(
            "SELECT fill_id, account_id, cash_change FROM applied_fills"
            " WHERE account_id = ANY(:ids) ORDER BY fill_id"
        ),
        "inputs": await q(
            "SELECT account_id, kind, ref, trade_on, symbol, side, quantity, price, method"
            " FROM tax_inputs WHERE account_id = ANY(:ids) ORDER BY account_id, ref"
        ),
        "households": await q(
            "SELECT h.last_day, h.seq FROM households h WHERE h.household_id IN"
            " (SELECT household_id FROM accounts WHERE account_id = ANY(:ids))"
            " ORDER BY h.household_id"
        ),
        "journal": await q(
            "SELECT account_id, kind, fill_id, lot_id, quantity, amount FROM ledger_entries"
            " WHERE account_id = ANY(:ids) ORDER BY account_id, fill_id, kind, lot_id, amount"
        ),
        "pending": await q(
            "SELECT account_id, cause, fill_ids FROM pending_snapshots"
            " WHERE account_id = ANY(:ids) ORDER BY account_id"
        ),
    }


def neutral(value: Any, one: str, other: str) -> Any:
    if isinstance(value, str):
        return value.replace(one, other)
    if isinstance(value, dict):
        return {k: neutral(v, one, other) for k, v in value.items()}
    if isinstance(value, list):
        return [neutral(v, one, other) for v in value]
    return value


async def test_a_batch_gives_the_book_fills_one_at_a_time_give(taxlot_db: Database) -> None:
    run = uuid.uuid4().hex[:6]
    symbols = [f"P{run[:4].upper()}", f"Q{run[:4].upper()}"]
    singles = [f"S{run}-{n:02d}" for n in range(9)]
    batched = [f"B{run}-{n:02d}" for n in range(9)]
    await open_books(taxlot_db, singles, symbols)
    await open_books(taxlot_db, batched, symbols)
    rng = random.Random(run)
    held = {(a, s): D(100) for a in singles for s in symbols}
    first = trading(rng, held, f"s{run}-", 80)
    last_day = max(f.executed_at.date() for f in first)
    # A second round: one household gets a fill dated before everything it applied (late,
    # a buy that washes its later loss sales), arriving first; then trading goes on.
    late_account = singles[3]
    late = a_fill(f"s{run}-late", late_account, symbols[0], "buy", D(3), "9", START - timedelta(1))
    held[(late_account, symbols[0])] += 3
    second = [late, *trading(rng, held, f"s{run}-r2-", 30, last_day)]
    # The same fills for the twin accounts (same place in the list, same terms).
    twin = {s: b for s, b in zip(singles, batched, strict=True)}

    def mirrored(fills: list[FillsReceivedV1]) -> list[FillsReceivedV1]:
        return [
            a_fill(
                f.fill_id.replace(f"s{run}", f"b{run}"),
                twin[f.account_id],
                f.symbol,
                f.side,
                f.quantity,
                str(f.price),
                f.executed_at.date(),
            )
            for f in fills
        ]

    for f in first + second:
        async with unit_of_work(taxlot_db, "taxlot-svc") as uow:
            await service.apply_fill(uow, f, uuid.uuid4())
    consumer = processor(taxlot_db)
    outcome = await consumer.process([record(f, n) for n, f in enumerate(mirrored(first))])
    assert outcome == {"processed": len(first), "duplicate": 0, "dead_lettered": 0}
    outcome = await consumer.process([record(f, n) for n, f in enumerate(mirrored(second))])
    assert outcome == {"processed": len(second), "duplicate": 0, "dead_lettered": 0}

    one_by_one = await book_of(taxlot_db, singles)
    in_batches = neutral(await book_of(taxlot_db, batched), f"b{run}", f"s{run}")
    in_batches = neutral(in_batches, f"B{run}", f"S{run}")
    pending = in_batches.pop("pending"), one_by_one.pop("pending")
    for part in one_by_one:  # (in an order of the neutral ids)
        assert sorted(map(repr, in_batches[part])) == sorted(map(repr, one_by_one[part])), part
    assert any(g["adjustment"] for g in one_by_one["gains"]), "no wash sale happened"
    assert any(j["kind"] == "replay" for j in one_by_one["journal"])
    # One snapshot request per account, naming every fill of the account in arrival order.
    assert pending[0] == pending[1]
    for row in pending[0]:
        fills = [f.fill_id for f in first + second if f.account_id == row["account_id"]]
        assert row["fill_ids"] == fills


async def test_a_bad_fill_is_dead_lettered_alone_and_duplicates_are_harmless(
    taxlot_db: Database,
) -> None:
    run = uuid.uuid4().hex[:6]
    sym = f"R{run[:4].upper()}"
    accounts = [f"D{run}-{n}" for n in range(4)]
    await open_books(taxlot_db, accounts, [sym], per=2)
    day = date(2026, 3, 2)
    good = [
        a_fill(f"d{run}-0", accounts[0], sym, "sell", D(10), "12", day),
        a_fill(f"d{run}-1", accounts[1], sym, "buy", D(5), "11", day),
        a_fill(f"d{run}-2", accounts[2], sym, "sell", D(100), "9", day),
        a_fill(f"d{run}-3", accounts[3], sym, "buy", D(1), "10", day),
    ]
    oversell = a_fill(f"d{run}-over", accounts[2], sym, "sell", D(1), "9", day)
    nobody = a_fill(f"d{run}-nobody", f"NOBODY-{run}", sym, "buy", D(1), "9", day)
    other_terms = a_fill(f"d{run}-0", accounts[0], sym, "sell", D(11), "12", day)
    records = [
        record(good[0], 0),
        record(good[1], 1),
        record(good[0], 2),  # the same fill in another event: no second effect
        record(good[2], 3),
        record(oversell, 4),  # after good[2] sold everything
        record(nobody, 5),
        record(other_terms, 6),
        record(good[3], 7),
    ]
    group = processor(taxlot_db)
    outcome = await group.process(records)
    assert outcome == {"processed": 5, "duplicate": 0, "dead_lettered": 3}
    async with taxlot_db.sessions() as s:
        pending = await pending_messages(s, 1_000_000)
        cash = dict(
            (
                await s.execute(
                    text("SELECT account_id, cash FROM account_books WHERE account_id = ANY(:a)"),
                    {"a": accounts},
                )
            ).all()
        )
    letters = [json.loads(m.value) for m in pending if m.topic == f"dlq.{group.group}"]
    assert sorted(x["offset"] for x in letters) == [4, 5, 6]
    reasons = {x["offset"]: x["error"] for x in letters}
    assert f"cannot sell 1 {sym}: no open position in account {accounts[2]}" in reasons[4]
    assert f"account NOBODY-{run} has no ledger" in reasons[5]
    assert "different terms" in reasons[6]
    assert cash == {
        accounts[0]: D("10120.00"),
        accounts[1]: D("9945.00"),
        accounts[2]: D("10900.00"),
        accounts[3]: D("9990.00"),
    }
    # The same fills again in new events (new event ids): duplicates, nothing changes.
    outcome = await group.process([record(f, n + 10) for n, f in enumerate(good)])
    assert outcome == {"processed": 4, "duplicate": 0, "dead_lettered": 0}
    async with taxlot_db.sessions() as s:
        after = dict(
            (
                await s.execute(
                    text("SELECT account_id, cash FROM account_books WHERE account_id = ANY(:a)"),
                    {"a": accounts},
                )
            ).all()
        )
    assert after == cash


async def test_two_consumers_racing_over_the_same_households_lose_nothing(
    taxlot_db: Database,
) -> None:
    run = uuid.uuid4().hex[:6]
    symbols = [f"T{run[:4].upper()}"]
    accounts = [f"C{run}-{n:02d}" for n in range(30)]
    await open_books(taxlot_db, accounts, symbols)
    rng = random.Random(run)
    fills = [
        a_fill(f"c{run}-{k:03d}", rng.choice(accounts), symbols[0], "buy", D(1), "10", START)
        for k in range(400)
    ]
    halves = [fills[0::2], fills[1::2]]
    for half in halves:
        rng.shuffle(half)  # each consumer meets the households in another order
    consumers = [processor(taxlot_db), processor(taxlot_db)]

    async def consume(consumer: BatchProcessor, mine: list[FillsReceivedV1]) -> int:
        done = 0
        for start in range(0, len(mine), 50):
            part = mine[start : start + 50]
            outcome = await consumer.process([record(f, start + n) for n, f in enumerate(part)])
            done += outcome["processed"]
        return done

    counts = await asyncio.gather(*(consume(c, h) for c, h in zip(consumers, halves, strict=True)))
    assert counts == [200, 200]
    async with taxlot_db.sessions() as s:
        held = dict(
            (
                await s.execute(
                    text(
                        "SELECT account_id, sum(quantity) FROM lots WHERE account_id = ANY(:a)"
                        " GROUP BY account_id"
                    ),
                    {"a": accounts},
                )
            ).all()
        )
    for account in accounts:
        bought = sum(1 for f in fills if f.account_id == account)
        assert held[account] == D(100 + bought), account
