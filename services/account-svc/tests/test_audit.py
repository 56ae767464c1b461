"""account-svc's audit trail on real PostgreSQL: every change of an account (opening, PATCH,
settings, restrictions, strategy), of a security list and a proposal decision is recorded
with the token's subject, what it was before and after, in one hash chain per tenant."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from ballast_common.audit import GENESIS, ChainVerifier
from ballast_common.auth import Role
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1
from ballast_common.db import Database
from ballast_common.testing import (
    api_client,
    bearer,
    delivery,
    example,
    migrated_database,
    unit_of_work,
)
from sqlalchemy import text

pytestmark = pytest.mark.integration

FIRM = f"aud{uuid.uuid4().hex[:8]}"
ADVISOR = bearer(FIRM, [Role.ADVISOR], "ada@firm")


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        for model_id in (f"{FIRM}-eq", f"{FIRM}-bd"):
            event = ModelChangedV1(
                model_id=model_id,
                name=model_id,
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol="AAA", weight=Decimal(1))],
            )
            await service.remember_model(uow, FIRM, event)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=FIRM) as client:
        yield client


async def ok(response: Any) -> dict[str, Any]:
    answered = await response
    assert answered.status_code < 300, answered.text
    body: dict[str, Any] = answered.json()
    return body


async def trail(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record of a trail, page by page."""
    records: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = await ok(api.get(path, params={**params, "offset": offset, "limit": 2}))
        records += page["items"]
        offset = page["next_offset"]
    return records


def account(account_id: str) -> dict[str, Any]:
    return {"account_id": account_id, "household_id": f"H-{account_id}", "name": "A"}


async def test_each_change_of_an_account_is_recorded_with_who_before_and_after(api):
    account_id = f"AU-{uuid.uuid4().hex[:8]}"
    opened = account(account_id) | {"model_id": f"{FIRM}-eq"}
    await ok(api.post("/accounts", json=opened, headers=ADVISOR))
    await ok(api.patch(f"/accounts/{account_id}", json={"name": "B"}, headers=ADVISOR))
    settings = {"min_trade_value": "25.50"}
    path = f"/accounts/{account_id}"
    await ok(api.put(f"{path}/rebalance-settings", json=settings, headers=ADVISOR))
    await ok(api.put(f"{path}/tax-settings", json={"short_term_rate": "0.35"}, headers=ADVISOR))
    restriction = {"kind": "do_not_buy", "scope": "security", "value": "XOM", "reason": "esg"}
    await ok(api.put(f"{path}/restrictions", json={"restrictions": [restriction]}, headers=ADVISOR))
    strategy = {
        "sleeves": [
            {"sleeve_id": "core", "model_id": f"{FIRM}-eq", "weight": "0.6"},
            {"sleeve_id": "bonds", "model_id": f"{FIRM}-bd", "weight": "0.4"},
        ]
    }
    await ok(api.put(f"{path}/strategy", json=strategy, headers=ADVISOR))
    await ok(api.delete(f"{path}/strategy", headers=ADVISOR))

    records = await trail(api, f"{path}/audit")
    assert [r["action"] for r in records] == [
        "open",
        "change",
        "set-rebalance-settings",
        "set-tax-settings",
        "set-restrictions",
        "set-strategy",
        "clear-strategy",
    ]
    assert {r["actor"] for r in records} == {"ada@firm"}
    assert {(r["subject_type"], r["subject_id"]) for r in records} == {("account", account_id)}
    assert records[0]["before"] is None and records[0]["after"]["name"] == "A"
    for earlier, later in itertools.pairwise(records):
        assert later["before"] == earlier["after"]  # each change starts where the last ended
    assert (records[1]["before"]["name"], records[1]["after"]["name"]) == ("A", "B")
    assert records[2]["after"]["rebalance_settings"]["min_trade_value"] == "25.50"
    assert records[3]["after"]["tax_settings"]["short_term_rate"] == "0.35"
    assert records[4]["after"]["restrictions"][0]["set_by"] == "ada@firm"
    assert records[5]["after"]["model_id"] is None and records[5]["after"]["strategy"]
    assert records[6]["after"]["strategy"] is None


async def test_a_batch_of_accounts_is_recorded_in_one_chain_of_records(api, db):
    ids = [f"AB-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    await ok(api.post("/accounts:batch", json={"accounts": [account(a) for a in ids]}))
    records = await trail(api, "/audit", subject_type="account")
    mine = [r for r in records if r["subject_id"] in ids]
    assert [r["subject_id"] for r in mine] == ids
    assert [r["seq"] for r in mine] == list(range(mine[0]["seq"], mine[0]["seq"] + 5))
    async with db.sessions() as session:
        rows = await session.execute(
            text("SELECT * FROM audit_records WHERE tenant = :t ORDER BY seq"), {"t": FIRM}
        )
        chain = [dict(r._mapping) for r in rows]
    assert chain[0]["prev_hash"] == GENESIS
    verifier = ChainVerifier()
    assert [b for r in chain if (b := verifier.check(r))] == []


async def test_a_security_list_and_a_proposal_decision_are_recorded(api, db):
    list_id = f"l-{uuid.uuid4().hex[:8]}"
    await ok(api.put(f"/security-lists/{list_id}", json={"name": "L", "symbols": ["XOM"]}))
    await ok(api.put(f"/security-lists/{list_id}", json={"name": "L", "symbols": ["BP", "XOM"]}))
    [created, changed] = await trail(api, "/audit", subject_id=list_id)
    assert (created["action"], created["before"]) == ("create", None)
    assert changed["before"]["symbols"] == ["XOM"] and changed["after"]["symbols"] == ["BP", "XOM"]

    account_id = f"AP-{uuid.uuid4().hex[:8]}"
    await ok(api.post("/accounts", json=account(account_id) | {"auto_approve": False}))
    proposal_id = uuid.uuid4()
    async with unit_of_work(db, "test") as uow:
        await service.receive_proposals(
            uow,
            PostgresAccountRepository(uow.session),
            [
                delivery(
                    example("trades-proposed", proposal_id=proposal_id, account_id=account_id),
                    tenant=FIRM,
                )
            ],
        )
    compliance = bearer(FIRM, [Role.COMPLIANCE], "cy@firm")
    await ok(api.post(f"/proposals/{proposal_id}/reject", json={}, headers=compliance))
    [decision] = await trail(api, "/audit", subject_type="proposal", subject_id=str(proposal_id))
    assert (decision["actor"], decision["action"]) == ("cy@firm", "reject")
    assert decision["before"]["status"] == "pending"
    assert (decision["after"]["status"], decision["after"]["decided_by"]) == (
        "rejected",
        "cy@firm",
    )


async def test_a_refused_change_records_nothing(api):
    account_id = f"AR-{uuid.uuid4().hex[:8]}"
    await ok(api.post("/accounts", json=account(account_id)))
    refused = await api.patch(f"/accounts/{account_id}", json={"model_id": "no-such-model"})
    assert refused.status_code == 422
    assert [r["action"] for r in await trail(api, f"/accounts/{account_id}/audit")] == ["open"]
    assert (
        await api.get(f"/accounts/{account_id}/audit", headers=bearer("evil"))
    ).status_code == 404
