"""taxlot-svc's audit trail on real PostgreSQL: opening balances, sleeve and sleeve-cash
transfers and corporate actions are recorded with the token's subject and what they did, in
the caller's tenant's hash chain; a repeat that changes nothing records nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from ballast_common.audit import ChainVerifier
from ballast_common.auth import Role
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer
from sqlalchemy import text
from taxlot_svc.main import spec

pytestmark = pytest.mark.integration

FIRM = f"aud{uuid.uuid4().hex[:8]}"
OPERATIONS = bearer(FIRM, [Role.OPERATIONS], "olu@firm")
ADVISOR = bearer(FIRM, [Role.ADVISOR], "ada@firm")
# corporate actions change every tenant's holders: the platform operator records them
PLATFORM = bearer(FIRM, [Role.OPERATIONS, Role.PLATFORM_OPERATOR], "olu@firm")


@pytest.fixture(scope="module")
async def api(taxlot_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, taxlot_db, tenant=FIRM) as client:
        yield client


def opening(symbol: str) -> dict[str, Any]:
    return {
        "as_of": "2026-01-15",
        "cash": "2500.00",
        "sleeve_cash": [{"sleeve_id": "core", "amount": "100.00"}],
        "positions": [
            {
                "symbol": symbol,
                "lots": [
                    {
                        "quantity": "20",
                        "cost_basis": "4000.00",
                        "acquired_on": "2024-06-03",
                        "sleeve_id": "core",
                    }
                ],
            }
        ],
    }


async def ok(response: Any, status: int = 201) -> dict[str, Any]:
    answered = await response
    assert answered.status_code == status, answered.text
    body: dict[str, Any] = answered.json()
    return body


async def records(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    page = await ok(api.get("/audit", params={**params, "limit": 1000}), 200)
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_openings_transfers_and_actions_are_recorded(api, taxlot_db):
    symbol = f"Z{uuid.uuid4().hex[:5].upper()}"
    account_id, batched = (f"T-{uuid.uuid4().hex[:10]}" for _ in range(2))
    await ok(api.post(f"/accounts/{account_id}/holdings", json=opening(symbol), headers=OPERATIONS))
    batch = {"accounts": [{"account_id": batched, **opening(symbol)}]}
    await ok(api.post("/holdings:batch", json=batch, headers=OPERATIONS))
    move = {"transfer_id": uuid.uuid4().hex, "symbol": symbol, "quantity": "5"}
    move |= {"from_sleeve": "core", "to_sleeve": "growth"}
    path = f"/accounts/{account_id}"
    await ok(api.post(f"{path}/sleeve-transfers", json=move, headers=ADVISOR))
    await ok(api.post(f"{path}/sleeve-transfers", json=move, headers=ADVISOR), 200)  # repeat
    cash = {"transfer_id": uuid.uuid4().hex, "amount": "40.00", "from_sleeve": "core"}
    await ok(api.post(f"{path}/sleeve-cash-transfers", json=cash, headers=ADVISOR))
    split = {"type": "split", "action_id": uuid.uuid4().hex, "symbol": symbol}
    split |= {"on": "2026-02-02", "numerator": 2, "denominator": 1}
    await ok(api.post("/corporate-actions", json=split, headers=PLATFORM))

    holdings = await records(api, subject_type="holdings")
    opened = {r["subject_id"]: r for r in holdings if r["subject_id"] in (account_id, batched)}
    assert set(opened) == {account_id, batched}
    assert {r["actor"] for r in opened.values()} == {"olu@firm"}
    assert opened[account_id]["after"]["cash"] == "2500.00"
    assert opened[batched]["after"]["positions"][0]["lots"][0]["cost_basis"] == "4000.00"

    [shares] = await records(api, subject_type="sleeve-transfer", subject_id=move["transfer_id"])
    assert (shares["actor"], shares["before"]) == ("ada@firm", None)
    assert shares["after"]["to_sleeve"] == "growth" and shares["after"]["quantity"] == "5"
    [moved_cash] = await records(api, subject_id=cash["transfer_id"])
    assert moved_cash["subject_type"] == "sleeve-cash-transfer"
    assert moved_cash["after"]["amount"] == "40.00"
    [action] = await records(api, subject_type="corporate-action", subject_id=split["action_id"])
    assert action["actor"] == "olu@firm"
    assert action["after"]["action"]["numerator"] == 2
    assert action["after"]["accounts_changed"] == 2

    async with taxlot_db.sessions() as session:
        rows = await session.execute(
            text("SELECT * FROM audit_records WHERE tenant = :t ORDER BY seq"), {"t": FIRM}
        )
        chain = [dict(r._mapping) for r in rows]
    assert [r["seq"] for r in chain] == list(range(1, 6))
    verifier = ChainVerifier()
    assert [b for r in chain if (b := verifier.check(r))] == []
