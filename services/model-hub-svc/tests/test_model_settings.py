"""The manager's settings on a model (issue 13, item 5), over REST on real PostgreSQL: share
models, hold plus replacement (buy lists), per-security bands, tax-loss proxies and
swap-back are validated (422 naming the field, nothing stored or announced), stored,
answered by GET, recorded in the audit trail and published in model-changed; a version is
new when any of them changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database, outbox_events, unit_of_work
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.repository import PostgresModelHubRepository

pytestmark = pytest.mark.integration

PRICES = {"STA": "100", "STB": "50", "STC": "20", "STD": "10"}


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as client:
        securities = [
            {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X", "price": p}
            for s, p in PRICES.items()
        ]
        assert (await client.put("/securities", json={"securities": securities})).is_success
        yield client


def new_id() -> str:
    return f"set-{uuid.uuid4().hex[:8]}"


SETTINGS_MODEL: dict[str, Any] = {
    "name": "Core with settings",
    "swap_back": True,
    "targets": [
        {
            "symbol": "STA",
            "weight": "0.5",
            "band": {"kind": "relative", "width": "0.1"},
            "tax_loss_proxies": ["STB", "STC"],
        },
        {"symbol": "STB", "weight": "0.3", "hold": True, "replacement": "STD"},
        {"symbol": "STC", "weight": "0.2", "hold": True},
    ],
}


async def test_settings_are_stored_answered_audited_and_published(api, db):
    model_id = new_id()
    put = await api.put(f"/models/{model_id}", json=SETTINGS_MODEL)
    assert put.status_code == 201, put.text
    got = (await api.get(f"/models/{model_id}")).json()
    assert (got["kind"], got["swap_back"], got["parent"]) == ("weights", True, None)
    sta, stb, stc = got["targets"]
    assert sta["band"] == {"kind": "relative", "width": "0.10000000"}
    assert sta["tax_loss_proxies"] == ["STB", "STC"] and not sta["hold"]
    assert (stb["hold"], stb["replacement"], stc["hold"], stc["replacement"]) == (
        True,
        "STD",
        True,
        None,
    )
    [event] = await outbox_events(db, "model-changed", model_id)
    assert event.payload.swap_back is True and event.payload.kind == "weights"
    by_symbol = {t.symbol: t for t in event.payload.targets}
    assert by_symbol["STA"].band is not None and by_symbol["STA"].band.kind == "relative"
    assert by_symbol["STA"].band.width == Decimal("0.1")
    assert by_symbol["STA"].tax_loss_proxies == ["STB", "STC"]
    assert (by_symbol["STB"].hold, by_symbol["STB"].replacement) == (True, "STD")
    [record] = (await api.get(f"/models/{model_id}/audit")).json()["items"]
    assert record["after"]["swap_back"] is True
    assert record["after"]["targets"]["STB"] == {
        "weight": "0.3000000000",
        "hold": True,
        "replacement": "STD",
    }


async def test_a_share_model_publishes_the_weights_its_shares_imply(api, db):
    model_id = new_id()
    body = {
        "name": "Shares",
        "kind": "shares",
        "targets": [{"symbol": "STA", "shares": "3"}, {"symbol": "STB", "shares": "4"}],
    }
    put = await api.put(f"/models/{model_id}", json=body)
    assert put.status_code == 201, put.text
    got = (await api.get(f"/models/{model_id}")).json()
    assert got["kind"] == "shares"
    assert [(t["symbol"], t["shares"], t["weight"]) for t in got["targets"]] == [
        ("STA", "3.00000000", None),
        ("STB", "4.00000000", None),
    ]
    [event] = await outbox_events(db, "model-changed", model_id)
    weights = {t.symbol: (t.shares, t.weight) for t in event.payload.targets}
    # 3 x 100 and 4 x 50 of 500
    assert weights == {"STA": (Decimal(3), Decimal("0.6")), "STB": (Decimal(4), Decimal("0.4"))}
    assert event.payload.kind == "shares"


def _with(index: int, **changes: Any) -> dict[str, Any]:
    targets = [dict(t) for t in SETTINGS_MODEL["targets"]]
    targets[index].update(changes)
    return {**SETTINGS_MODEL, "targets": targets}


def _shares(*targets: dict[str, Any]) -> dict[str, Any]:
    return {"name": "Shares", "kind": "shares", "targets": list(targets)}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (_with(1, replacement="NOPE"), "targets[1].replacement", "unknown security NOPE"),
        (_with(1, replacement="STB"), "targets[1].replacement", "STB cannot replace itself"),
        (_with(2, replacement="STD", hold=False), "targets[2].replacement", "set hold"),
        (_with(0, tax_loss_proxies=["ZZZ"]), "targets[0].tax_loss_proxies[0]", "unknown security"),
        (_with(0, tax_loss_proxies=["STA"]), "targets[0].tax_loss_proxies[0]", "its own proxy"),
        (
            _with(0, tax_loss_proxies=["STB", "STB"]),
            "targets[0].tax_loss_proxies[1]",
            "proxy STB appears more than once",
        ),
        (_with(0, weight=None), "targets[0].weight", "a weights model needs a weight"),
        (_with(2, shares="5"), "targets[2].shares", "shares are for a share model"),
        (_with(2, weight="0.3"), "targets", "sum to 110"),
        (
            _shares({"symbol": "STA", "shares": "1"}, {"symbol": "STB"}),
            "targets[1].shares",
            "needs shares > 0",
        ),
        (
            _shares({"symbol": "STA", "shares": "1"}, {"symbol": "STB", "shares": "0"}),
            "targets[1].shares",
            "needs shares > 0",
        ),
        (
            _shares(
                {"symbol": "STA", "shares": "1", "weight": "1"}, {"symbol": "STB", "shares": "1"}
            ),
            "targets[1].weight",
            "weights for every target or none",
        ),
        ({"name": "Nothing"}, "targets", "a model needs targets"),
        (
            {**SETTINGS_MODEL, "overrides": {"remove": ["STA"]}},
            "overrides",
            "overrides need a parent_model_id",
        ),
    ],
)
async def test_bad_settings_are_refused_naming_the_field_and_change_nothing(
    api, db, body, field, message
):
    model_id = new_id()
    response = await api.put(f"/models/{model_id}", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert message in problem["detail"]
    assert problem["errors"][0]["field"] == field
    assert (await api.get(f"/models/{model_id}")).status_code == 404
    assert await outbox_events(db, "model-changed", model_id) == []


async def test_a_band_wider_than_the_whole_is_refused_naming_the_field(api):
    response = await api.put(f"/models/{new_id()}", json=_with(0, band={"width": "1.5"}))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["targets[0].band.width"]


@pytest.mark.parametrize(
    "change",
    [
        {"swap_back": False},
        {"targets": _with(0, band={"kind": "absolute", "width": "0.02"})["targets"]},
        {"targets": _with(0, tax_loss_proxies=["STC"])["targets"]},
        {"targets": _with(2, hold=False)["targets"]},
        {"targets": _with(1, replacement="STA")["targets"]},
    ],
)
async def test_a_version_is_new_when_any_setting_changes(api, db, change):
    model_id = new_id()
    assert (await api.put(f"/models/{model_id}", json=SETTINGS_MODEL)).status_code == 201
    same = await api.put(f"/models/{model_id}", json=SETTINGS_MODEL)
    assert (same.status_code, same.json()["created"], same.json()["version"]) == (200, False, 1)
    changed = await api.put(f"/models/{model_id}", json={**SETTINGS_MODEL, **change})
    assert (changed.status_code, changed.json()["version"]) == (201, 2), changed.text
    assert len(await outbox_events(db, "model-changed", model_id)) == 2


# --- asset allocations -------------------------------------------------------------------------

STOCKS, BONDS = "Alloc Stocks", "Alloc Bonds"
ALLOCATED = {"ALA": (STOCKS, "100"), "ALB": (STOCKS, "50"), "ALC": (BONDS, "20")}


@pytest.fixture
async def allocation(api) -> str:
    securities = [
        {"symbol": s, "name": s, "asset_class": c, "sector": "X", "price": p}
        for s, (c, p) in ALLOCATED.items()
    ]
    assert (await api.put("/securities", json={"securities": securities})).is_success
    allocation_id = new_id()
    body = {"name": "60/40", "weights": {STOCKS: "0.6", BONDS: "0.4"}}
    made = await api.put(f"/allocations/{allocation_id}", json=body)
    assert made.status_code == 201, made.text
    return allocation_id


async def test_allocations_are_versioned_and_audited(api, allocation):
    body = {"name": "60/40", "weights": {STOCKS: "0.6", BONDS: "0.4"}}
    same = await api.put(f"/allocations/{allocation}", json=body)
    assert (same.status_code, same.json()["created"]) == (200, False)
    changed = await api.put(
        f"/allocations/{allocation}", json={**body, "weights": {STOCKS: "0.7", BONDS: "0.3"}}
    )
    assert (changed.status_code, changed.json()["version"]) == (201, 2)
    first = (await api.get(f"/allocations/{allocation}/versions/1")).json()
    assert first["weights"] == {BONDS: "0.4", STOCKS: "0.6"}
    assert (await api.get(f"/allocations/{allocation}")).json()["version"] == 2
    assert allocation in {
        a["allocation_id"] for a in (await api.get("/allocations")).json()["items"]
    }
    trail = (await api.get(f"/allocations/{allocation}/audit")).json()["items"]
    assert [(r["action"], r["before"] and r["before"]["version"]) for r in trail] == [
        ("create", None),
        ("update", 1),
    ]
    assert trail[1]["after"]["weights"] == {BONDS: "0.3", STOCKS: "0.7"}


@pytest.mark.parametrize(
    ("weights", "field", "message"),
    [
        ({STOCKS: "0.6", BONDS: "0.3"}, "weights", "sum to 90"),
        ({STOCKS: "0.6", "Moon Rocks": "0.4"}, "weights.Moon Rocks", "asset class Moon Rocks"),
    ],
)
async def test_bad_allocations_are_refused_naming_the_class(
    api, allocation, weights, field, message
):
    allocation_id = new_id()
    response = await api.put(
        f"/allocations/{allocation_id}", json={"name": "x", "weights": weights}
    )
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert response.json()["errors"][0]["field"] == field
    assert (await api.get(f"/allocations/{allocation_id}")).status_code == 404


async def test_a_model_keeps_to_the_allocation_it_names(api, allocation):
    within = {
        "name": "Allocated",
        "allocation_id": allocation,
        "targets": [
            {"symbol": "ALA", "weight": "0.3"},
            {"symbol": "ALB", "weight": "0.305"},  # stocks 60.5%: inside a point
            {"symbol": "ALC", "weight": "0.395"},
        ],
    }
    model_id = new_id()
    made = await api.put(f"/models/{model_id}", json=within)
    assert made.status_code == 201, made.text
    assert made.json()["allocation_id"] == allocation
    outside = {
        **within,
        "targets": [
            {"symbol": "ALA", "weight": "0.4"},
            {"symbol": "ALB", "weight": "0.3"},
            {"symbol": "ALC", "weight": "0.3"},
        ],
    }
    refused = await api.put(f"/models/{model_id}", json=outside)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "allocation_id"
    assert [e["message"] for e in refused.json()["errors"]] == [
        f"asset class {BONDS} weighs 30.0% in the model and 40.0% in allocation {allocation} "
        "(tolerance 1.0 points)",
        f"asset class {STOCKS} weighs 70.0% in the model and 60.0% in allocation {allocation} "
        "(tolerance 1.0 points)",
    ]
    unknown = await api.put(f"/models/{new_id()}", json={**within, "allocation_id": "nope"})
    assert unknown.status_code == 422 and unknown.json()["detail"] == "no allocation nope"


async def test_a_child_its_allocation_no_longer_fits_keeps_its_version(api, allocation):
    parent_id, child_id = new_id(), new_id()
    parent = {
        "name": "P",
        "targets": [
            {"symbol": "ALA", "weight": "0.3"},
            {"symbol": "ALB", "weight": "0.3"},
            {"symbol": "ALC", "weight": "0.4"},
        ],
    }
    assert (await api.put(f"/models/{parent_id}", json=parent)).status_code == 201
    child = {"name": "C", "parent_model_id": parent_id, "allocation_id": allocation}
    assert (await api.put(f"/models/{child_id}", json=child)).status_code == 201
    parent["targets"][2]["weight"], parent["targets"][0]["weight"] = "0.2", "0.5"
    answer = (await api.put(f"/models/{parent_id}", json=parent)).json()
    assert answer["children_changed"] == []
    [kept] = answer["children_outside_limits"]
    assert kept["model_id"] == child_id and f"asset class {BONDS} weighs 20.0%" in kept["problem"]
    assert (await api.get(f"/models/{child_id}")).json()["version"] == 1


async def test_a_corporate_action_applies_even_off_the_allocation(api, db, allocation):
    uid = uuid.uuid4().hex[:6].upper()
    x, y, z = f"X{uid}", f"Y{uid}", f"Z{uid}"
    securities = [
        {"symbol": s, "name": s, "asset_class": c, "sector": "X", "price": "10"}
        for s, c in ((x, STOCKS), (y, STOCKS), (z, BONDS))
    ]
    assert (await api.put("/securities", json={"securities": securities})).is_success
    model_id = new_id()
    body = {
        "name": "Allocated",
        "allocation_id": allocation,
        "targets": [
            {"symbol": x, "weight": "0.3"},
            {"symbol": y, "weight": "0.3"},
            {"symbol": z, "weight": "0.4"},
        ],
    }
    assert (await api.put(f"/models/{model_id}", json=body)).status_code == 201
    action = CorporateActionRecordedV1(
        action_id=new_id(),
        type="cash-merger",
        symbol=x,
        on=date(2026, 12, 7),
        accounts_affected=1,
        cash_per_share=Decimal("11"),
    )
    async with unit_of_work(db, "model-hub-svc") as uow:
        await service.follow_corporate_action(uow, PostgresModelHubRepository(uow.session), action)
    after = (await api.get(f"/models/{model_id}")).json()
    assert after["version"] == 2 and after["allocation_id"] == allocation
    assert {t["symbol"]: Decimal(t["weight"]) for t in after["targets"]} == {
        y: Decimal("0.4285714286"),
        z: Decimal("0.5714285714"),
    }


async def test_a_stock_merger_carries_a_share_models_settings_and_scales_its_shares(api, db):
    uid = uuid.uuid4().hex[:6].upper()
    old, other, new = f"O{uid}", f"P{uid}", f"W{uid}"
    securities = [
        {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X", "price": "10"}
        for s in (old, other)
    ]
    assert (await api.put("/securities", json={"securities": securities})).is_success
    model_id = new_id()
    body = {
        "name": "Shares",
        "kind": "shares",
        "swap_back": True,
        "targets": [
            {"symbol": old, "shares": "10", "band": {"width": "0.02"}},
            {"symbol": other, "shares": "5", "tax_loss_proxies": [old]},
        ],
    }
    assert (await api.put(f"/models/{model_id}", json=body)).status_code == 201
    action = CorporateActionRecordedV1(
        action_id=new_id(),
        type="stock-merger",
        symbol=old,
        new_symbol=new,
        ratio=Decimal("2"),
        on=date(2026, 12, 7),
        accounts_affected=1,
    )
    async with unit_of_work(db, "model-hub-svc") as uow:
        await service.follow_corporate_action(uow, PostgresModelHubRepository(uow.session), action)
    after = (await api.get(f"/models/{model_id}")).json()
    assert (after["version"], after["kind"], after["swap_back"]) == (2, "shares", True)
    by_symbol = {t["symbol"]: t for t in after["targets"]}
    assert Decimal(by_symbol[new]["shares"]) == 20
    assert by_symbol[new]["band"] == {"kind": "absolute", "width": "0.02000000"}
    assert by_symbol[other]["tax_loss_proxies"] == [new]
