"""Bulk changes and settings history over account-svc's REST API, on real PostgreSQL (the
app without its lifespan: what would be published is read from the outbox).

A bulk change is previewed on a frozen selection (nothing changes), accounts are exempted
(who, when, why), and it is applied all or nothing: one account that cannot take it changes
none; applying twice is a conflict; another tenant sees none of it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from account_svc.main import spec
from account_svc.settings_history import field_changes
from account_test_support import remember_models
from ballast_common.auth import Role
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.db import Database
from ballast_common.outbox import outbox
from ballast_common.testing import api_client, bearer, migrated_database
from sqlalchemy import func, select

pytestmark = pytest.mark.integration

TENANT, OTHER = "bulkco", "bulk-evil"
MODELS = ("bk-eq", "bk-bonds", "bk-new")
ME = {"Authorization": bearer(TENANT, [Role.ADMIN], "ops@bulkco")["Authorization"]}


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    models = [(TENANT, m) for m in MODELS] + [(OTHER, "bk-evil-eq")]
    await remember_models(database, models, symbol="AAA")
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=TENANT) as http:
        http.headers.update(ME)
        yield http


@pytest.fixture
async def evil(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=OTHER) as http:
        yield http


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def open_accounts(api: httpx.AsyncClient, *accounts: dict[str, Any]) -> None:
    bodies = [
        {"household_id": "HH-BK", "name": "Bulk", "model_id": MODELS[0]} | a for a in accounts
    ]
    response = await api.post("/accounts:batch", json={"accounts": bodies})
    assert response.status_code == 201, response.text


async def account_events(db: Database, account_id: str) -> list[AccountChangedV1]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == "account-changed", outbox.c.key == account_id)
            .order_by(outbox.c.id)
        )
        return [AccountChangedV1.model_validate(json.loads(r[0])["payload"]) for r in rows]


async def outbox_size(db: Database) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(outbox))).scalar_one())


async def preview(api: httpx.AsyncClient, selection: dict[str, Any], change: dict[str, Any]) -> Any:
    body = {"selection": selection, "change": change, "note": "test"}
    response = await api.post("/bulk-changes", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def outcomes(api: httpx.AsyncClient, bulk_change_id: str, **query: Any) -> dict[str, Any]:
    response = await api.get(f"/bulk-changes/{bulk_change_id}/accounts", params=query)
    assert response.status_code == 200, response.text
    return {a["account_id"]: a for a in response.json()["items"]}


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return [e["field"] for e in response.json()["errors"]]


XYZ = {
    "kind": "add_restriction",
    "restriction": {
        "kind": "do_not_buy",
        "scope": "security",
        "value": "XYZ",
        "source": "firm",
        "reason": "firm view on XYZ",
    },
}


async def test_preview_exempt_and_apply_to_an_advisors_accounts(api, db):
    advisor = unique("ADV")
    ids = [unique("BK1") for _ in range(3)]
    other_advisors = unique("BK1-OTHER")
    await open_accounts(
        api,
        *({"account_id": a, "advisor_id": advisor} for a in ids),
        {"account_id": other_advisors, "advisor_id": unique("ADV")},
    )
    size = await outbox_size(db)

    change = await preview(
        api, {"conditions": [{"field": "advisor_id", "op": "eq", "value": advisor}]}, XYZ
    )
    assert change["status"] == "previewed" and change["created_by"] == "ops@bulkco"
    assert change["counts"] == {
        "selected": 3,
        "exempted": 0,
        "changing": 3,
        "unchanged": 0,
        "with_problems": 0,
    }
    shown = await outcomes(api, change["bulk_change_id"])
    assert sorted(shown) == sorted(ids)
    first = shown[ids[0]]
    assert first["before"] == {"restrictions": []} and first["changing"]
    (added,) = first["after"]["restrictions"]
    assert added["value"] == "XYZ" and added["source"] == "firm" and added["set_by"] == "ops@bulkco"
    # a preview changes no account and announces nothing
    assert (await api.get(f"/accounts/{ids[0]}")).json()["restrictions"] == []
    assert await outbox_size(db) == size

    path = f"/bulk-changes/{change['bulk_change_id']}"
    no_reason = await api.post(f"{path}/exemptions", json={"account_id": ids[1]})
    assert no_reason.status_code == 422 and problem_fields(no_reason) == ["reason"]
    not_selected = await api.post(
        f"{path}/exemptions", json={"account_id": other_advisors, "reason": "x"}
    )
    assert not_selected.status_code == 422 and problem_fields(not_selected) == ["account_id"]
    exempted = await api.post(
        f"{path}/exemptions", json={"account_id": ids[1], "reason": "client holds XYZ by mandate"}
    )
    assert exempted.status_code == 201, exempted.text
    assert exempted.json()["exempted_by"] == "ops@bulkco"
    assert exempted.json()["exemption_reason"] == "client holds XYZ by mandate"
    again = await api.post(f"{path}/exemptions", json={"account_id": ids[1], "reason": "y"})
    assert again.status_code == 409
    assert (await api.get(path)).json()["counts"]["exempted"] == 1
    assert list(await outcomes(api, change["bulk_change_id"], exempted=True)) == [ids[1]]

    applied = await api.post(f"{path}/apply")
    assert applied.status_code == 200, applied.text
    result = applied.json()
    assert result["status"] == "applied" and result["applied_by"] == "ops@bulkco"
    assert result["changed"] == 2 and result["changed_since_preview"] == 0
    for account_id in (ids[0], ids[2]):
        restrictions = (await api.get(f"/accounts/{account_id}/restrictions")).json()
        assert [r["value"] for r in restrictions["restrictions"]] == ["XYZ"]
        event = (await account_events(db, account_id))[-1]
        assert [(r.kind, r.value, r.source) for r in event.restrictions] == [
            ("do_not_buy", "XYZ", "firm")
        ]
    assert (await api.get(f"/accounts/{ids[1]}/restrictions")).json()["restrictions"] == []
    assert len(await account_events(db, ids[1])) == 1  # its opening only
    assert len(await account_events(db, other_advisors)) == 1

    twice = await api.post(f"{path}/apply")
    assert twice.status_code == 409 and "already applied" in twice.json()["detail"]
    late = await api.post(f"{path}/exemptions", json={"account_id": ids[2], "reason": "late"})
    assert late.status_code == 409
    audit = await api.get("/audit", params={"subject_type": "account", "subject_id": ids[0]})
    last = audit.json()["items"][-1]
    assert last["action"] == f"bulk-change:{change['bulk_change_id']}"
    assert (
        last["before"]["restrictions"] == [] and last["after"]["restrictions"][0]["value"] == "XYZ"
    )


async def test_one_account_that_cannot_take_the_change_changes_none(api, db):
    sma, uma = unique("BK2-SMA"), unique("BK2-UMA")
    strategy = {
        "sleeves": [
            {"sleeve_id": "core", "model_id": MODELS[0], "weight": "0.6"},
            {"sleeve_id": "bonds", "model_id": MODELS[1], "weight": "0.4"},
        ]
    }
    await open_accounts(
        api, {"account_id": sma}, {"account_id": uma, "model_id": None, "strategy": strategy}
    )
    change = await preview(
        api, {"account_ids": [sma, uma]}, {"kind": "set_model", "model_id": MODELS[2]}
    )
    assert change["counts"]["with_problems"] == 1
    (bad,) = (await outcomes(api, change["bulk_change_id"], with_problems=True)).values()
    assert bad["account_id"] == uma and bad["problems"][0]["field"] == "model_id"

    path = f"/bulk-changes/{change['bulk_change_id']}"
    refused = await api.post(f"{path}/apply")
    assert refused.status_code == 422
    assert problem_fields(refused) == [f"accounts[{uma}].model_id"]
    assert (await api.get(f"/accounts/{sma}")).json()["model_id"] == MODELS[0]
    assert (await api.get(path)).json()["status"] == "previewed"

    await api.post(f"{path}/exemptions", json={"account_id": uma, "reason": "a UMA"})
    applied = await api.post(f"{path}/apply")
    assert applied.status_code == 200, applied.text
    assert (await api.get(f"/accounts/{sma}")).json()["model_id"] == MODELS[2]
    assert (await account_events(db, sma))[-1].model_id == MODELS[2]
    assert (await api.get(f"/accounts/{uma}")).json()["strategy"] is not None


async def test_partial_settings_keep_the_others_and_history_shows_each_change(api, db):
    account_id = unique("BK3")
    await open_accounts(
        api,
        {
            "account_id": account_id,
            "rebalance_settings": {"cash_target": "0.02", "min_trade_value": "25"},
        },
    )
    put = await api.put(
        f"/accounts/{account_id}/tax-settings", json={"relief_method": "hifo", "harvest": False}
    )
    assert put.status_code == 200, put.text
    settings = {"kind": "set_rebalance_settings", "settings": {"min_trade_value": "50"}}
    first = await preview(api, {"account_ids": [account_id]}, settings)
    (outcome,) = (await outcomes(api, first["bulk_change_id"])).values()
    assert outcome["after"] == {
        "rebalance_settings": {"cash_target": "0.02", "min_trade_value": "50"}
    }
    assert (await api.post(f"/bulk-changes/{first['bulk_change_id']}/apply")).status_code == 200
    reset = {"kind": "set_rebalance_settings", "settings": {"cash_target": None}}
    second = await preview(api, {"account_ids": [account_id]}, reset)
    assert (await api.post(f"/bulk-changes/{second['bulk_change_id']}/apply")).status_code == 200
    tax = {"kind": "set_tax_settings", "settings": {"harvest": True}}
    third = await preview(api, {"account_ids": [account_id]}, tax)
    assert (await api.post(f"/bulk-changes/{third['bulk_change_id']}/apply")).status_code == 200

    account = (await api.get(f"/accounts/{account_id}")).json()
    assert account["rebalance_settings"]["min_trade_value"] == "50"
    assert account["rebalance_settings"]["cash_target"] is None
    assert account["tax_settings"]["harvest"] is True
    assert account["tax_settings"]["relief_method"] == "hifo"  # kept: only harvest was given

    history = (await api.get(f"/accounts/{account_id}/settings-history")).json()["items"]
    assert [h["action"] for h in history] == [
        f"bulk-change:{third['bulk_change_id']}",
        f"bulk-change:{second['bulk_change_id']}",
        f"bulk-change:{first['bulk_change_id']}",
        "set-tax-settings",
        "open",
    ]
    assert [h["bulk_change_id"] for h in history[:3]] == [
        third["bulk_change_id"],
        second["bulk_change_id"],
        first["bulk_change_id"],
    ]
    assert history[0]["changes"] == [
        {"field": "tax_settings.harvest", "before": False, "after": True}
    ]
    assert history[1]["changes"] == [
        {"field": "rebalance_settings.cash_target", "before": "0.02", "after": None}
    ]
    assert history[2]["changes"] == [
        {"field": "rebalance_settings.min_trade_value", "before": "25", "after": "50"}
    ]
    assert all(h["by"] == "ops@bulkco" for h in history)
    assert history[3]["bulk_change_id"] is None
    assert history[3]["changes"][0]["field"] == "tax_settings.avoid_short_term_gains"
    paged = (await api.get(f"/accounts/{account_id}/settings-history?limit=2&offset=1")).json()
    assert [h["seq"] for h in paged["items"]] == [h["seq"] for h in history[1:3]]
    assert paged["next_offset"] == 3


async def test_an_account_changed_since_the_preview_is_named_and_keeps_its_change(api, db):
    steady, moved = unique("BK4-A"), unique("BK4-B")
    await open_accounts(api, {"account_id": steady}, {"account_id": moved})
    change = await preview(
        api,
        {"account_ids": [steady, moved]},
        {"kind": "set_rebalance_settings", "settings": {"min_trade_value": "75"}},
    )
    put = await api.put(f"/accounts/{moved}/rebalance-settings", json={"cash_reserve": "500"})
    assert put.status_code == 200, put.text
    applied = (await api.post(f"/bulk-changes/{change['bulk_change_id']}/apply")).json()
    assert applied["changed"] == 2
    assert applied["changed_since_preview"] == 1
    assert applied["changed_since_preview_ids"] == [moved]
    assert moved in applied["warnings"][0]
    settings = (await api.get(f"/accounts/{moved}/rebalance-settings")).json()
    assert settings["min_trade_value"] == "75" and settings["cash_reserve"] == "500"


async def test_remove_restriction_status_and_attributes(api, db):
    account_id, keeps = unique("BK5"), unique("BK5-KEEP")
    restrictions = [
        {"kind": "do_not_buy", "scope": "security", "value": "OLD", "reason": "r"},
        {"kind": "do_not_sell", "scope": "security", "value": "OLD", "reason": "r"},
    ]
    await open_accounts(
        api,
        {"account_id": account_id, "restrictions": restrictions, "attributes": {"tier": "gold"}},
        {"account_id": keeps},
    )
    remove = {
        "kind": "remove_restriction",
        "restriction_kind": "do_not_buy",
        "scope": "security",
        "value": "OLD",
    }
    change = await preview(api, {"account_ids": [account_id, keeps]}, remove)
    assert change["counts"]["changing"] == 1 and change["counts"]["unchanged"] == 1
    applied = (await api.post(f"/bulk-changes/{change['bulk_change_id']}/apply")).json()
    assert applied["changed"] == 1
    left = (await api.get(f"/accounts/{account_id}/restrictions")).json()["restrictions"]
    assert [(r["kind"], r["value"]) for r in left] == [("do_not_sell", "OLD")]
    assert len(await account_events(db, keeps)) == 1  # unchanged: not announced again

    status = await preview(
        api, {"account_ids": [account_id]}, {"kind": "set_status", "status": "suspended"}
    )
    await api.post(f"/bulk-changes/{status['bulk_change_id']}/apply")
    assert (await account_events(db, account_id))[-1].status == "suspended"

    attributes = {
        "kind": "set_attributes",
        "attributes": {"tier": None, "discretionary": True},
        "advisor_id": "ADV-NEW",
    }
    change = await preview(api, {"account_ids": [account_id]}, attributes)
    await api.post(f"/bulk-changes/{change['bulk_change_id']}/apply")
    account = (await api.get(f"/accounts/{account_id}")).json()
    assert account["attributes"] == {"discretionary": True}
    assert account["advisor_id"] == "ADV-NEW"


async def test_a_saved_filter_selects_and_is_kept_with_the_change(api, db):
    tier = unique("t").replace("-", "_")
    ids = [unique("BK6") for _ in range(2)]
    await open_accounts(api, *({"account_id": a, "attributes": {"tier": tier}} for a in ids))
    filter_id = unique("bk-filter")
    saved = await api.put(
        f"/filters/{filter_id}",
        json={
            "name": "platinum",
            "action": "review",
            "conditions": [{"field": "attribute.tier", "op": "eq", "value": tier}],
            "enabled": False,
        },
    )
    assert saved.status_code in (200, 201), saved.text
    change = await preview(
        api,
        {"filter_id": filter_id},
        {"kind": "set_rebalance_settings", "settings": {"min_trade_value": "1000"}},
    )
    assert change["counts"]["selected"] == 2
    assert change["selection"]["filter_id"] == filter_id
    assert change["selection"]["conditions"][0]["value"] == tier


async def test_cancel(api, db):
    account_id = unique("BK7")
    await open_accounts(api, {"account_id": account_id})
    change = await preview(api, {"account_ids": [account_id]}, XYZ)
    path = f"/bulk-changes/{change['bulk_change_id']}"
    cancelled = await api.post(f"{path}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await api.post(f"{path}/apply")).status_code == 409
    assert (await api.get(f"/accounts/{account_id}/restrictions")).json()["restrictions"] == []


@pytest.mark.parametrize(
    ("selection", "change", "fields"),
    [
        ({"account_ids": ["BK-NONE"]}, XYZ, ["selection.account_ids[0]"]),
        ({"account_ids": ["BK-X"], "filter_id": "f"}, XYZ, ["selection"]),
        ({}, XYZ, ["selection"]),
        ({"conditions": None}, XYZ, ["selection"]),
        ({"filter_id": "no-such-filter"}, XYZ, ["selection.filter_id"]),
        (
            {"conditions": [{"field": "colour", "op": "eq", "value": "red"}]},
            XYZ,
            ["selection.conditions[0].field"],
        ),
        ({"conditions": []}, {"kind": "set_model", "model_id": "nope"}, ["change.model_id"]),
        (
            {"conditions": []},
            {"kind": "set_rebalance_settings", "settings": {}},
            ["change.settings"],
        ),
        (
            {"conditions": []},
            {"kind": "set_rebalance_settings", "settings": {"min_trade_vlaue": "5"}},
            ["change.set_rebalance_settings.settings.min_trade_vlaue"],
        ),
        (
            {"conditions": []},
            {"kind": "add_restriction", "restriction": XYZ["restriction"] | {"value": "X Y"}},
            ["change.restriction.value"],
        ),
        (
            {"conditions": []},
            {"kind": "add_restriction", "restriction": XYZ["restriction"] | {"scope": "list"}},
            ["change.restriction.value"],
        ),
    ],
)
async def test_bad_input_is_named_and_nothing_is_kept(api, db, selection, change, fields):
    before = (await api.get("/bulk-changes", params={"limit": 5000})).json()["items"]
    response = await api.post(
        "/bulk-changes", json={"selection": selection, "change": change, "note": "bad"}
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == fields
    assert (await api.get("/bulk-changes", params={"limit": 5000})).json()["items"] == before


async def test_another_tenant_sees_nothing_and_read_only_may_not_change(api, evil, db):
    account_id = unique("BK8")
    await open_accounts(api, {"account_id": account_id})
    change = await preview(api, {"account_ids": [account_id]}, XYZ)
    path = f"/bulk-changes/{change['bulk_change_id']}"
    for method, url, body in [
        ("GET", path, None),
        ("GET", f"{path}/accounts", None),
        ("POST", f"{path}/exemptions", {"account_id": account_id, "reason": "mine"}),
        ("DELETE", f"{path}/exemptions/{account_id}", None),
        ("POST", f"{path}/apply", None),
        ("POST", f"{path}/cancel", None),
        ("GET", f"/accounts/{account_id}/settings-history", None),
    ]:
        response = await evil.request(method, url, **({"json": body} if body else {}))
        assert response.status_code == 404, (method, url, response.text)
    listed = (await evil.get("/bulk-changes")).json()["items"]
    assert change["bulk_change_id"] not in [c["bulk_change_id"] for c in listed]
    theirs = await evil.post(
        "/bulk-changes",
        json={"selection": {"account_ids": [account_id]}, "change": XYZ, "note": "x"},
    )
    assert theirs.status_code == 422 and problem_fields(theirs) == ["selection.account_ids[0]"]
    everything = await evil.post(
        "/bulk-changes", json={"selection": {"conditions": []}, "change": XYZ, "note": "x"}
    )
    if everything.status_code == 201:  # the other tenant's own accounts only
        selected = await outcomes(evil, everything.json()["bulk_change_id"], limit=5000)
        assert not [a for a in selected if a.startswith("BK")]
    else:
        assert problem_fields(everything) == ["selection"]

    reader = bearer(TENANT, [Role.COMPLIANCE], "compliance@bulkco")
    denied = await api.post(f"{path}/apply", headers=reader)
    assert denied.status_code == 403
    assert (await api.get(path, headers=reader)).json()["status"] == "previewed"
    assert (await api.post(f"{path}/apply")).status_code == 200


def test_field_changes_go_key_by_key_into_settings():
    before = {
        "name": "A",
        "rebalance_settings": {"min_trade_value": "25"},
        "tax_settings": None,
        "restrictions": [],
    }
    after = {
        "name": "A",
        "rebalance_settings": {"min_trade_value": "50", "fractional": True},
        "tax_settings": {"harvest": True},
        "restrictions": [{"value": "XYZ"}],
    }
    assert [(c.field, c.before, c.after) for c in field_changes(before, after)] == [
        ("rebalance_settings.fractional", None, True),
        ("rebalance_settings.min_trade_value", "25", "50"),
        ("restrictions", [], [{"value": "XYZ"}]),
        ("tax_settings.harvest", None, True),
    ]
    assert [c.field for c in field_changes(None, {"name": "A"})] == ["name"]
