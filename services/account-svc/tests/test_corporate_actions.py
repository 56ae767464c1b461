"""account-svc follows corporate-action-recorded on real PostgreSQL: a symbol change or stock
merger renames the symbol in security restrictions and security lists, a cash merger drops it
(recorded in the restriction history), every account whose instructions changed is announced
again, and the same action twice changes nothing. Also GET /accounts?model_id= lists UMAs with
a sleeve on the model. Symbols and ids are this module's own (the database is shared)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.main import spec
from ballast_common.contracts.events import (
    AccountChangedV1,
    CorporateActionRecordedV1,
    ModelChangedV1,
    ModelTargetV1,
)
from ballast_common.errors import PermanentMessageError
from ballast_common.outbox import outbox
from ballast_common.testing import (
    api_client,
    bearer,
    deliver,
    envelope,
    migrated_database,
    unit_of_work,
)
from sqlalchemy import func, select

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        for model_id in ("ca-eq", "ca-bonds"):
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


async def outbox_size(db) -> int:
    async with db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(outbox))).scalar_one())


async def account_events(db, account_id: str) -> list[AccountChangedV1]:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value)
            .where(outbox.c.topic == "account-changed", outbox.c.key == account_id)
            .order_by(outbox.c.id)
        )
    return [AccountChangedV1.model_validate(json.loads(r[0])["payload"]) for r in rows]


async def record(db, **fields: Any) -> None:
    action = CorporateActionRecordedV1(on=date(2026, 11, 20), accounts_affected=1, **fields)
    await deliver(db, spec.subscriptions, envelope(action, source="taxlot-svc"))


async def open_account(api: httpx.AsyncClient, account_id: str, **extra: Any) -> None:
    body = {"account_id": account_id, "household_id": "HH-CA", "name": account_id}
    response = await api.post("/accounts", json=body | {"model_id": "ca-eq"} | extra)
    assert response.status_code == 201, response.text


def restriction(kind: str, value: str, scope: str = "security", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "scope": scope, "value": value, "reason": f"{kind} {value}"} | extra


async def put_restrictions(api: httpx.AsyncClient, account_id: str, *items: dict) -> None:
    response = await api.put(
        f"/accounts/{account_id}/restrictions",
        json={"restrictions": list(items)},
        headers=bearer(subject="advisor-1"),
    )
    assert response.status_code == 200, response.text


async def restrictions(api: httpx.AsyncClient, account_id: str) -> list[tuple[str, str, str]]:
    body = (await api.get(f"/accounts/{account_id}/restrictions")).json()["restrictions"]
    return [(r["kind"], r["scope"], r["value"]) for r in body]


async def test_a_symbol_change_renames_restrictions_and_lists(api, db):
    await api.put("/security-lists/ca-esg", json={"name": "ESG", "symbols": ["CAOLD", "CAOIL"]})
    await open_account(api, "CA-1")
    await put_restrictions(
        api,
        "CA-1",
        restriction("do_not_sell", "CAOLD", source="advisor"),
        restriction("do_not_buy", "Energy", scope="sector"),
    )
    await open_account(api, "CA-2")  # restricted only through the list
    await put_restrictions(api, "CA-2", restriction("do_not_hold", "ca-esg", scope="list"))
    await open_account(api, "CA-3")  # nothing on CAOLD: untouched
    await put_restrictions(api, "CA-3", restriction("do_not_buy", "CAOTHER"))
    before = {a: len(await account_events(db, a)) for a in ("CA-1", "CA-2", "CA-3")}

    await record(db, action_id="ca-1", type="symbol-change", symbol="CAOLD", new_symbol="CANEW")

    assert await restrictions(api, "CA-1") == [
        ("do_not_sell", "security", "CANEW"),
        ("do_not_buy", "sector", "Energy"),
    ]
    kept = (await api.get("/accounts/CA-1/restrictions")).json()["restrictions"][0]
    assert (kept["source"], kept["set_by"], kept["reason"]) == (
        "advisor",
        "advisor-1",
        "do_not_sell CAOLD",
    )
    esg = (await api.get("/security-lists/ca-esg")).json()
    assert esg["symbols"] == ["CANEW", "CAOIL"]
    assert esg["updated_by"] == "corporate-action:ca-1"

    # one new account-changed for each account whose instructions changed, whole state
    after = {a: await account_events(db, a) for a in ("CA-1", "CA-2", "CA-3")}
    assert {a: len(e) - before[a] for a, e in after.items()} == {"CA-1": 1, "CA-2": 1, "CA-3": 0}
    assert [(r.kind, r.value) for r in after["CA-1"][-1].restrictions] == [
        ("do_not_sell", "CANEW"),
        ("do_not_buy", "Energy"),
    ]
    assert after["CA-1"][-1].model_id == "ca-eq"
    assert after["CA-2"][-1].restrictions[0].symbols == ["CANEW", "CAOIL"]

    history = (await api.get("/accounts/CA-1/restriction-history")).json()["items"]
    assert [(h["change"], h["before"]["value"], h["after"]["value"]) for h in history] == [
        ("replaced", "CAOLD", "CANEW")
    ]
    assert history[0]["changed_by"] == "corporate-action:ca-1"
    assert "CAOLD became CANEW" in history[0]["note"]
    list_history = (await api.get("/security-lists/ca-esg/history")).json()["items"]
    assert [(h["change"], h["before"], h["after"]) for h in list_history] == [
        ("list-replaced", {"symbol": "CAOLD"}, {"symbol": "CANEW"})
    ]

    # the same action again (or a redelivery past the inbox): nothing changes, nothing is sent
    size = await outbox_size(db)
    await record(db, action_id="ca-1", type="symbol-change", symbol="CAOLD", new_symbol="CANEW")
    assert await outbox_size(db) == size
    assert len((await api.get("/accounts/CA-1/restriction-history")).json()["items"]) == 1


async def test_a_stock_merger_into_a_restricted_symbol_merges_the_instruction(api, db):
    await open_account(api, "CA-4")
    await put_restrictions(
        api,
        "CA-4",
        restriction("do_not_buy", "CATGT", source="firm"),
        restriction("do_not_buy", "CAACQ"),
        restriction("do_not_hold", "CAACQ"),
    )
    await record(
        db,
        action_id="ca-2",
        type="stock-merger",
        symbol="CAACQ",
        new_symbol="CATGT",
        ratio=Decimal("0.5"),
    )
    # do_not_buy was already on CATGT (that one stays); do_not_hold moves to CATGT
    assert await restrictions(api, "CA-4") == [
        ("do_not_buy", "security", "CATGT"),
        ("do_not_hold", "security", "CATGT"),
    ]
    history = (await api.get("/accounts/CA-4/restriction-history")).json()["items"]
    assert [(h["change"], h["before"]["kind"], h["after"]["source"]) for h in history] == [
        ("merged", "do_not_buy", "firm"),
        ("replaced", "do_not_hold", "client"),
    ]


async def test_a_cash_merger_drops_the_symbol_and_says_so(api, db):
    await api.put("/security-lists/ca-sin", json={"name": "Sin", "symbols": ["CAGONE", "CABAR"]})
    await open_account(api, "CA-5")
    await put_restrictions(
        api,
        "CA-5",
        restriction("do_not_sell", "CAGONE"),
        restriction("do_not_buy", "ca-sin", scope="list"),
    )
    before = len(await account_events(db, "CA-5"))
    await record(
        db,
        action_id="ca-3",
        type="cash-merger",
        symbol="CAGONE",
        cash_per_share=Decimal("41.50"),
    )
    assert await restrictions(api, "CA-5") == [("do_not_buy", "list", "ca-sin")]
    assert (await api.get("/security-lists/ca-sin")).json()["symbols"] == ["CABAR"]
    events = await account_events(db, "CA-5")
    assert len(events) == before + 1  # one event although both a restriction and a list changed
    assert [(r.value, r.symbols) for r in events[-1].restrictions] == [("ca-sin", ["CABAR"])]
    history = (await api.get("/accounts/CA-5/restriction-history")).json()["items"]
    assert [(h["change"], h["before"]["value"], h["after"]) for h in history] == [
        ("dropped", "CAGONE", None)
    ]
    assert "bought out for cash" in history[0]["note"]


async def test_other_actions_change_nothing_and_a_rename_without_new_symbol_is_permanent(api, db):
    await open_account(api, "CA-6")
    await put_restrictions(api, "CA-6", restriction("do_not_sell", "CASPLIT"))
    size = await outbox_size(db)
    for kind, extra in (
        ("split", {"numerator": 2, "denominator": 1}),
        ("spin-off", {"new_symbol": "CASPUN", "ratio": Decimal("0.1")}),
        ("cash-dividend", {"cash_per_share": Decimal("1")}),
    ):
        await record(db, action_id=f"ca-{kind}", type=kind, symbol="CASPLIT", **extra)
    assert await outbox_size(db) == size
    assert await restrictions(api, "CA-6") == [("do_not_sell", "security", "CASPLIT")]
    with pytest.raises(PermanentMessageError, match=r"ca-bad.*no new_symbol"):
        await record(db, action_id="ca-bad", type="symbol-change", symbol="CASPLIT")


async def test_accounts_by_model_include_umas_with_a_sleeve_on_it(api, db):
    await open_account(api, "CA-SMA")
    await open_account(api, "CA-BONDS", model_id="ca-bonds")
    strategy = {
        "sleeves": [
            {"sleeve_id": "core", "model_id": "ca-eq", "weight": "0.6"},
            {"sleeve_id": "fixed", "model_id": "ca-bonds", "weight": "0.4"},
        ]
    }
    await open_account(api, "CA-UMA", model_id=None, strategy=strategy)

    def ids(response: httpx.Response) -> list[str]:
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["next_offset"] is None
        return [a["account_id"] for a in page["items"] if a["account_id"].startswith("CA-")]

    eq = ids(await api.get("/accounts", params={"model_id": "ca-eq", "limit": 5000}))
    bonds = ids(await api.get("/accounts", params={"model_id": "ca-bonds", "limit": 5000}))
    assert "CA-SMA" in eq and "CA-UMA" in eq and "CA-BONDS" not in eq
    assert bonds == ["CA-BONDS", "CA-UMA"]
    assert ids(await api.get("/accounts", params={"model_id": "ca-none"})) == []
