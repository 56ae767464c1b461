"""A model that is a direct index (issue 12 item 4), over REST on real PostgreSQL: its risk
model, plain-English optimizer settings and the targets' factor exposures are validated
(422 naming the field, nothing stored or announced), stored, answered by GET, audited,
published in model-changed, and a change of any of them is a new version."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database, outbox_events
from model_hub_svc.main import spec

pytestmark = pytest.mark.integration

PRICES = {"DIA1": "100", "DIB1": "50", "DIC1": "20"}


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as client:
        securities = [
            {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "Tech", "price": p}
            for s, p in PRICES.items()
        ]
        assert (await client.put("/securities", json={"securities": securities})).is_success
        yield client


def new_id() -> str:
    return f"di-{uuid.uuid4().hex[:8]}"


def index_body(**direct_index: Any) -> dict[str, Any]:
    risk = {
        "factors": ["market", "value"],
        "covariance": [["0.0256", "0.001"], ["0.001", "0.0025"]],
        "specific_volatility": "0.3",
    }
    settings = {
        "tax_sensitivity": "high",
        "tracking_tolerance": "0.01",
        "gain_budget": "5000",
        "harvesting": True,
        "tilts": {"value": "0.2"},
        "exclusion_rule": "sector",
    }
    risk.update(direct_index.pop("risk_model", {}))
    settings.update(direct_index.pop("settings", {}))
    return {
        "name": "Direct index",
        "targets": [
            {"symbol": "DIA1", "weight": "0.5", "factor_exposures": {"market": "1.1"}},
            {"symbol": "DIB1", "weight": "0.3", "factor_exposures": {"value": "-0.5"}},
            {"symbol": "DIC1", "weight": "0.2"},
        ],
        "direct_index": {"risk_model": risk, "settings": settings},
    }


async def test_a_direct_index_is_stored_answered_audited_and_published(api, db):
    model_id = new_id()
    response = await api.put(f"/models/{model_id}", json=index_body())
    assert response.status_code in (200, 201), response.text
    for body in (response.json(), (await api.get(f"/models/{model_id}")).json()):
        direct = body["direct_index"]
        assert direct["risk_model"]["factors"] == ["market", "value"]
        assert direct["settings"]["tax_sensitivity"] == "high"
        assert direct["settings"]["tilts"] == {"value": "0.2"}
        exposures = {t["symbol"]: t["factor_exposures"] for t in body["targets"]}
        assert exposures["DIA1"] == {"market": "1.1"} and exposures["DIC1"] == {}
    [event] = await outbox_events(db, "model-changed", model_id)
    direct_index = event.payload.direct_index
    assert direct_index is not None
    assert direct_index.risk_model.covariance[0][1] == Decimal("0.001")
    assert direct_index.settings.exclusion_rule == "sector"
    assert direct_index.settings.gain_budget == Decimal("5000")
    by_symbol = {t.symbol: t for t in event.payload.targets}
    assert by_symbol["DIB1"].factor_exposures == {"value": Decimal("-0.5")}
    trail = (await api.get(f"/models/{model_id}/audit")).json()["items"]
    assert trail[0]["after"]["direct_index"]["settings"]["tracking_tolerance"] == "0.01"
    assert trail[0]["after"]["targets"]["DIA1"]["factor_exposures"] == {"market": "1.1"}
    # the same again is no new version; a setting changed is one
    again = await api.put(f"/models/{model_id}", json=index_body())
    assert again.json()["created"] is False
    changed = index_body(settings={"tax_sensitivity": "low"})
    assert (await api.put(f"/models/{model_id}", json=changed)).json()["version"] == 2
    exposures_changed = index_body()
    exposures_changed["targets"][2]["factor_exposures"] = {"value": "0.4"}
    assert (await api.put(f"/models/{model_id}", json=exposures_changed)).json()["version"] == 3
    assert len(await outbox_events(db, "model-changed", model_id)) == 3


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            index_body(risk_model={"covariance": [["0.0256", "0.001"]]}),
            "direct_index.risk_model.covariance",
            "not square",
        ),
        (
            index_body(risk_model={"covariance": [["0.0256", "0.001"], ["0.002", "0.0025"]]}),
            "direct_index.risk_model.covariance[0][1]",
            "not symmetric",
        ),
        (
            index_body(risk_model={"covariance": [["-0.01", "0"], ["0", "0.0025"]]}),
            "direct_index.risk_model.covariance[0][0]",
            "a variance cannot be negative",
        ),
        (
            index_body(settings={"tilts": {"quality": "0.1"}}),
            "direct_index.settings.tilts.quality",
            "unknown factor quality",
        ),
        (
            index_body(settings={"tilts": {"value": "3"}}),
            "direct_index.settings.tilts.value",
            "within ±2",
        ),
        (
            index_body(settings={"tracking_tolerance": "0.5"}),
            "direct_index.settings.tracking_tolerance",
            "out of range",
        ),
        (
            index_body(settings={"tracking_tolerance": "0"}),
            "direct_index.settings.tracking_tolerance",
            "out of range",
        ),
        (
            index_body(risk_model={"factors": ["market", "market"]}),
            "direct_index.risk_model.factors[1]",
            "appears more than once",
        ),
        (
            {**index_body(), "targets": [
                {"symbol": "DIA1", "weight": "1", "factor_exposures": {"beta": "1"}}
            ]},
            "targets[0].factor_exposures.beta",
            "unknown factor beta",
        ),
        (
            {"name": "Plain", "targets": [
                {"symbol": "DIA1", "weight": "1", "factor_exposures": {"market": "1"}}
            ]},
            "targets[0].factor_exposures",
            "need a direct_index",
        ),
        (
            {**index_body(), "kind": "shares", "targets": [{"symbol": "DIA1", "shares": "1"}]},
            "direct_index",
            "a weights model",
        ),
        (
            index_body(settings={"exclusion_rule": "nearest"}),
            "direct_index.settings.exclusion_rule",
            "",
        ),
    ],
)  # fmt: skip
async def test_a_bad_direct_index_is_refused_naming_the_field_and_changes_nothing(
    api, db, body, field, message
):
    model_id = new_id()
    response = await api.put(f"/models/{model_id}", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["errors"][0]["field"] == field, problem
    assert message in problem["detail"] + problem["errors"][0]["message"]
    assert (await api.get(f"/models/{model_id}")).status_code == 404
    assert await outbox_events(db, "model-changed", model_id) == []


async def test_a_child_model_cannot_be_a_direct_index(api):
    parent = new_id()
    assert (await api.put(f"/models/{parent}", json=index_body())).is_success
    body = {
        "name": "Child",
        "parent_model_id": parent,
        "direct_index": index_body()["direct_index"],
    }
    response = await api.put(f"/models/{new_id()}", json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "direct_index"
