"""Issue #13 item 6 through the running system: a $10,000 withdrawal and a deposit asked over
REST become a run of their own (trigger cash) on rebalance-svc; the withdrawal's proposal
sells only, is approved, filled and booked, and its request is then done; the deposit's
proposal buys. Only public REST APIs are used."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts
from ballast_demo.driver import Ballast

pytestmark = pytest.mark.integration

PREFIX = "cq-"


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


# two taxable SMAs of the demo's book (each worth at least $50,000), on models of their own
BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "CQ-"),
        household_id=a.household_id.replace("HH-", "CQH-"),
        model_id=PREFIX + (a.model_id or ""),
        restrictions=[],  # the demo's named lists are not loaded here
    )
    for a in build_accounts(40, seed=11, instructions=True)
    if not a.is_uma and a.account_type == "taxable"
][:2]


async def test_a_withdrawal_and_a_deposit_run_as_cash_requests(system, tmp_path):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(timeout=30, headers=bearer())
    try:
        assert len(BOOK) == 2
        await ballast.load_securities()
        for model in MODELS:
            await ballast.publish_model(_own(model))
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(BOOK)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)
        withdrawing, depositing = (a.account_id for a in BOOK)
        response = await http.post(
            f"{urls.rebalance}/cash-requests",
            json={
                "requests": [
                    {"account_id": withdrawing, "kind": "withdrawal", "amount": "10000"},
                    {"account_id": depositing, "kind": "deposit", "amount": "2500"},
                ]
            },
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        run_id = accepted["run"]["run_id"]
        asked = {r["account_id"]: r["request_id"] for r in accepted["requests"]}

        async def run_complete() -> dict[str, Any] | None:
            run = (await http.get(f"{urls.rebalance}/runs/{run_id}")).json()
            return run if run["complete"] else None

        run = await eventually("the cash run completing", run_complete, 60)
        assert (run["trigger"], run["accounts"], run["proposals"]) == ("cash", 2, 2), run
        listed = (await http.get(f"{urls.rebalance}/runs", params={"limit": 20})).json()
        assert run_id in {r["run_id"] for r in listed["items"] if r["trigger"] == "cash"}

        async def request_of(account_id: str) -> dict[str, Any]:
            url = f"{urls.rebalance}/cash-requests/{asked[account_id]}"
            return dict((await http.get(url)).json())

        async def approved(account_id: str) -> dict[str, Any] | None:
            proposal_id = (await request_of(account_id))["proposal_id"]
            page = await http.get(f"{urls.account}/proposals", params={"account_id": account_id})
            mine = [p for p in page.json()["items"] if p["proposal_id"] == proposal_id]
            return mine[0] if mine and mine[0]["status"] == "approved" else None

        sale = await eventually("the withdrawal's proposal approved", lambda: approved(withdrawing))
        assert sale["run_id"] == run_id
        assert {t["side"] for t in sale["trades"]} == {"sell"}
        raised = sum(Decimal(t["estimated_value"]) for t in sale["trades"])
        assert raised > 0 and raised + Decimal(sale["cash_before"]) >= Decimal("10000"), sale
        purchase = await eventually("the deposit's proposal approved", lambda: approved(depositing))
        assert {t["side"] for t in purchase["trades"]} == {"buy"}

        async def done() -> dict[str, Any] | None:
            request = await request_of(withdrawing)
            return request if request["status"] == "done" else None

        finished = await eventually("the withdrawal's trades filled and booked", done, 120)
        assert (finished["run_id"], finished["proposal_id"]) == (run_id, sale["proposal_id"])
        holdings = (await http.get(f"{urls.taxlot}/accounts/{withdrawing}/holdings")).json()
        assert Decimal(holdings["cash"]) >= Decimal("9800")  # filled near the estimated prices
    finally:
        await http.aclose()
        await ballast.close()
