"""True sleeve accounting in the book of record (real PostgreSQL): a UMA's lots and cash are
kept per sleeve. Opening cash per sleeve (REST and files), a fill settles against its
sleeve's cash (fees included), cash moves between sleeves by transfer, the account's cash is
the sum; the ledger and holdings-reconciled say each sleeve's cash to the cent. Also: a
batch of fills of two traces gives each account's snapshot its own fill's trace."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.consumer import Delivery, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.db import Database
from ballast_common.telemetry import current_trace_headers, tracer
from ballast_common.testing import (
    consumer_records,
    envelope,
    outbox_events,
    service_consumer,
    unit_of_work,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import text
from taxlot_svc import snapshots
from taxlot_svc.book_load import SPEC
from taxlot_svc.handlers import on_fills_received

pytestmark = pytest.mark.integration

D = Decimal
SOURCE = "taxlot-svc"
AS_OF = "2026-11-30"


@pytest.fixture(scope="module", autouse=True)
def traced() -> None:
    """Spans are recorded (an SDK tracer provider, as every service installs one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def a_symbol() -> str:
    return "S" + uuid.uuid4().hex[:7].upper()


def a_fill(
    account: str, symbol: str, side: str, quantity: str, price: str, fees: str, sleeve: str | None
) -> FillsReceivedV1:
    fill_id = uid("fx")
    return FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"co-{fill_id}",
        trade_id=uuid.uuid4(),
        proposal_id=uuid.uuid4(),
        account_id=account,
        symbol=symbol,
        side=side,
        quantity=D(quantity),
        price=D(price),
        fees=D(fees),
        executed_at=datetime(2026, 12, 1, 15, tzinfo=UTC),
        sleeve_id=sleeve,
    )


def a_trace() -> str:
    """A new trace's W3C traceparent, as a producer in another service would send it."""
    with tracer().start_as_current_span("upstream", context=None):
        return current_trace_headers()["traceparent"]


def trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


async def consume(db: Database, envelopes: list[Envelope]) -> None:
    """The fills through the service's real batch consumer, as one batch."""
    consumer = service_consumer(
        db, SOURCE, [Subscription.batch("fills-received", on_fills_received)]
    )
    outcome = await consumer.process(consumer_records(envelopes))
    assert outcome["processed"] == len(envelopes), outcome


async def snapshot_of(db: Database, account: str) -> Delivery:
    """Publish the requested snapshots; the account's latest holdings-reconciled."""
    async with unit_of_work(db, SOURCE) as uow:
        await snapshots.publish_pending(uow, limit=100_000)
    return (await outbox_events(db, "holdings-reconciled", account))[-1]


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        return [dict(r._mapping) for r in await s.execute(text(sql), params)]


async def ledger_cash(db: Database, account: str) -> dict[str, Decimal]:
    """The ledger's cash entries summed per sleeve ('' = the account's own)."""
    found = await rows(
        db,
        "SELECT sleeve, sum(amount) AS amount FROM ledger_entries"
        " WHERE account_id = :a AND kind = 'cash' GROUP BY sleeve",
        a=account,
    )
    return {r["sleeve"]: r["amount"] for r in found}


def parts(event: Delivery) -> dict[str | None, str]:
    """Each sleeve's cash in a holdings-reconciled, as its exact text."""
    return {p.sleeve_id: format(p.amount, "f") for p in event.payload.sleeve_cash}


def uma_opening(core: str, income: str, **extra: Any) -> dict[str, Any]:
    return {
        "as_of": AS_OF,
        "cash": "10000.00",
        "sleeve_cash": [
            {"sleeve_id": "core", "amount": "6000.00"},
            {"sleeve_id": "income", "amount": "3000.00"},
        ],
        "positions": [
            {
                "symbol": core,
                "sleeve_id": "core",
                "lots": [{"quantity": "20", "cost_basis": "1800.00", "acquired_on": "2025-02-03"}],
            },
            {
                "symbol": income,
                "lots": [
                    {
                        "quantity": "30",
                        "cost_basis": "1200.00",
                        "acquired_on": "2025-03-04",
                        "sleeve_id": "income",
                    }
                ],
            },
        ],
        **extra,
    }


async def test_each_sleeve_keeps_its_own_cash_through_fills_and_transfers(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    account, core, income = uid("UMA"), a_symbol(), a_symbol()
    opened = await client.post(f"/accounts/{account}/holdings", json=uma_opening(core, income))
    assert opened.status_code == 201, opened.text
    assert opened.json()["sleeve_cash"] == [
        {"sleeve_id": None, "amount": "1000.00"},
        {"sleeve_id": "core", "amount": "6000.00"},
        {"sleeve_id": "income", "amount": "3000.00"},
    ]
    lots = await rows(
        taxlot_db,
        "SELECT symbol, sleeve FROM lots WHERE account_id = :a ORDER BY sleeve",
        a=account,
    )
    assert lots == [{"symbol": core, "sleeve": "core"}, {"symbol": income, "sleeve": "income"}]
    [opening] = await outbox_events(taxlot_db, "holdings-reconciled", account)
    assert parts(opening) == {None: "1000.00", "core": "6000.00", "income": "3000.00"}

    # A buy in core (10 x 100.10 + 1.25 fees) and a sell in income (5 x 50.05 - 0.75).
    await consume(
        taxlot_db,
        [
            envelope(a_fill(account, core, "buy", "10", "100.10", "1.25", "core")),
            envelope(a_fill(account, income, "sell", "5", "50.05", "0.75", "income")),
        ],
    )
    core_cash, income_cash = D("6000.00") - D("1002.25"), D("3000.00") + D("249.50")
    assert (core_cash, income_cash) == (D("4997.75"), D("3249.50"))
    [book] = await rows(
        taxlot_db, "SELECT cash FROM account_books WHERE account_id = :a", a=account
    )
    assert book["cash"] == D("1000.00") + core_cash + income_cash == D("9247.25")
    assert await ledger_cash(taxlot_db, account) == {
        "": D("1000.00"),
        "core": core_cash,
        "income": income_cash,
    }
    event = await snapshot_of(taxlot_db, account)
    assert event.payload.cash == D("9247.25")
    assert parts(event) == {None: "1000.00", "core": "4997.75", "income": "3249.50"}

    # Cash moves between sleeves (and from the account's own): the account's cash stays.
    move = {"transfer_id": uid("t"), "amount": "500.00", "from_sleeve": "core"}
    moved = await client.post(
        f"/accounts/{account}/sleeve-cash-transfers", json={**move, "to_sleeve": "income"}
    )
    assert moved.status_code == 201, moved.text
    assert moved.json()["cash"] == "9247.25"
    again = await client.post(
        f"/accounts/{account}/sleeve-cash-transfers", json={**move, "to_sleeve": "income"}
    )
    assert again.status_code == 200 and again.json()["repeated"] is True
    other_terms = await client.post(
        f"/accounts/{account}/sleeve-cash-transfers", json={**move, "to_sleeve": "growth"}
    )
    assert other_terms.status_code == 409, other_terms.text
    too_much = await client.post(
        f"/accounts/{account}/sleeve-cash-transfers",
        json={"transfer_id": uid("t"), "amount": "1000.01", "to_sleeve": "growth"},
    )
    assert too_much.status_code == 422
    assert too_much.json()["errors"] == [
        {"field": "amount", "message": "the account's own cash holds 1000.00, less than 1000.01"}
    ]
    funded = await client.post(
        f"/accounts/{account}/sleeve-cash-transfers",
        json={"transfer_id": uid("t"), "amount": "1000.00", "to_sleeve": "growth"},
    )
    assert funded.status_code == 201, funded.text
    event = await snapshot_of(taxlot_db, account)
    assert event.payload.cause == "sleeve-transfer"
    assert event.payload.cash == D("9247.25")
    assert parts(event) == {
        None: "0.00",
        "core": "4497.75",
        "growth": "1000.00",
        "income": "3749.50",
    }
    assert await ledger_cash(taxlot_db, account) == {
        "": D("0.00"),
        "core": D("4497.75"),
        "growth": D("1000.00"),
        "income": D("3749.50"),
    }
    holdings = (await client.get(f"/accounts/{account}/holdings")).json()
    assert holdings["cash"] == "9247.25"
    assert sum(D(p["amount"]) for p in holdings["sleeve_cash"]) == D("9247.25")


async def test_an_sma_keeps_its_cash_whole(client: httpx.AsyncClient, taxlot_db: Database) -> None:
    account, sym = uid("SMA"), a_symbol()
    body = {
        "as_of": AS_OF,
        "cash": "500.00",
        "positions": [
            {"symbol": sym, "quantity": "10", "cost_basis": "900", "acquired_on": "2025-01-02"}
        ],
    }
    assert (await client.post(f"/accounts/{account}/holdings", json=body)).status_code == 201
    await consume(taxlot_db, [envelope(a_fill(account, sym, "sell", "2", "95", "1.00", None))])
    event = await snapshot_of(taxlot_db, account)
    assert event.payload.cash == D("689.00")
    assert event.payload.sleeve_cash == []
    assert await rows(taxlot_db, "SELECT * FROM sleeve_cash WHERE account_id = :a", a=account) == []
    assert await ledger_cash(taxlot_db, account) == {"": D("689.00")}


async def test_an_opening_that_uses_sleeves_names_every_lots_sleeve(
    client: httpx.AsyncClient,
) -> None:
    account, core, income = uid("UMA"), a_symbol(), a_symbol()
    body = uma_opening(core, income)
    del body["positions"][1]["lots"][0]["sleeve_id"]
    body["sleeve_cash"].append({"sleeve_id": "core", "amount": "1.00"})
    refused = await client.post(f"/accounts/{account}/holdings", json=body)
    assert refused.status_code == 422
    assert {e["field"]: e["message"] for e in refused.json()["errors"]} == {
        "sleeve_cash[2].sleeve_id": "core already given at sleeve_cash[0]",
        "positions[1].lots[0].sleeve_id": "required: this opening puts holdings in sleeves "
        "(positions[0].lots[0] is in sleeve 'core'), so every lot names its sleeve",
    }
    over = uma_opening(core, income, cash="8999.99")
    refused = await client.post(f"/accounts/{account}/holdings", json=over)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "field": "sleeve_cash",
            "message": "the sleeves' cash adds up to 9000.00, more than the account's cash 8999.99",
        }
    ]
    cash_only = uma_opening(core, income)
    for position in cash_only["positions"]:
        position.pop("sleeve_id", None)
        position["lots"][0].pop("sleeve_id", None)
    refused = await client.post(f"/accounts/{account}/holdings", json=cash_only)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == [
        "positions[0].lots[0].sleeve_id",
        "positions[1].lots[0].sleeve_id",
    ]
    assert "sleeve_cash[0] is cash of sleeve 'core'" in refused.json()["errors"][0]["message"]
    bad_id = uma_opening(core, income)
    bad_id["positions"][0]["sleeve_id"] = "no good"
    refused = await client.post(f"/accounts/{account}/holdings", json=bad_id)
    assert refused.status_code == 422
    assert [e["field"] for e in refused.json()["errors"]] == ["positions[0].sleeve_id"]
    assert (await client.get(f"/accounts/{account}/holdings")).status_code == 404


# --- files --------------------------------------------------------------------------------------


def csv(header: str, lines: list[str]) -> str:
    return "\n".join([header, *lines]) + "\n"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def stage(db: Database, load_id: str, files: dict[str, str]) -> None:
    for name, content in files.items():
        async with unit_of_work(db, SOURCE) as uow:
            await loads.stage_file(
                uow.session, SPEC, OPTIONS.tenant, load_id, name, _chunks(content.encode())
            )


async def problems(db: Database, load_id: str) -> list[tuple[str, int, str, str]]:
    async with db.sessions() as session, session.begin():
        found = await loads.validate(session, SPEC, load_id, OPTIONS)
    return [(p["file"], p["line"], p["column"], p["message"]) for p in found["problems"]]


OPTIONS = LoadOptions(as_of=datetime(2026, 11, 30).date(), tenant="acme")


def uma_files(account: str, sym: str, cash: list[str], lot_sleeves: tuple[str, str]) -> dict:
    return {
        "prices.csv": csv("symbol,price", [f"{sym},101"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{account},H-{account},Ann"]),
        "cash.csv": csv("account_id,amount,sleeve_id", cash),
        "positions.csv": csv("account_id,symbol,quantity", [f"{account},{sym},10"]),
        "lots.csv": csv(
            "account_id,symbol,lot_id,quantity,acquired_on,cost_basis,sleeve_id",
            [
                f"{account},{sym},T1,6,2024-02-01,600,{lot_sleeves[0]}",
                f"{account},{sym},T2,4,2024-03-01,400,{lot_sleeves[1]}",
            ],
        ),
    }


async def test_a_loaded_uma_keeps_cash_per_sleeve(taxlot_db: Database) -> None:
    account, sym = uid("FU"), a_symbol()
    load = uid("uma-cash")
    cash = [f"{account},25.10,", f"{account},700.00,core", f"{account},-12.34,income"]
    await stage(taxlot_db, load, uma_files(account, sym, cash, ("core", "income")))
    assert await problems(taxlot_db, load) == []
    async with unit_of_work(taxlot_db, SOURCE) as uow:
        await loads.apply(uow, SPEC, load, OPTIONS)
    [book] = await rows(
        taxlot_db, "SELECT cash FROM account_books WHERE account_id = :a", a=account
    )
    assert book["cash"] == D("712.76")
    assert await ledger_cash(taxlot_db, account) == {
        "": D("25.10"),
        "core": D("700.00"),
        "income": D("-12.34"),
    }
    [event] = await outbox_events(taxlot_db, "holdings-reconciled", account)
    assert event.payload.cash == D("712.76")
    assert parts(event) == {None: "25.10", "core": "700.00", "income": "-12.34"}
    # A sell in income: its proceeds (4 x 120 - 2.00) are income's.
    await consume(taxlot_db, [envelope(a_fill(account, sym, "sell", "4", "120", "2.00", "income"))])
    assert parts(await snapshot_of(taxlot_db, account)) == {
        None: "25.10",
        "core": "700.00",
        "income": "465.66",
    }


async def test_loaded_sleeves_are_all_or_nothing_and_cash_rows_unique(taxlot_db: Database) -> None:
    account, sym = uid("FU"), a_symbol()
    load = uid("uma-twice")
    cash = [f"{account},1,core", f"{account},2,core"]
    await stage(taxlot_db, load, uma_files(account, sym, cash, ("core", "core")))
    assert await problems(taxlot_db, load) == [
        ("cash.csv", 3, "sleeve_id", "the same account_id, sleeve_id as line 2")
    ]
    load = uid("uma-bad")
    await stage(taxlot_db, load, uma_files(account, sym, [f"{account},1,core"], ("", "")))
    assert await problems(taxlot_db, load) == [
        (
            "lots.csv",
            line,
            "sleeve_id",
            f"required: account {account} puts holdings in sleeves (cash.csv line 2 is cash of "
            "sleeve core), so every lot names its sleeve",
        )
        for line in (2, 3)
    ]
    # Without the sleeve_id column, an account has one cash row.
    other = uid("FU")
    files = uma_files(other, sym, [], ("core", ""))
    files["cash.csv"] = csv("account_id,amount", [f"{other},1", f"{other},2"])
    load = uid("uma-two")
    await stage(taxlot_db, load, files)
    assert await problems(taxlot_db, load) == [
        ("cash.csv", 3, "account_id", "the same account_id as line 2"),
        (
            "lots.csv",
            3,
            "sleeve_id",
            f"required: account {other} puts holdings in sleeves (lots.csv line 2 is in sleeve "
            "core), so every lot names its sleeve",
        ),
    ]


# --- traces -----------------------------------------------------------------------------------


async def test_a_batch_of_fills_of_two_traces_keeps_each_snapshot_in_its_fills_trace(
    client: httpx.AsyncClient, taxlot_db: Database
) -> None:
    sym = a_symbol()
    first, second = uid("TA"), uid("TB")
    for account in (first, second):
        body = {
            "as_of": AS_OF,
            "cash": "100.00",
            "positions": [
                {"symbol": sym, "quantity": "5", "cost_basis": "500", "acquired_on": "2025-01-02"}
            ],
        }
        assert (await client.post(f"/accounts/{account}/holdings", json=body)).status_code == 201
    traces = {first: a_trace(), second: a_trace()}
    fills = {
        account: envelope(
            a_fill(account, sym, "sell", "1", "100", "0", None), traceparent=traces[account]
        )
        for account in (first, second)
    }
    await consume(taxlot_db, list(fills.values()))
    for account in (first, second):
        event = (await snapshot_of(taxlot_db, account)).envelope
        assert event.causation_id == fills[account].id, account
        assert trace_id(event.traceparent) == trace_id(traces[account]), account
