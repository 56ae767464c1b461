"""Editing a pending proposal before approving it (POST /proposals/{id}/edit), its history and
the pending counts, on real PostgreSQL. Ids start with PE (the database is shared)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.handlers import subscriptions
from account_svc.main import spec
from account_svc.proposal_edit import edited_trades
from account_svc.proposal_review_schemas import TradeQuantity
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn
from account_svc.settings import Settings
from ballast_common.auth import Role
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1, TradesProposedV1, TradeV1
from ballast_common.db import Database
from ballast_common.errors import InvalidInput
from ballast_common.testing import (
    api_client,
    bearer,
    deliver,
    migrated_database,
    outbox_events,
    unit_of_work,
)
from sqlalchemy import text

ACCOUNT, OTHER_TENANTS = "PE-MANUAL", "PE-THEIRS"


def trade(side: str, symbol: str, quantity: str, price: str, **extra: Any) -> TradeV1:
    return TradeV1(
        trade_id=uuid.uuid4(),
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=Decimal(quantity),
        estimated_price=Decimal(price),
        estimated_value=(Decimal(quantity) * Decimal(price)).quantize(Decimal("0.01")),
        reason="drift",
        explanation=f"{side} {symbol} back to its target",
        **extra,
    )


def proposed(account_id: str = ACCOUNT, *trades: TradeV1) -> TradesProposedV1:
    return TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id="pe-core",
        model_version=1,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("100"),
        trades=list(trades)
        or [
            trade("buy", "AAPL", "10", "200"),
            trade("sell", "MSFT", "8", "400", lot_ids=["L1", "L2"], estimated_tax=Decimal("80")),
            trade("buy", "VTI", "2.5", "250"),
        ],
    )


# --- the rule, without a database -------------------------------------------------------------


def stored(*trades: TradeV1) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json") for t in trades]


def test_a_lowered_sell_keeps_its_lots_and_a_pro_rata_tax() -> None:
    sell = trade("sell", "MSFT", "8", "400", lot_ids=["L1"], estimated_tax=Decimal("80"))
    [edited] = edited_trades(stored(sell), [TradeQuantity(trade_id=sell.trade_id, quantity=6)], [])
    assert edited["quantity"] == "6"
    assert edited["estimated_value"] == "2400.00"
    assert edited["lot_ids"] == ["L1"] and edited["estimated_tax"] == "60.00"


def test_a_raised_sell_leaves_the_lots_to_the_custodians_method() -> None:
    sell = trade("sell", "MSFT", "8", "400", lot_ids=["L1"], estimated_tax=Decimal("80"))
    [edited] = edited_trades(stored(sell), [TradeQuantity(trade_id=sell.trade_id, quantity=9)], [])
    assert edited["lot_ids"] == [] and edited["estimated_tax"] is None
    assert edited["estimated_value"] == "3600.00"


def test_bad_edits_name_each_field() -> None:
    whole, fractional = trade("buy", "AAPL", "10", "200"), trade("buy", "VTI", "2.5", "250")
    trades = stored(whole, fractional)
    with pytest.raises(InvalidInput) as refused:
        edited_trades(
            trades,
            [
                TradeQuantity(trade_id=fractional.trade_id, quantity=Decimal("1.25")),  # fine
                TradeQuantity(trade_id=whole.trade_id, quantity=Decimal("2.5")),
                TradeQuantity(trade_id=uuid.uuid4(), quantity=1),
            ],
            [fractional.trade_id, uuid.uuid4()],
        )
    fields = {p.field: p.message for p in refused.value.errors}
    assert set(fields) == {"trades[1].quantity", "trades[2].trade_id", "remove[0]", "remove[1]"}
    assert "whole shares" in fields["trades[1].quantity"]
    with pytest.raises(InvalidInput) as refused:
        edited_trades(trades, [], [whole.trade_id, fractional.trade_id])
    assert [p.field for p in refused.value.errors] == ["remove"]
    assert "reject" in refused.value.errors[0].message
    with pytest.raises(InvalidInput) as refused:
        edited_trades(trades, [TradeQuantity(trade_id=whole.trade_id, quantity=0)], [])
    assert [p.field for p in refused.value.errors] == ["trades[0].quantity"]
    with pytest.raises(InvalidInput) as refused:
        edited_trades(trades, [], [])
    assert [p.field for p in refused.value.errors] == ["trades"]


# --- through the API, on PostgreSQL ------------------------------------------------------------


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    model = ModelChangedV1(
        model_id="pe-core",
        name="Core",
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol="AAPL", weight=Decimal(1))],
    )
    async with unit_of_work(database, "test") as uow:
        await service.remember_model(uow, "demo", model)
        await service.remember_model(uow, "pe-other", model.model_copy(update={"model_id": "pe-x"}))
    for tenant, account_id, model_id in (
        ("demo", ACCOUNT, "pe-core"),
        ("pe-other", OTHER_TENANTS, "pe-x"),
    ):
        async with unit_of_work(database, "test") as uow:
            await service.open_accounts(
                uow,
                PostgresAccountRepository(uow.session),
                tenant,
                "advisor@demo",
                [
                    AccountIn(
                        account_id=account_id,
                        household_id=f"{account_id}-H",
                        name="PE",
                        model_id=model_id,
                        auto_approve=False,
                    )
                ],
            )
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, roles=[Role.OVERLAY_MANAGER]) as client:
        yield client


async def a_pending_proposal(
    db: Database, event: TradesProposedV1 | None = None
) -> TradesProposedV1:
    event = event or proposed()
    await deliver(db, subscriptions(Settings()), event)
    return event


@pytest.mark.integration
async def test_an_edit_changes_quantities_and_removes_trades_and_the_approval_sends_them(
    api: httpx.AsyncClient, db: Database
) -> None:
    event = await a_pending_proposal(db)
    buy, sell, fractional = event.trades
    answer = await api.post(
        f"/proposals/{event.proposal_id}/edit",
        json={
            "trades": [
                {"trade_id": str(buy.trade_id), "quantity": "7"},
                {"trade_id": str(sell.trade_id), "quantity": "4"},
            ],
            "remove": [str(fractional.trade_id)],
            "note": "keep some cash back",
        },
    )
    assert answer.status_code == 200, answer.text
    edited = answer.json()
    assert edited["status"] == "pending"
    trades = {t["symbol"]: t for t in edited["trades"]}
    assert set(trades) == {"AAPL", "MSFT"}
    assert (trades["AAPL"]["quantity"], trades["AAPL"]["estimated_value"]) == ("7", "1400.00")
    assert trades["MSFT"]["lot_ids"] == ["L1", "L2"] and trades["MSFT"]["estimated_tax"] == "40.00"
    again = (await api.get(f"/proposals/{event.proposal_id}")).json()
    assert again == edited  # the answer is what a read gives back

    approved = await api.post(f"/proposals/{event.proposal_id}/approve", json={"note": "ok"})
    assert approved.status_code == 200, approved.text
    [sent] = [
        d.payload
        for d in await outbox_events(db, "trades-approved", ACCOUNT)
        if d.payload.proposal_id == event.proposal_id
    ]
    assert {(t.symbol, t.quantity) for t in sent.trades} == {
        ("AAPL", Decimal(7)),
        ("MSFT", Decimal(4)),
    }

    history = (await api.get(f"/proposals/{event.proposal_id}/history")).json()["items"]
    assert [r["action"] for r in history] == ["edit", "approve"]
    edit = history[0]
    assert edit["actor"] == "overlay-manager@demo"
    assert len(edit["before"]["trades"]) == 3 and len(edit["after"]["trades"]) == 2
    assert edit["after"]["note"] == "keep some cash back"
    assert edit["before"]["buy_value"] != edit["after"]["buy_value"]

    late = await api.post(
        f"/proposals/{event.proposal_id}/edit",
        json={"trades": [{"trade_id": str(buy.trade_id), "quantity": "1"}]},
    )
    assert late.status_code == 409
    assert late.headers["content-type"].startswith("application/problem+json")
    assert "already approved" in late.json()["detail"]


@pytest.mark.integration
async def test_a_bad_edit_is_422_naming_the_field_and_changes_nothing(
    api: httpx.AsyncClient, db: Database
) -> None:
    event = await a_pending_proposal(db)
    buy = event.trades[0]
    before = (await api.get(f"/proposals/{event.proposal_id}")).json()
    answer = await api.post(
        f"/proposals/{event.proposal_id}/edit",
        json={
            "trades": [
                {"trade_id": str(event.trades[1].trade_id), "quantity": "3"},
                {"trade_id": str(buy.trade_id), "quantity": "1.5"},
            ]
        },
    )
    assert answer.status_code == 422
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in answer.json()["errors"]] == ["trades[1].quantity"]
    unreadable = await api.post(
        f"/proposals/{event.proposal_id}/edit",
        json={"trades": [{"trade_id": str(buy.trade_id), "quantity": 2.5}]},
    )
    assert unreadable.status_code == 422
    assert "trades[0].quantity" in unreadable.text
    assert (await api.get(f"/proposals/{event.proposal_id}")).json() == before
    history = (await api.get(f"/proposals/{event.proposal_id}/history")).json()["items"]
    assert history == []


@pytest.mark.integration
async def test_only_a_decider_of_the_proposals_tenant_edits_it(
    api: httpx.AsyncClient, db: Database
) -> None:
    event = await a_pending_proposal(db)
    body = {"trades": [{"trade_id": str(event.trades[0].trade_id), "quantity": "1"}]}
    path = f"/proposals/{event.proposal_id}/edit"
    advisor = await api.post(path, json=body, headers=bearer("demo", [Role.ADVISOR]))
    assert advisor.status_code == 403 and "proposals:decide" in advisor.json()["detail"]
    theirs = await api.post(path, json=body, headers=bearer("pe-other", [Role.OVERLAY_MANAGER]))
    assert theirs.status_code == 404
    for read in (path.removesuffix("/edit"), path.replace("/edit", "/history")):
        assert (await api.get(read, headers=bearer("pe-other", [Role.ADMIN]))).status_code == 404
    assert (await api.get(f"/proposals/{event.proposal_id}")).json()["trades"][0]["quantity"] == (
        "10"
    )


@pytest.mark.integration
async def test_pending_counts_are_the_tenants_own(api: httpx.AsyncClient, db: Database) -> None:
    await a_pending_proposal(db)
    await a_pending_proposal(db, proposed(OTHER_TENANTS))

    async def pending(tenant: str) -> int:
        page = (await api.get("/proposal-counts", headers=bearer(tenant, [Role.SPONSOR]))).json()
        return sum(item["proposals"] for item in page["items"])

    async with db.sessions() as session:
        mine = (
            await session.execute(
                text(
                    "SELECT count(*) FROM proposals p JOIN accounts a USING (account_id) "
                    "WHERE a.tenant = 'demo' AND p.status = 'pending'"
                )
            )
        ).scalar_one()
    assert await pending("demo") == mine >= 1
    assert await pending("pe-other") == 1
