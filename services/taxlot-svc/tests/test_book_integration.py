"""The book of record against the real PostgreSQL: opening balances, fills, idempotence,
rejected fills leaving the ledger unchanged, and the consumer's dead-lettering."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.db import Database
from ballast_common.errors import PermanentMessageError
from ballast_common.outbox import pending_messages
from ballast_common.testing import consumer_record, envelope, unit_of_work
from taxlot_svc import repository as repo
from taxlot_svc import service, snapshots, taxes
from taxlot_svc.handlers import on_fills_received
from taxlot_svc.schemas import HoldingsIn

pytestmark = pytest.mark.integration

D = Decimal
TODAY = date(2026, 11, 22)


def new_account() -> str:
    return f"T-{uuid.uuid4().hex[:10]}"


def fill(
    account: str, side: str, qty: str, price: str, on: datetime, fill_id: str | None = None
) -> FillsReceivedV1:
    fid = fill_id or f"ex-{uuid.uuid4().hex[:12]}"
    return FillsReceivedV1(
        fill_id=fid,
        client_order_id=f"co-{fid}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol="AAPL",
        side=side,
        quantity=D(qty),
        price=D(price),
        executed_at=on,
    )


async def open_book(db: Database, account: str) -> None:
    body = HoldingsIn.model_validate(
        {
            "as_of": "2026-01-15",
            "cash": "10000.00",
            "positions": [
                {
                    "symbol": "AAPL",
                    "quantity": "10",
                    "cost_basis": "1500.00",
                    "acquired_on": "2025-01-10",
                },
                {
                    "symbol": "MSFT",
                    "lots": [
                        {"quantity": "2", "cost_basis": "600", "acquired_on": "2024-02-01"},
                        {"quantity": "1.5", "cost_basis": "612.30", "acquired_on": "2025-12-01"},
                    ],
                },
            ],
        }
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await service.open_account(uow, "acme", account, body, today=TODAY)


async def apply(db: Database, f: FillsReceivedV1) -> str:
    async with unit_of_work(db, "taxlot-svc") as uow:
        outcome = await service.apply_fill(uow, f, uuid.uuid4())
    await publish(db)
    return outcome


async def publish(db: Database) -> None:
    """What the snapshot loop does: publish the requested holdings-reconciled."""
    async with unit_of_work(db, "taxlot-svc") as uow:
        await snapshots.publish_pending(uow, limit=100_000)


def plain(positions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: p[k] for k in ("symbol", "quantity", "cost_basis")} for p in positions]


async def snapshot(db: Database, account: str) -> dict[str, Any]:
    """Everything the book holds about an account, for before/after comparisons."""
    async with db.sessions() as s:
        return {
            "holdings": (await service.holdings(s, "acme", account)).model_dump(
                exclude={"updated_at"}
            ),
            "lots": (await service.lots(s, "acme", account)).model_dump(),
            "gains": (await taxes.realized_gains(s, "acme", account)).model_dump(),
            "ledger": len(await repo.ledger_entries(s, account)),
            "events": len(await events_of(db, account)),
        }


async def events_of(db: Database, account: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await pending_messages(s, 1_000_000)
    return [
        json.loads(r.value) for r in rows if r.key == account and r.topic == "holdings-reconciled"
    ]


AT_BUY = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)
AT_SELL = datetime(2026, 6, 1, 14, 0, tzinfo=UTC)


async def test_opening_balance_then_buy_and_partial_sell(taxlot_db: Database) -> None:
    account = new_account()
    await open_book(taxlot_db, account)
    buy = fill(account, "buy", "5", "180.125", AT_BUY)
    sell = fill(account, "sell", "12", "190.5", AT_SELL)
    assert await apply(taxlot_db, buy) == "applied"
    assert await apply(taxlot_db, sell) == "applied"

    async with taxlot_db.sessions() as s:
        holdings = await service.holdings(s, "acme", account)
        lots = await service.lots(s, "acme", account)
        gains = await taxes.realized_gains(s, "acme", account)
        ledger = await repo.ledger_entries(s, account)

    # 10000.00 - 900.62 (5 x 180.125 = 900.625, half-even) + 2286.00 (12 x 190.5)
    assert holdings.cash == D("11385.38")
    assert holdings.as_of == date(2026, 6, 1)
    assert holdings.tenant == "acme"
    assert [(p.symbol, p.quantity, p.cost_basis) for p in holdings.positions] == [
        ("AAPL", D("3"), D("540.37")),
        ("MSFT", D("3.5"), D("1212.30")),
    ]
    aapl = [lot for lot in lots.lots if lot.symbol == "AAPL"]
    assert [(lot.lot_id, lot.quantity, lot.cost_basis, lot.acquired_on) for lot in aapl] == [
        (f"fill-{buy.fill_id}", D("3"), D("540.37"), date(2026, 3, 2))
    ]
    assert aapl[0].fill_id == buy.fill_id and aapl[0].cause == "fill"
    assert [
        (g.lot_id, g.quantity, g.proceeds, g.cost_basis, g.gain, g.term, g.acquired_on)
        for g in gains.gains
    ] == [
        (
            "opening-AAPL-1",
            D("10"),
            D("1905.00"),
            D("1500.00"),
            D("405.00"),
            "long",
            date(2025, 1, 10),
        ),
        (
            f"fill-{buy.fill_id}",
            D("2"),
            D("381.00"),
            D("360.25"),
            D("20.75"),
            "short",
            date(2026, 3, 2),
        ),
    ]
    assert all(g.fill_id == sell.fill_id and g.sold_on == date(2026, 6, 1) for g in gains.gains)
    assert (gains.long_term, gains.short_term, gains.total) == (
        D("405.00"),
        D("20.75"),
        D("425.75"),
    )
    # Every change is in the ledger with its cause, and the cash entries add up to the cash.
    assert [(e.cause, e.kind, e.fill_id) for e in ledger] == [
        ("opening-balance", "cash", None),
        ("opening-balance", "lot-open", None),
        ("opening-balance", "lot-open", None),
        ("opening-balance", "lot-open", None),
        ("fill", "lot-open", buy.fill_id),
        ("fill", "cash", buy.fill_id),
        ("fill", "lot-relieve", sell.fill_id),
        ("fill", "lot-relieve", sell.fill_id),
        ("fill", "cash", sell.fill_id),
    ]
    assert sum(e.amount for e in ledger if e.kind == "cash") == holdings.cash

    events = await events_of(taxlot_db, account)
    assert [e["payload"]["cause"] for e in events] == ["opening-balance", "fills", "fills"]
    assert all(e["tenant"] == "acme" and e["key"] == account for e in events)
    last = events[-1]["payload"]
    assert last["fill_ids"] == [sell.fill_id]
    assert last["cash"] == "11385.38"
    assert plain(last["positions"]) == [
        {"symbol": "AAPL", "quantity": "3", "cost_basis": "540.37"},
        {"symbol": "MSFT", "quantity": "3.5", "cost_basis": "1212.30"},
    ]
    assert plain(events[0]["payload"]["positions"]) == [
        {"symbol": "AAPL", "quantity": "10", "cost_basis": "1500.00"},
        {"symbol": "MSFT", "quantity": "3.5", "cost_basis": "1212.30"},
    ]


async def test_a_fill_applied_twice_has_one_effect(taxlot_db: Database) -> None:
    account = new_account()
    await open_book(taxlot_db, account)
    buy = fill(account, "buy", "1", "100", AT_BUY)
    assert await apply(taxlot_db, buy) == "applied"
    after_first = await snapshot(taxlot_db, account)
    assert await apply(taxlot_db, buy) == "duplicate"  # same fill id, another event id
    assert await snapshot(taxlot_db, account) == after_first
    assert after_first["holdings"]["cash"] == D("9900.00")


async def test_a_fill_id_reused_with_other_terms_is_refused(taxlot_db: Database) -> None:
    account = new_account()
    await open_book(taxlot_db, account)
    buy = fill(account, "buy", "1", "100", AT_BUY)
    await apply(taxlot_db, buy)
    before = await snapshot(taxlot_db, account)
    other = fill(account, "buy", "2", "100", AT_BUY, fill_id=buy.fill_id)
    with pytest.raises(PermanentMessageError, match="different terms"):
        await apply(taxlot_db, other)
    assert await snapshot(taxlot_db, account) == before


async def test_an_oversell_is_refused_and_changes_nothing(taxlot_db: Database) -> None:
    account = new_account()
    await open_book(taxlot_db, account)
    await apply(taxlot_db, fill(account, "sell", "4", "200", AT_BUY))
    before = await snapshot(taxlot_db, account)
    oversell = fill(account, "sell", "6.5", "200", AT_SELL)
    with pytest.raises(PermanentMessageError) as err:
        await apply(taxlot_db, oversell)
    reason = str(err.value)
    assert account in reason and "AAPL" in reason and "6.5" in reason and "6" in reason
    assert await snapshot(taxlot_db, account) == before
    async with taxlot_db.sessions() as s:
        assert await repo.get_fills(s, [oversell.fill_id]) == {}
    # The refused fill is not remembered as applied: the full position can still be sold.
    assert await apply(taxlot_db, fill(account, "sell", "6", "200", AT_SELL)) == "applied"


async def test_a_fill_for_an_account_without_a_ledger_is_refused(taxlot_db: Database) -> None:
    account = new_account()
    with pytest.raises(PermanentMessageError, match=f"account {account} has no ledger"):
        await apply(taxlot_db, fill(account, "buy", "1", "10", AT_BUY))


def envelope_of(f: FillsReceivedV1) -> Envelope:
    return envelope(f, tenant="acme")


async def test_consumer_applies_dedups_and_dead_letters(taxlot_db: Database) -> None:
    account = new_account()
    await open_book(taxlot_db, account)
    group = f"taxlot-test-{uuid.uuid4().hex[:6]}"
    processor = BatchProcessor(
        group,
        [Subscription.batch("fills-received", on_fills_received)],
        lambda: unit_of_work(taxlot_db, "taxlot-svc"),
    )
    buy = fill(account, "buy", "2", "50", AT_BUY)
    sell = fill(account, "sell", "3", "60", AT_SELL)
    oversell = fill(account, "sell", "100", "60", AT_SELL)
    first = envelope_of(buy)
    records = [
        consumer_record(first, 0),
        consumer_record(envelope_of(buy), 1),  # the same fill in another event: no second effect
        consumer_record(first, 2),  # the same event again: the inbox drops it
        consumer_record(envelope_of(oversell), 3),
        consumer_record(envelope_of(sell), 4),  # the batch carries on after the dead letter
    ]
    outcomes = await processor.process(records)
    assert outcomes == {"processed": 3, "duplicate": 1, "dead_lettered": 1}

    async with taxlot_db.sessions() as s:
        holdings = await service.holdings(s, "acme", account)
        pending = await pending_messages(s, 1_000_000)
    # 10000 - 100 (buy 2 @ 50) + 180 (sell 3 @ 60)
    assert holdings.cash == D("10080.00")
    assert [(p.symbol, p.quantity) for p in holdings.positions] == [
        ("AAPL", D("9")),
        ("MSFT", D("3.5")),
    ]
    letters = [json.loads(m.value) for m in pending if m.topic == f"dlq.{group}"]
    assert len(letters) == 1
    assert letters[0]["offset"] == 3 and letters[0]["error_type"] == "PermanentMessageError"
    assert (
        oversell.fill_id in letters[0]["error"]
        and "cannot relieve 100 shares: the open position is 12" in letters[0]["error"]
    )
    # One holdings-reconciled for the batch, naming both fills (coalesced per account).
    await publish(taxlot_db)
    fills = [e["payload"]["fill_ids"] for e in await events_of(taxlot_db, account)][1:]
    assert fills == [[buy.fill_id, sell.fill_id]]
