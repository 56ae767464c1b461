"""taxlot-svc's REST API over ASGI against the real PostgreSQL (the runtime is built but its
Kafka parts are not started: requests only use the database)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def new_account() -> str:
    return f"R-{uuid.uuid4().hex[:10]}"


def opening(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "as_of": "2026-01-15",
        "cash": "2500.00",
        "positions": [
            {
                "symbol": "VTI",
                "quantity": "20",
                "cost_basis": "4000.00",
                "acquired_on": "2024-06-03",
            }
        ],
    }
    body.update(overrides)
    return body


def problem_fields(response: httpx.Response) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    return [e["field"] for e in response.json().get("errors", [])]


async def test_opening_balance_once_then_read(client: httpx.AsyncClient) -> None:
    account = new_account()
    created = await client.post(f"/accounts/{account}/holdings", json=opening())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["cash"] == "2500.00"
    assert body["positions"] == [{"symbol": "VTI", "quantity": "20", "cost_basis": "4000.00"}]

    again = await client.post(f"/accounts/{account}/holdings", json=opening(cash="1.00"))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    assert account in again.json()["detail"]

    holdings = (await client.get(f"/accounts/{account}/holdings")).json()
    assert holdings["cash"] == "2500.00"  # the refused second opening changed nothing
    lots = (await client.get(f"/accounts/{account}/lots")).json()["lots"]
    assert [(x["lot_id"], x["quantity"], x["acquired_on"], x["cause"]) for x in lots] == [
        ("opening-VTI-1", "20", "2024-06-03", "opening-balance")
    ]
    gains = (await client.get(f"/accounts/{account}/realized-gains")).json()
    assert gains["gains"] == [] and gains["total"] == "0"


@pytest.mark.parametrize("path", ["holdings", "lots", "realized-gains"])
async def test_unknown_account_is_404(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(f"/accounts/{new_account()}/{path}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "has no ledger" in response.json()["detail"]


async def test_bad_opening_balance_is_422_naming_fields(client: httpx.AsyncClient) -> None:
    account = new_account()
    positions = [
        {"symbol": "VTI", "quantity": "-3", "cost_basis": "10", "acquired_on": "2024-01-01"}
    ]
    response = await client.post(
        f"/accounts/{account}/holdings", json=opening(cash="-1", positions=positions)
    )
    assert response.status_code == 422
    assert problem_fields(response) == ["cash", "positions[0].quantity"]
    assert (await client.get(f"/accounts/{account}/holdings")).status_code == 404

    not_a_number = await client.post(f"/accounts/{account}/holdings", json=opening(cash="abc"))
    assert not_a_number.status_code == 422
    assert problem_fields(not_a_number) == ["cash"]


async def test_batch_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    ids = [new_account() for _ in range(3)]
    bad = [{"account_id": a, **opening()} for a in ids]
    bad[2]["positions"][0]["cost_basis"] = "0"
    bad[1]["positions"].append({"symbol": "BND", "quantity": "-1", "lots": None})
    response = await client.post("/holdings:batch", json={"accounts": bad})
    assert response.status_code == 422
    fields = problem_fields(response)
    assert "accounts[2].positions[0].cost_basis" in fields
    assert "accounts[1].positions[1].quantity" in fields
    for account in ids:
        assert (await client.get(f"/accounts/{account}/holdings")).status_code == 404

    # One account already has a ledger: 409 and none of the others are opened.
    await client.post(f"/accounts/{ids[1]}/holdings", json=opening())
    good = [{"account_id": a, **opening()} for a in ids]
    conflict = await client.post("/holdings:batch", json={"accounts": good})
    assert conflict.status_code == 409
    assert problem_fields(conflict) == ["accounts[1].account_id"]
    assert (await client.get(f"/accounts/{ids[0]}/holdings")).status_code == 404

    fresh = [new_account() for _ in range(50)]
    batch = [{"account_id": a, **opening()} for a in fresh]
    ok = await client.post("/holdings:batch", json={"accounts": batch})
    assert ok.status_code == 201, ok.text
    assert ok.json() == {"accounts": 50, "lots": 50}
    for account in (fresh[0], fresh[-1]):
        holdings = (await client.get(f"/accounts/{account}/holdings")).json()
        assert holdings["positions"][0]["quantity"] == "20"


async def test_batch_refuses_duplicates_and_oversize(client: httpx.AsyncClient) -> None:
    account = new_account()
    twice = [{"account_id": account, **opening()}, {"account_id": account, **opening()}]
    response = await client.post("/holdings:batch", json={"accounts": twice})
    assert response.status_code == 422
    assert problem_fields(response) == ["accounts[1].account_id"]

    too_many = [{"account_id": f"X{i}", **opening(positions=[])} for i in range(2001)]
    response = await client.post("/holdings:batch", json={"accounts": too_many})
    assert response.status_code == 422
    assert problem_fields(response) == ["accounts"]
