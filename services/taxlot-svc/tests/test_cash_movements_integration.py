"""The rebalancer's planned cash movements between a UMA's sleeves, booked in the book of
record when the trades are approved (real PostgreSQL, the service's real consumer).

The engine plans a UMA's strategic rebalance: sleeve B is overweight and sells, sleeve A is
underweight and buys, and B's cash moves to A. After the approval and the fills, each
sleeve's cash in the ledger and in holdings-reconciled is where the engine planned it, to the
cent, none negative, whether taxlot-svc sees the approval before the fills or after them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    CashMovementV1,
    FillsReceivedV1,
    TradesApprovedV1,
    TradeV1,
)
from ballast_common.db import Database
from ballast_common.outbox import pending_messages
from ballast_common.testing import (
    consumer_records,
    envelope,
    outbox_events,
    service_consumer,
    unit_of_work,
)
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    Holding,
    Model,
    ModelEntry,
    RebalanceResult,
    Reference,
    Security,
    Sleeve,
    Strategy,
    StrategyEntry,
)
from ballast_engine.rebalance import rebalance_book
from sqlalchemy import text
from taxlot_svc import snapshots
from taxlot_svc.handlers import subscriptions
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

D = Decimal
SOURCE = "taxlot-svc"
CENT = D("0.01")
AS_OF = "2026-11-30"
FILLED_AT = datetime(2026, 12, 1, 15, tzinfo=UTC)
EQUITY_PRICE, BOND_PRICE = D("50.00"), D("20.00")


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def a_symbol() -> str:
    return "M" + uuid.uuid4().hex[:7].upper()


def opening(equity: str, bond: str) -> dict[str, Any]:
    """Sleeve A: 80 shares of `equity` at $50 and $100 of cash (34% of the account, target
    60%); sleeve B: 400 of `bond` at $20 and $50 (66%, target 40%)."""
    return {
        "as_of": AS_OF,
        "cash": "150.00",
        "sleeve_cash": [
            {"sleeve_id": "A", "amount": "100.00"},
            {"sleeve_id": "B", "amount": "50.00"},
        ],
        "positions": [
            {
                "symbol": equity,
                "sleeve_id": "A",
                "lots": [{"quantity": "80", "cost_basis": "3600.00", "acquired_on": "2025-02-03"}],
            },
            {
                "symbol": bond,
                "sleeve_id": "B",
                "lots": [{"quantity": "400", "cost_basis": "8400.00", "acquired_on": "2025-03-04"}],
            },
        ],
    }


def plan(account_id: str, equity: str, bond: str) -> RebalanceResult:
    """The engine's strategic rebalance of that UMA (60/40, bands of 5 points)."""
    band = Band(BandKind.ABSOLUTE, 0.05)
    reference = Reference(
        securities={
            equity: Security(equity, float(EQUITY_PRICE), "us_equity"),
            bond: Security(bond, float(BOND_PRICE), "fixed_income"),
        },
        models={
            "mA": Model("mA", (ModelEntry(equity, 1.0),)),
            "mB": Model("mB", (ModelEntry(bond, 1.0),)),
        },
        strategies={
            account_id: Strategy(
                account_id, (StrategyEntry("mA", 0.6, band), StrategyEntry("mB", 0.4, band))
            )
        },
    )
    account = Account(
        account_id,
        (
            Sleeve("A", "mA", cash=100.0, holdings=(Holding(equity, 80),)),
            Sleeve("B", "mB", cash=50.0, holdings=(Holding(bond, 400),)),
        ),
        strategy_id=account_id,
    )
    [result] = rebalance_book(Book(reference, (account,))).results
    return result


def approval(result: RebalanceResult, proposal_id: uuid.UUID) -> TradesApprovedV1:
    """The proposal of the engine's result as account-svc approves it (its trades and cash
    movements as rebalance-svc proposed them)."""
    return TradesApprovedV1(
        proposal_id=proposal_id,
        account_id=result.account_id,
        approved_by="policy:auto-approve",
        trades=[
            TradeV1(
                trade_id=uuid.uuid5(proposal_id, f"{t.sleeve_id}:{t.side.value}:{t.symbol}"),
                symbol=t.symbol,
                side=t.side.value,
                quantity=t.quantity,
                estimated_price=D(str(t.price)).quantize(CENT),
                estimated_value=t.estimated_value,
                reason=t.reason.value,
                explanation=t.explanation,
                sleeve_id=t.sleeve_id,
            )
            for t in result.trades
        ],
        cash_movements=[
            CashMovementV1(
                from_sleeve=m.from_sleeve,
                to_sleeve=m.to_sleeve,
                amount=m.amount,
                purpose="rebalance",
            )
            for m in result.cash_movements
        ],
    )


def fills_of(approved: TradesApprovedV1) -> list[FillsReceivedV1]:
    """Every approved trade filled in full at its estimated price, no fees."""
    return [
        FillsReceivedV1(
            fill_id=uid("fm"),
            client_order_id=f"co-{trade.trade_id}",
            trade_id=trade.trade_id,
            proposal_id=approved.proposal_id,
            account_id=approved.account_id,
            symbol=trade.symbol,
            side=trade.side,
            quantity=trade.quantity,
            price=trade.estimated_price,
            executed_at=FILLED_AT,
            sleeve_id=trade.sleeve_id,
        )
        for trade in approved.trades
    ]


async def consume(db: Database, events: Sequence[Envelope]) -> dict[str, int]:
    """The events through taxlot-svc's real consumer (inbox, batches, dead letters), as one
    poll."""
    consumer = service_consumer(db, SOURCE, subscriptions(Settings()))
    return await consumer.process(consumer_records(events))


def outcome_of(processed: int = 0, duplicate: int = 0, dead_lettered: int = 0) -> dict[str, int]:
    return {"processed": processed, "duplicate": duplicate, "dead_lettered": dead_lettered}


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        return [dict(r._mapping) for r in await s.execute(text(sql), params)]


async def book_of(db: Database, account: str) -> tuple[Decimal, dict[str, Decimal]]:
    """The account's cash and each sleeve's ('' = the account's own: the rest)."""
    [book] = await rows(db, "SELECT cash FROM account_books WHERE account_id = :a", a=account)
    named = await rows(
        db, "SELECT sleeve, amount FROM sleeve_cash WHERE account_id = :a", a=account
    )
    parts = {r["sleeve"]: r["amount"] for r in named}
    return book["cash"], {"": book["cash"] - sum(parts.values(), D(0)), **parts}


async def ledger_cash(db: Database, account: str) -> dict[str, Decimal]:
    """The ledger's cash entries summed per sleeve."""
    found = await rows(
        db,
        "SELECT sleeve, sum(amount) AS amount FROM ledger_entries"
        " WHERE account_id = :a AND kind = 'cash' GROUP BY sleeve",
        a=account,
    )
    return {r["sleeve"]: r["amount"] for r in found}


async def snapshot_of(db: Database, account: str) -> Delivery:
    """Publish the requested snapshots; the account's latest holdings-reconciled."""
    async with unit_of_work(db, SOURCE) as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    return (await outbox_events(db, "holdings-reconciled", account))[-1]


def in_event(event: Delivery) -> dict[str, Decimal]:
    return {p.sleeve_id or "": p.amount for p in event.payload.sleeve_cash}


async def open_uma(client: httpx.AsyncClient) -> tuple[str, str, str]:
    account, equity, bond = uid("UMV"), a_symbol(), a_symbol()
    opened = await client.post(f"/accounts/{account}/holdings", json=opening(equity, bond))
    assert opened.status_code == 201, opened.text
    return account, equity, bond


async def test_the_engines_plan_and_the_planned_cash_movements(client: httpx.AsyncClient) -> None:
    """What the engine plans for this UMA (the premise of the tests below): B sells and its
    cash moves to A, which buys; neither sleeve ends below zero."""
    account, equity, bond = await open_uma(client)
    result = plan(account, equity, bond)
    trades = {(t.sleeve_id, t.side.value, t.symbol): t.quantity for t in result.trades}
    assert trades == {("A", "buy", equity): D("65"), ("B", "sell", bond): D("157")}
    [move] = result.cash_movements
    assert (move.from_sleeve, move.to_sleeve, move.amount) == ("B", "A", D("3190.00"))
    after = {s.sleeve_id: s.cash_after for s in result.sleeves}
    assert after == {"A": D("40.00"), "B": D("0.00")}
    assert result.unallocated_cash_after == D("0.00")


@pytest.mark.parametrize("approval_first", [True, False], ids=["approval-first", "fills-first"])
async def test_each_sleeve_ends_where_the_engine_planned_whatever_the_order(
    client: httpx.AsyncClient, taxlot_db: Database, approval_first: bool
) -> None:
    account, equity, bond = await open_uma(client)
    result = plan(account, equity, bond)
    approved = approval(result, uuid.uuid4())
    approved_event = envelope(approved, source="account-svc")
    fills = [envelope(f, source="custodian-gateway") for f in fills_of(approved)]
    opening_cash = D("150.00")

    if approval_first:
        assert await consume(taxlot_db, [approved_event]) == outcome_of(processed=1)
        # Booked in full before the sells that fund it have filled: B owes the account
        # until they do, and the account's cash has not changed.
        assert await book_of(taxlot_db, account) == (
            opening_cash,
            {"": D("0.00"), "A": D("3290.00"), "B": D("-3140.00")},
        )
        assert (await consume(taxlot_db, fills))["processed"] == len(fills)
    else:
        assert (await consume(taxlot_db, fills))["processed"] == len(fills)
        # The state the gap left behind: A spent cash it did not have, B kept its proceeds.
        assert await book_of(taxlot_db, account) == (
            D("40.00"),
            {"": D("0.00"), "A": D("-3150.00"), "B": D("3190.00")},
        )
        assert await consume(taxlot_db, [approved_event]) == outcome_of(processed=1)

    planned = {"": result.unallocated_cash_after} | {
        s.sleeve_id: s.cash_after for s in result.sleeves
    }
    assert planned == {"": D("0.00"), "A": D("40.00"), "B": D("0.00")}
    cash, parts = await book_of(taxlot_db, account)
    assert cash == result.summary.cash_after == D("40.00")
    assert parts == planned
    assert await ledger_cash(taxlot_db, account) == planned
    event = await snapshot_of(taxlot_db, account)
    assert event.payload.cash == D("40.00")
    assert in_event(event) == planned
    assert min(parts.values()) >= 0
    if not approval_first:  # the approval's booking asked for the last snapshot
        assert event.payload.cause == "sleeve-transfer"
        assert event.envelope.causation_id == approved_event.id

    # The ledger names the proposal on the two entries of its one movement.
    entries = await rows(
        taxlot_db,
        "SELECT cause, sleeve, amount FROM ledger_entries WHERE fill_id = :p ORDER BY id",
        p=str(approved.proposal_id),
    )
    assert entries == [
        {"cause": "sleeve-transfer", "sleeve": "B", "amount": D("-3190.00")},
        {"cause": "sleeve-transfer", "sleeve": "A", "amount": D("3190.00")},
    ]


async def test_a_proposal_is_booked_once_and_a_bad_movement_is_dead_lettered_alone(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    """One poll with several approvals: each proposal's movements are booked (an SMA's
    approval has none), a movement that cannot be booked is dead-lettered naming it, the rest
    is booked; the same proposal announced again, in another event, books nothing more."""
    first, equity, bond = await open_uma(client)
    second, *_ = await open_uma(client)
    planned = approval(plan(first, equity, bond), uuid.uuid4())
    other = planned.model_copy(update={"account_id": second, "proposal_id": uuid.uuid4()})
    bad_move = CashMovementV1(from_sleeve="A", to_sleeve="B", amount=D("1.005"))
    bad = planned.model_copy(
        update={"account_id": second, "proposal_id": uuid.uuid4(), "cash_movements": [bad_move]}
    )
    ghost = planned.model_copy(update={"account_id": uid("NOBOOK"), "proposal_id": uuid.uuid4()})
    without = planned.model_copy(
        update={"account_id": uid("NOBOOK"), "proposal_id": uuid.uuid4(), "cash_movements": []}
    )
    events = [envelope(p, source="account-svc") for p in (planned, other, bad, ghost, without)]
    assert await consume(taxlot_db, events) == outcome_of(processed=3, dead_lettered=2)
    again = [envelope(planned, source="account-svc"), events[1]]  # a new event; a redelivery
    assert await consume(taxlot_db, again) == outcome_of(processed=1, duplicate=1)

    for account in (first, second):
        assert await book_of(taxlot_db, account) == (
            D("150.00"),
            {"": D("0.00"), "A": D("3290.00"), "B": D("-3140.00")},
        )
    booked = await rows(
        taxlot_db,
        "SELECT account_id, count(*) AS n FROM ledger_entries WHERE fill_id = ANY(:p)"
        " GROUP BY account_id ORDER BY account_id",
        p=[str(planned.proposal_id), str(other.proposal_id), str(bad.proposal_id)],
    )
    assert booked == sorted(
        [{"account_id": first, "n": 2}, {"account_id": second, "n": 2}],
        key=lambda r: r["account_id"],
    )
    async with taxlot_db.sessions() as s:
        letters = [
            json.loads(m.value)
            for m in await pending_messages(s, 1_000_000)
            if m.topic == f"dlq.{SOURCE}"
        ]
    errors = [x["error"] for x in letters if str(bad.proposal_id) in x["error"]]
    assert errors == [
        f"trades-approved {bad.proposal_id} cash_movements[0].amount: must be in cents, got 1.005"
    ]
    errors = [x["error"] for x in letters if str(ghost.proposal_id) in x["error"]]
    assert errors == [
        f"trades-approved {ghost.proposal_id}: account {ghost.account_id} has no ledger (no "
        "opening balance was recorded), its cash movements cannot be booked"
    ]
