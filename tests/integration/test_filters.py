"""Issue 13 item 1 (and bulk approval of item 2) through the running system: filters route the
proposals of a model change. A book of its own (SMAs of the demo's core model, renamed, on a
model of their own); one account marked platinum (an attribute). Two filters of the tenant:
platinum accounts' proposals trade, large-turnover proposals are held for review. After the
model change the platinum account's trades go out at once; the others wait, pending with the
filter that held them, and go out (allocations at the gateway) once approved in bulk by the
filter. Only public REST APIs are read."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.auth import Role
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts, changed_core_model
from ballast_demo.driver import Ballast

pytestmark = pytest.mark.integration

PREFIX = "fltit-"
CORE = next(m for m in MODELS if m.model_id == "us-large-core")


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "FLTIT-"),
        household_id=a.household_id.replace("HH-", "FLTITH-"),
        model_id=PREFIX + CORE.model_id,
        restrictions=[],
    )
    for a in build_accounts(30, seed=13)
    if a.model_id == CORE.model_id and not a.is_uma
][:6]
MODEL_ID = PREFIX + CORE.model_id
PLATINUM = BOOK[0].account_id
TRADE_FILTER, REVIEW_FILTER = "fltit-platinum-trades", "fltit-large-turnover"


async def test_a_filter_holds_large_turnover_for_review_until_approved_in_bulk(system, tmp_path):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,)))

    async def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, f"{response.request.url}: {response.text}"
        return response.json() if response.content else None

    try:
        assert len(BOOK) >= 4
        await ballast.load_securities()
        await ballast.publish_model(_own(CORE))
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)
        await ok(
            await http.patch(
                f"{urls.account}/accounts/{PLATINUM}",
                json={"attributes": {"client_tier": "platinum"}},
            )
        )
        mine = {"field": "model_id", "op": "eq", "value": MODEL_ID}  # this test's accounts only
        await ok(
            await http.put(
                f"{urls.account}/filters/{TRADE_FILTER}",
                json={
                    "name": "Platinum clients trade",
                    "action": "trade",
                    "conditions": [
                        mine,
                        {"field": "attribute.client_tier", "op": "eq", "value": "platinum"},
                    ],
                },
            )
        )
        await ok(
            await http.put(
                f"{urls.account}/filters/{REVIEW_FILTER}",
                json={
                    "name": "Large turnover",
                    "action": "review",
                    "conditions": [
                        mine,
                        {"field": "proposal.turnover_percent", "op": "gt", "value": "1"},
                    ],
                },
            )
        )
        selected = await ok(await http.get(f"{urls.account}/filters/{TRADE_FILTER}/accounts"))
        assert [a["account_id"] for a in selected["items"]] == [PLATINUM]
        assert selected["total"] == 1

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(BOOK)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)
        published = await ballast.publish_model(_own(changed_core_model()))
        run = await ballast.wait_for_run(MODEL_ID, published["version"], timeout_s=180)
        assert run["proposals"] == len(BOOK), run  # the change trades every account

        async def routed() -> dict[str, dict[str, Any]] | None:
            found: dict[str, dict[str, Any]] = {}
            for account in BOOK:
                page = await ok(
                    await http.get(
                        f"{urls.account}/proposals", params={"account_id": account.account_id}
                    )
                )
                for p in page["items"]:
                    if p["run_id"] == run["run_id"]:
                        found[account.account_id] = p
            return found if len(found) == len(BOOK) else None

        proposals = await eventually("account-svc recording the run's proposals", routed, 60)
        platinum = proposals.pop(PLATINUM)
        assert platinum["status"] == "approved"
        assert platinum["routed_by"] == f"filter:{TRADE_FILTER}@1"
        assert platinum["decided_by"] == f"filter:{TRADE_FILTER}"
        for account_id, proposal in proposals.items():
            assert Decimal(proposal["turnover_percent"]) > 1, account_id
            assert proposal["status"] == "pending", account_id
            assert proposal["routed_by"] == f"filter:{REVIEW_FILTER}@1"
            assert proposal["routing_action"] == "review"
            assert proposal["decision_note"] == "held for review by filter Large turnover"
        held = await ok(
            await http.get(
                f"{urls.account}/proposals",
                params={"held": "true", "routed_by": f"filter:{REVIEW_FILTER}@1", "limit": 500},
            )
        )
        assert {p["account_id"] for p in held["items"]} == set(proposals)

        async def allocations(account_id: str) -> list[dict[str, Any]]:
            page = await ok(
                await http.get(f"{urls.gateway}/allocations", params={"account_id": account_id})
            )
            return list(page["items"])

        async def platinum_trades_out() -> list[dict[str, Any]] | None:
            return await allocations(PLATINUM) or None

        await eventually("the platinum account's trades reaching the gateway", platinum_trades_out)
        for account_id in proposals:  # held: nothing went out
            assert await allocations(account_id) == []

        approver = httpx.AsyncClient(
            timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,), "pm@demo")
        )
        try:
            result = await ok(
                await approver.post(
                    f"{urls.account}/proposals/approve",
                    json={"filter_id": REVIEW_FILTER, "note": "reviewed the model change"},
                )
            )
        finally:
            await approver.aclose()
        assert result == {"approved": len(proposals), "skipped": []}

        async def all_out() -> bool:
            return all([await allocations(a) for a in proposals])

        await eventually("the approved trades reaching the gateway", all_out, 60)
        for account_id, before in proposals.items():
            page = await ok(
                await http.get(f"{urls.account}/proposals", params={"account_id": account_id})
            )
            [after] = [p for p in page["items"] if p["proposal_id"] == before["proposal_id"]]
            assert (after["status"], after["decided_by"]) == ("approved", "pm@demo")
            trail = await ok(
                await http.get(
                    f"{urls.account}/audit",
                    params={"subject_type": "proposal", "subject_id": after["proposal_id"]},
                )
            )
            actions = [(r["actor"], r["action"]) for r in trail["items"]]
            assert actions == [(f"filter:{REVIEW_FILTER}", "hold"), ("pm@demo", "approve")]
    finally:
        await http.aclose()
        await ballast.close()
