"""Issue 13 item 2 through the running system: approvals on screen. Every call the dashboard
makes goes to reporting-svc's approval routes, which forward to account-svc with the caller's
token. A book of its own (SMAs of the demo's core model, renamed, on a model of their own)
whose accounts wait for review (auto_approve false). After a model change: the held proposals
are listed and counted; one is edited (a quantity lowered, a trade removed) and approved, and
exactly the edited trades reach the gateway; another is rejected with a note and nothing of it
goes out; each one's history shows who did what."""

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

PREFIX = "aprit-"
CORE = next(m for m in MODELS if m.model_id == "us-large-core")
MODEL_ID = PREFIX + CORE.model_id
BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "APRIT-"),
        household_id=a.household_id.replace("HH-", "APRITH-"),
        model_id=MODEL_ID,
        restrictions=[],
    )
    for a in build_accounts(30, seed=29)
    if a.model_id == CORE.model_id and not a.is_uma
][:3]
REVIEWER = "pm@demo"


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=MODEL_ID)


async def ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


def lowered(quantity: str) -> str:
    """A smaller whole number of shares (or half, for a fractional trade)."""
    q = Decimal(quantity)
    if q != q.to_integral_value():
        return str((q / 2).quantize(Decimal("0.0001")))
    return str(max(Decimal(1), q - max(Decimal(1), (q / 3).to_integral_value())))


async def test_held_proposals_are_edited_approved_and_rejected_through_the_dashboard_routes(
    system, tmp_path
):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    admin = httpx.AsyncClient(timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,)))
    screen = httpx.AsyncClient(
        base_url=f"{urls.reporting}/approvals",
        timeout=30,
        headers=bearer("demo", (Role.OVERLAY_MANAGER,), REVIEWER),
    )
    try:
        await ballast.load_securities()
        await ballast.publish_model(_own(CORE))
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)
        for account in BOOK:
            await ok(
                await admin.patch(
                    f"{urls.account}/accounts/{account.account_id}", json={"auto_approve": False}
                )
            )

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(BOOK)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)
        published = await ballast.publish_model(_own(changed_core_model()))
        run = await ballast.wait_for_run(MODEL_ID, published["version"], timeout_s=180)

        async def held() -> dict[str, dict[str, Any]] | None:
            found = {}
            for account in BOOK:
                page = await ok(
                    await screen.get("/proposals", params={"account_id": account.account_id})
                )
                found.update(
                    {p["account_id"]: p for p in page["items"] if p["run_id"] == run["run_id"]}
                )
            return found if len(found) == len(BOOK) else None

        proposals = await eventually("the run's proposals held for review", held, 60)
        assert all(p["status"] == "pending" for p in proposals.values())
        counts = await ok(await screen.get("/counts"))
        assert sum(c["proposals"] for c in counts["items"]) >= len(BOOK)

        edited_id, rejected_id = sorted(proposals)[:2]
        to_edit = proposals[edited_id]
        assert to_edit["trades"], to_edit
        first = to_edit["trades"][0]
        new_quantity = lowered(first["quantity"])
        removed = [t["trade_id"] for t in to_edit["trades"][1:2]]
        path = f"/proposals/{to_edit['proposal_id']}"

        refused = await screen.post(
            f"{path}/edit",
            json={"trades": [{"trade_id": first["trade_id"], "quantity": "0"}]},
        )
        assert refused.status_code == 422
        assert refused.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in refused.json()["errors"]] == ["trades[0].quantity"]
        advisor = bearer("demo", (Role.ADVISOR,))
        assert (await screen.post(f"{path}/approve", json={}, headers=advisor)).status_code == 403

        edited = await ok(
            await screen.post(
                f"{path}/edit",
                json={
                    "trades": [{"trade_id": first["trade_id"], "quantity": new_quantity}],
                    "remove": removed,
                    "note": "smaller first step",
                },
            )
        )
        assert edited["status"] == "pending"
        expected = {t["trade_id"]: Decimal(t["quantity"]) for t in edited["trades"]}
        assert expected[first["trade_id"]] == Decimal(new_quantity)
        assert len(expected) == len(to_edit["trades"]) - len(removed)
        assert await ok(await screen.get(path)) == edited

        approved = await ok(await screen.post(f"{path}/approve", json={"note": "edited, fine"}))
        assert (approved["status"], approved["decided_by"]) == ("approved", REVIEWER)
        again = await screen.post(f"{path}/approve", json={})
        assert again.status_code == 409

        rejected = await ok(
            await screen.post(
                f"/proposals/{proposals[rejected_id]['proposal_id']}/reject",
                json={"note": "client asked to wait until January"},
            )
        )
        assert rejected["status"] == "rejected"

        async def allocations(proposal: dict[str, Any]) -> list[dict[str, Any]]:
            page = await ok(
                await admin.get(
                    f"{urls.gateway}/allocations", params={"account_id": proposal["account_id"]}
                )
            )
            return [a for a in page["items"] if a["proposal_id"] == proposal["proposal_id"]]

        async def edited_trades_out() -> list[dict[str, Any]] | None:
            out = await allocations(to_edit)
            return out if len(out) == len(expected) else None

        sent = await eventually("the edited trades reaching the gateway", edited_trades_out, 60)
        assert {a["trade_id"]: Decimal(a["quantity"]) for a in sent} == expected
        assert await allocations(proposals[rejected_id]) == []

        history = (await ok(await screen.get(f"{path}/history")))["items"]
        mine = [(r["actor"], r["action"]) for r in history if r["actor"] == REVIEWER]
        assert mine == [(REVIEWER, "edit"), (REVIEWER, "approve")]
        [edit] = [r for r in history if r["action"] == "edit"]
        assert edit["after"]["note"] == "smaller first step"
        assert len(edit["before"]["trades"]) == len(to_edit["trades"])
        trail = (
            await ok(
                await screen.get(f"/proposals/{proposals[rejected_id]['proposal_id']}/history")
            )
        )["items"]
        assert (trail[-1]["actor"], trail[-1]["action"]) == (REVIEWER, "reject")
        assert trail[-1]["after"]["decision_note"] == "client asked to wait until January"
        still_held = await ok(await screen.get("/proposals", params={"account_id": edited_id}))
        assert to_edit["proposal_id"] not in {p["proposal_id"] for p in still_held["items"]}
    finally:
        await screen.aclose()
        await admin.aclose()
        await ballast.close()
