"""Reusable strategies over account-svc's REST API, on real PostgreSQL (the app without its
lifespan: what would be published is read from the outbox): a strategy checked as an
account's, accounts that follow it, a new version carried to each follower (account-changed
with the resolved strategy, an audit record), and the inline form still working."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc.main import spec
from account_test_support import remember_models
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.db import Database
from ballast_common.outbox import outbox
from ballast_common.testing import api_client, migrated_database
from sqlalchemy import select

pytestmark = pytest.mark.integration

TENANT, OTHER = "stratco", "strat-evil"
EQ, BONDS, INTL = "st-eq", "st-bonds", "st-intl"


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    models = [(TENANT, m) for m in (EQ, BONDS, INTL)] + [(OTHER, "st-x")]
    await remember_models(database, models, symbol="AAA")
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=TENANT) as http:
        yield http


@pytest.fixture
async def evil(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=OTHER) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def body(eq: str, bonds: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Core and bonds",
        "sleeves": [
            {"sleeve_id": "core", "model_id": EQ, "weight": eq},
            {"sleeve_id": "bonds", "model_id": BONDS, "weight": bonds},
        ],
    } | extra


async def open_sma(api: httpx.AsyncClient, account_id: str) -> None:
    response = await api.post(
        "/accounts",
        json={"account_id": account_id, "household_id": "HH-ST", "name": "S", "model_id": EQ},
    )
    assert response.status_code == 201, response.text


async def events(db: Database, account_id: str) -> list[AccountChangedV1]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == "account-changed", outbox.c.key == account_id)
            .order_by(outbox.c.id)
        )
        return [AccountChangedV1.model_validate(json.loads(r[0])["payload"]) for r in rows]


def weights(strategy: Any) -> list[tuple[str, Decimal]]:
    return [(s.sleeve_id, s.weight) for s in strategy.sleeves]


async def test_accounts_follow_a_strategy_and_each_version_reaches_them(api, db):
    strategy_id = unique("st")
    created = await api.put(f"/strategies/{strategy_id}", json=body("0.6", "0.4"))
    assert created.status_code == 200, created.text
    assert created.json()["version"] == 1 and created.json()["followers"] == 0
    followers = [unique("ST-F"), unique("ST-F")]
    own = unique("ST-OWN")
    for account_id in (*followers, own):
        await open_sma(api, account_id)
    for account_id in followers:
        followed = await api.put(
            f"/accounts/{account_id}/strategy", json={"strategy_id": strategy_id}
        )
        assert followed.status_code == 200, followed.text
        assert [s["weight"] for s in followed.json()["sleeves"]] == ["0.6", "0.4"]
        event = (await events(db, account_id))[-1]
        assert event.model_id is None and event.strategy is not None
        assert weights(event.strategy) == [("core", Decimal("0.6")), ("bonds", Decimal("0.4"))]
    inline = {"sleeves": body("0.5", "0.5")["sleeves"], "rebalance_range": "band"}
    assert (await api.put(f"/accounts/{own}/strategy", json=inline)).status_code == 200
    assert (await api.get(f"/strategies/{strategy_id}")).json()["followers"] == 2

    same = await api.put(f"/strategies/{strategy_id}", json=body("0.6", "0.4"))
    assert same.json()["version"] == 1
    assert len(await events(db, followers[0])) == 2  # opened, followed: nothing new

    changed = await api.put(
        f"/strategies/{strategy_id}", json=body("0.7", "0.3", rebalance_range="interior")
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    for account_id in followers:
        event = (await events(db, account_id))[-1]
        assert event.strategy is not None and event.strategy.rebalance_range == "interior"
        assert weights(event.strategy) == [("core", Decimal("0.7")), ("bonds", Decimal("0.3"))]
        shown = (await api.get(f"/accounts/{account_id}/strategy")).json()
        assert [s["weight"] for s in shown["sleeves"]] == ["0.7", "0.3"]
        history = (await api.get(f"/accounts/{account_id}/settings-history")).json()["items"]
        assert history[0]["action"] == f"follow-strategy:{strategy_id}@2"
        (change,) = history[0]["changes"]
        assert change["field"] == "strategy"
        assert [s["weight"] for s in change["before"]["sleeves"]] == ["0.6", "0.4"]
        assert [s["weight"] for s in change["after"]["sleeves"]] == ["0.7", "0.3"]
    assert len(await events(db, own)) == 2  # its own strategy: untouched
    own_strategy = (await api.get(f"/accounts/{own}/strategy")).json()
    assert [s["weight"] for s in own_strategy["sleeves"]] == ["0.5", "0.5"]

    # its own sleeves, or no strategy: it follows no more
    inline_again = {"sleeves": body("0.2", "0.8")["sleeves"]}
    assert (await api.put(f"/accounts/{followers[0]}/strategy", json=inline_again)).is_success
    assert (await api.delete(f"/accounts/{followers[1]}/strategy")).is_success
    assert (await api.get(f"/strategies/{strategy_id}")).json()["followers"] == 0
    await api.put(f"/strategies/{strategy_id}", json=body("0.8", "0.2"))
    kept = (await api.get(f"/accounts/{followers[0]}/strategy")).json()
    assert [s["weight"] for s in kept["sleeves"]] == ["0.2", "0.8"]


@pytest.mark.parametrize(
    ("strategy", "field"),
    [
        (body("0.6", "0.3"), "sleeves"),
        (
            body("0.6", "0.4")
            | {
                "sleeves": [
                    {"sleeve_id": "a", "model_id": EQ, "weight": "0.5"},
                    {"sleeve_id": "b", "model_id": "st-x", "weight": "0.5"},
                ]
            },
            "sleeves[1].model_id",
        ),
        (body("0.6", "0.4", colour="red"), "colour"),
        ({k: v for k, v in body("0.6", "0.4").items() if k != "name"}, "name"),
    ],
)
async def test_a_strategy_breaking_an_accounts_rules_is_refused(api, strategy, field):
    strategy_id = unique("st-bad")
    response = await api.put(f"/strategies/{strategy_id}", json=strategy)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert (await api.get(f"/strategies/{strategy_id}")).status_code == 404


async def test_following_needs_a_known_strategy_and_not_both_forms(api, evil):
    account_id, strategy_id = unique("ST-B"), unique("st")
    await open_sma(api, account_id)
    await api.put(f"/strategies/{strategy_id}", json=body("0.6", "0.4"))
    path = f"/accounts/{account_id}/strategy"
    unknown = await api.put(path, json={"strategy_id": "st-none"})
    assert unknown.status_code == 422
    assert [e["field"] for e in unknown.json()["errors"]] == ["strategy_id"]
    both = await api.put(
        path, json={"strategy_id": strategy_id, "sleeves": body("0.5", "0.5")["sleeves"]}
    )
    assert both.status_code == 422
    assert [e["field"] for e in both.json()["errors"]] == ["sleeves"]
    neither = await api.put(path, json={})
    assert neither.status_code == 422
    assert [e["field"] for e in neither.json()["errors"]] == ["sleeves"]
    assert (await api.get(f"/accounts/{account_id}")).json()["strategy"] is None

    # another tenant neither sees nor follows it
    assert (await evil.get(f"/strategies/{strategy_id}")).status_code == 404
    listed = (await evil.get("/strategies")).json()["items"]
    assert strategy_id not in [s["strategy_id"] for s in listed]
    theirs = unique("ST-E")
    opened = await evil.post(
        "/accounts",
        json={"account_id": theirs, "household_id": "HH-STE", "name": "E", "model_id": "st-x"},
    )
    assert opened.status_code == 201, opened.text
    refused = await evil.put(f"/accounts/{theirs}/strategy", json={"strategy_id": strategy_id})
    assert refused.status_code == 422
    # the same id is each tenant's own
    mine = await evil.put(
        f"/strategies/{strategy_id}",
        json={
            "name": "E",
            "sleeves": [
                {
                    "sleeve_id": "x",
                    "model_id": "st-x",
                    "weight": "1",
                    "band": {"kind": "absolute", "width": "0"},
                }
            ],
        },
    )
    assert mine.status_code == 200, mine.text
    assert (await api.get(f"/strategies/{strategy_id}")).json()["name"] == "Core and bonds"
