"""account-svc's REST API for per-account rebalance settings, restrictions, tax settings, UMA
strategies and security lists, on real PostgreSQL (the app without its lifespan: no Kafka;
what would be published is read from the outbox)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from ballast_common.contracts.events import (
    AccountChangedV1,
    ModelChangedV1,
    ModelTargetV1,
    ProposalRejectedV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.outbox import outbox
from ballast_common.testing import api_client, bearer, delivery, migrated_database, unit_of_work
from sqlalchemy import select

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        for model_id in ("eq", "bonds", "intl"):
            await service.remember_model(
                uow,
                "demo",
                ModelChangedV1(
                    model_id=model_id,
                    name=model_id,
                    version=1,
                    changed_by="pm",
                    targets=[ModelTargetV1(symbol="AAA", weight=Decimal(1))],
                ),
            )
    yield database
    await database.dispose()


@pytest.fixture
async def api(db) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as http:
        yield http


async def published(db, topic: str, key: str) -> list[dict[str, Any]]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == topic).order_by(outbox.c.id)
        )
        payloads = [json.loads(r[0])["payload"] for r in rows]
    return [p for p in payloads if p.get("account_id") == key]


async def last_account_event(db, account_id: str) -> AccountChangedV1:
    return AccountChangedV1.model_validate((await published(db, "account-changed", account_id))[-1])


async def open_account(api: httpx.AsyncClient, account_id: str, **extra: Any) -> dict[str, Any]:
    body = {"account_id": account_id, "household_id": "HH-9", "name": "Test", "model_id": "eq"}
    response = await api.post("/accounts", json=body | extra)
    assert response.status_code == 201, response.text
    return response.json()


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json()["errors"]]


async def test_rebalance_settings_put_replaces_and_publishes(api, db):
    opened = await open_account(api, "S-1")
    assert opened["rebalance_settings"] == {k: None for k in opened["rebalance_settings"]}
    body = {
        "min_trade_value": "50",
        "min_opening_trade_value": "200",
        "fractional": True,
        "cash_target": "0.02",
        "cash_reserve": "100",
        "security_band": {"kind": "relative", "width": "0.1"},
        "freed_cash": "sector",
    }
    response = await api.put("/accounts/S-1/rebalance-settings", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["cash_target"] == "0.02"
    # PUT replaces: what is not given goes back to the default
    response = await api.put("/accounts/S-1/rebalance-settings", json={"min_trade_value": "75"})
    got = (await api.get("/accounts/S-1/rebalance-settings")).json()
    assert got["min_trade_value"] == "75" and got["cash_target"] is None
    event = await last_account_event(db, "S-1")
    assert event.rebalance_settings is not None
    assert event.rebalance_settings.min_trade_value == Decimal("75")
    assert event.rebalance_settings.cash_target is None
    assert event.model_id == "eq" and event.strategy is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"min_trade_vlaue": "50"}, "min_trade_vlaue"),
        ({"cash_target": "1"}, "cash_target"),
        ({"min_trade_value": "-5"}, "min_trade_value"),
        ({"security_band": {"kind": "wide", "width": "0.1"}}, "security_band.kind"),
        ({"share_decimals": 9}, "share_decimals"),
    ],
)
async def test_bad_rebalance_settings_are_named(api, db, body, field):
    await open_account(api, f"S-BAD-{uuid.uuid4().hex[:6]}")
    response = await api.put("/accounts/S-1/rebalance-settings", json=body)
    assert response.status_code == 422
    assert field in problem_fields(response)


async def test_settings_of_an_unknown_account_are_404(api):
    response = await api.put("/accounts/NOPE/tax-settings", json={})
    assert response.status_code == 404


async def test_restrictions_record_who_and_why_and_lists_travel_with_members(api, db):
    await open_account(api, "S-2")
    restrictions = [
        {"kind": "do_not_buy", "scope": "sector", "value": "Energy", "reason": "client screen"},
        {
            "kind": "do_not_hold",
            "scope": "list",
            "value": "esg-1",
            "reason": "ESG",
            "source": "firm",
        },
    ]
    response = await api.put(
        "/accounts/S-2/restrictions",
        json={"restrictions": restrictions},
        headers=bearer(subject="adv"),
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["restrictions[1].value"]
    assert "unknown security list esg-1" in response.text

    listed = await api.put("/security-lists/esg-1", json={"name": "ESG", "symbols": ["XOM", "CVX"]})
    assert listed.status_code == 200 and listed.json()["symbols"] == ["CVX", "XOM"]
    response = await api.put(
        "/accounts/S-2/restrictions",
        json={"restrictions": restrictions},
        headers=bearer(subject="adv"),
    )
    assert response.status_code == 200, response.text
    stored = response.json()["restrictions"]
    assert [(r["kind"], r["set_by"], r["source"]) for r in stored] == [
        ("do_not_buy", "adv", "client"),
        ("do_not_hold", "adv", "firm"),
    ]
    event = await last_account_event(db, "S-2")
    assert [(r.scope, r.value, r.symbols, r.reason) for r in event.restrictions] == [
        ("sector", "Energy", [], "client screen"),
        ("list", "esg-1", ["CVX", "XOM"], "ESG"),
    ]

    # a list change announces every account restricted by it again, with the new members
    before = len(await published(db, "account-changed", "S-2"))
    await api.put("/security-lists/esg-1", json={"name": "ESG", "symbols": ["XOM", "BP"]})
    after = await published(db, "account-changed", "S-2")
    assert len(after) == before + 1
    assert AccountChangedV1.model_validate(after[-1]).restrictions[1].symbols == ["BP", "XOM"]

    # replacing keeps an unchanged restriction's author and time; an empty list clears
    again = await api.put(
        "/accounts/S-2/restrictions",
        json={"restrictions": restrictions[:1]},
        headers=bearer(subject="b"),
    )
    assert again.json()["restrictions"][0]["set_by"] == "b"
    cleared = await api.put("/accounts/S-2/restrictions", json={"restrictions": []})
    assert cleared.json() == {"restrictions": []}
    assert (await last_account_event(db, "S-2")).restrictions == []


async def test_duplicate_restriction_is_named(api):
    await open_account(api, "S-3")
    item = {"kind": "do_not_sell", "scope": "security", "value": "AAA", "reason": "low basis"}
    response = await api.put("/accounts/S-3/restrictions", json={"restrictions": [item, item]})
    assert response.status_code == 422 and problem_fields(response) == ["restrictions[1]"]


async def test_tax_settings_defaults_and_replace(api, db):
    await open_account(api, "S-4")
    defaults = (await api.get("/accounts/S-4/tax-settings")).json()
    assert defaults == {
        "relief_method": "fifo",
        "short_term_rate": "0.37",
        "long_term_rate": "0.20",
        "gain_budget": None,
        "gain_budget_mode": "hard",
        "avoid_short_term_gains": False,
        "harvest": False,
        "harvest_min_loss_percent": "10",
        "harvest_min_loss_dollars": "100",
    }
    body = {
        "relief_method": "mintax",
        "short_term_rate": "0.40",
        "long_term_rate": "0.238",
        "gain_budget": "20000",
        "gain_budget_mode": "warn",
        "avoid_short_term_gains": True,
        "harvest": True,
        "harvest_min_loss_percent": "5",
        "harvest_min_loss_dollars": "250",
    }
    response = await api.put("/accounts/S-4/tax-settings", json=body)
    assert response.status_code == 200 and response.json() == body
    event = await last_account_event(db, "S-4")
    assert event.tax_settings is not None
    assert (event.tax_settings.relief_method, event.tax_settings.gain_budget) == (
        "mintax",
        Decimal("20000"),
    )
    bad = await api.put("/accounts/S-4/tax-settings", json={"relief_method": "lifo-ish"})
    assert bad.status_code == 422 and problem_fields(bad) == ["relief_method"]
    bad = await api.put("/accounts/S-4/tax-settings", json={"short_term_rate": "1.5"})
    assert bad.status_code == 422 and problem_fields(bad) == ["short_term_rate"]


def strategy(*sleeves: tuple[str, str, str, dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {
        "sleeves": [
            {"sleeve_id": s, "model_id": m, "weight": w, "band": band} for s, m, w, band in sleeves
        ],
        **extra,
    }


ABS5 = {"kind": "absolute", "width": "0.05"}


async def test_a_uma_strategy_is_validated_and_published(api, db):
    await open_account(api, "S-5")
    good = strategy(
        ("core", "eq", "0.6", ABS5),
        ("fixed", "bonds", "0.4", {"kind": "relative", "width": "0.2"}),
        rebalance_range="interior",
        interior_pct="25",
    )
    response = await api.put("/accounts/S-5/strategy", json=good)
    assert response.status_code == 200, response.text
    account = (await api.get("/accounts/S-5")).json()
    assert account["model_id"] is None and account["strategy"]["rebalance_range"] == "interior"
    event = await last_account_event(db, "S-5")
    assert event.model_id is None and event.strategy is not None
    assert [(s.sleeve_id, s.model_id, s.weight) for s in event.strategy.sleeves] == [
        ("core", "eq", Decimal("0.6")),
        ("fixed", "bonds", Decimal("0.4")),
    ]
    assert event.strategy.interior_pct == Decimal("25")

    # a UMA gets no single model; leaving the strategy makes it follow none until patched
    patched = await api.patch("/accounts/S-5", json={"model_id": "eq"})
    assert patched.status_code == 409 and problem_fields(patched) == ["model_id"]
    assert (await api.delete("/accounts/S-5/strategy")).status_code == 200
    assert (await api.get("/accounts/S-5/strategy")).status_code == 404
    assert (await api.patch("/accounts/S-5", json={"model_id": "eq"})).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (strategy(("a", "eq", "0.6", ABS5), ("b", "bonds", "0.3", ABS5)), "sleeves", "add up to"),
        (
            strategy(("a", "eq", "0.6", ABS5), ("b", "nope", "0.4", ABS5)),
            "sleeves[1].model_id",
            "unknown model nope",
        ),
        (
            strategy(("a", "eq", "0.97", ABS5), ("b", "bonds", "0.03", ABS5)),
            "sleeves[0].band.width",
            "wider than the target allows",
        ),
        (
            strategy(("a", "eq", "0.5", ABS5), ("a", "bonds", "0.5", ABS5)),
            "sleeves[1].sleeve_id",
            "used twice",
        ),
        (
            strategy(("a", "eq", "0.5", ABS5), ("b", "eq", "0.5", ABS5)),
            "sleeves[1].model_id",
            "one per model",
        ),
        (
            strategy(("a", "eq", "1", {"kind": "relative", "width": "1.5"})),
            "sleeves[0].band.width",
            "",
        ),
        ({"sleeves": []}, "sleeves", ""),
    ],
)
async def test_bad_strategies_are_named(api, body, field, words):
    if (await api.get("/accounts/S-6")).status_code == 404:
        await open_account(api, "S-6")
    response = await api.put("/accounts/S-6/strategy", json=body)
    assert response.status_code == 422, response.text
    assert field in problem_fields(response)
    assert words in response.text


async def test_opening_a_uma_with_everything_in_one_call(api, db):
    opened = await open_account(
        api,
        "S-7",
        model_id=None,
        strategy=strategy(("us", "eq", "0.7", ABS5), ("world", "intl", "0.3", ABS5)),
        rebalance_settings={"fractional": True},
        tax_settings={"relief_method": "hifo"},
        restrictions=[
            {"kind": "do_not_buy", "scope": "security", "value": "AAA", "reason": "insider"}
        ],
    )
    assert opened["strategy"]["sleeves"][1]["model_id"] == "intl"
    assert opened["restrictions"][0]["set_by"] == "admin@demo"  # the token's subject
    event = await last_account_event(db, "S-7")
    assert event.strategy is not None and event.tax_settings is not None
    assert event.tax_settings.relief_method == "hifo"
    both = await api.post(
        "/accounts",
        json={
            "account_id": "S-8",
            "household_id": "HH-9",
            "name": "x",
            "model_id": "eq",
            "strategy": strategy(("us", "eq", "1", ABS5)),
        },
    )
    assert both.status_code == 422 and problem_fields(both) == ["model_id"]


async def test_rejecting_a_proposal_publishes_proposal_rejected(api, db):
    await open_account(api, "S-9", auto_approve=False)
    event = TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id="S-9",
        model_id="eq",
        model_version=1,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("0"),
        trades=[
            TradeV1(
                trade_id=uuid.uuid4(),
                symbol="AAA",
                side="buy",
                quantity=Decimal(10),
                estimated_price=Decimal(100),
                estimated_value=Decimal(1000),
                reason="drift",
                explanation="Buy 10 AAA.",
            )
        ],
    )
    async with unit_of_work(db, "test") as uow:
        await service.receive_proposals(
            uow, PostgresAccountRepository(uow.session), [delivery(event, source="rebalance-svc")]
        )
    response = await api.post(
        f"/proposals/{event.proposal_id}/reject",
        json={"note": "client is away"},
        headers=bearer(subject="advisor@demo"),
    )
    assert response.status_code == 200 and response.json()["status"] == "rejected"
    [rejected] = await published(db, "proposal-rejected", "S-9")
    assert ProposalRejectedV1.model_validate(rejected) == ProposalRejectedV1(
        proposal_id=event.proposal_id,
        account_id="S-9",
        rejected_by="advisor@demo",
        reason="client is away",
    )
    assert await published(db, "trades-approved", "S-9") == []


async def test_a_security_restriction_names_a_symbol(api):
    await open_account(api, "S-10")
    restrictions = [
        {"kind": "do_not_buy", "scope": "security", "value": "XOM", "reason": "no oil"},
        {"kind": "do_not_buy", "scope": "security", "value": "EXXON MOBIL", "reason": "no oil"},
        {"kind": "do_not_buy", "scope": "security", "value": "ABCDEFGHIJKLMNOPQ", "reason": "r"},
    ]
    response = await api.put(
        "/accounts/S-10/restrictions",
        json={"restrictions": restrictions},
        headers=bearer(subject="a"),
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["restrictions[1].value", "restrictions[2].value"]
    assert "'EXXON MOBIL' is not a symbol" in response.text


async def test_the_models_accounts_may_follow_are_listed(api):
    models = {m["model_id"]: m for m in (await api.get("/models")).json()["items"]}
    assert {"eq", "bonds", "intl"} <= set(models)
    assert models["eq"] == {"model_id": "eq", "name": "eq", "version": 1}
