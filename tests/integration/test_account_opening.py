"""Issue 13 item 7 through the running system: an account opened as a workflow trades only once
open. The account (an SMA of the demo's core model, renamed, on a model of its own) is opened
over REST with status `opening`; its holdings arrive (the taxlot-svc part of a book file set,
as a transfer in would). A model change's run skips it, saying why (account-changed told
rebalance-svc it is suspended). Its steps are marked done, the last one opens it; once
rebalance-svc has heard (a drift scan no longer skips it), the next model change trades it:
its proposal is approved by its policy and the trades reach the gateway. Only public REST
APIs are read."""

from __future__ import annotations

import dataclasses
import time
from datetime import date
from typing import Any

import httpx
import pytest
from ballast_cli.book import BookLoader, Reporter, discover
from ballast_common.auth import Role
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts, changed_core_model
from ballast_demo.driver import Ballast
from ballast_demo.files import write_book

pytestmark = pytest.mark.integration

PREFIX = "opnit-"
CORE = next(m for m in MODELS if m.model_id == "us-large-core")
MODEL_ID = PREFIX + CORE.model_id
ACCOUNT = next(
    dataclasses.replace(
        a,
        account_id="OPNIT-" + a.account_id.removeprefix("ACC-"),
        household_id="OPNITH-" + a.household_id.removeprefix("HH-"),
        model_id=MODEL_ID,
        restrictions=[],
    )
    for a in build_accounts(30, seed=17)
    if a.model_id == CORE.model_id and not a.is_uma
)
SUSPENDED = "account is suspended"  # rebalance-svc's reason: an opening account is suspended


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=MODEL_ID)


async def test_an_opening_account_is_skipped_until_its_steps_are_done_then_traded(system, tmp_path):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    manager = httpx.AsyncClient(timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,)))
    loader = httpx.AsyncClient(timeout=60, headers=bearer("demo", (Role.OPERATIONS,)))
    account_id = ACCOUNT.account_id

    async def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, f"{response.request.url}: {response.text}"
        return response.json() if response.content else None

    async def mark(step: str, note: str) -> dict[str, Any]:
        body = {"outcome": "done", "note": note}
        url = f"{urls.account}/accounts/{account_id}/opening/steps/{step}"
        return dict(await ok(await manager.post(url, json=body)))

    try:
        await ballast.load_securities()
        # the account holds the core model; the model it follows moves away and back
        await ballast.publish_model(_own(changed_core_model()))
        await ballast.wait_for_models([MODEL_ID])
        known_before = await ballast.read_model()
        opened = await ok(
            await manager.post(
                f"{urls.account}/accounts",
                json={
                    "account_id": account_id,
                    "household_id": ACCOUNT.household_id,
                    "name": ACCOUNT.name,
                    "account_type": ACCOUNT.account_type,
                    "model_id": MODEL_ID,
                    "status": "opening",
                },
            )
        )
        assert opened["status"] == "opening"
        # its holdings arrive: taxlot-svc's part of a book file set holding only this account
        files = discover(write_book([ACCOUNT], tmp_path, date.today()))
        holdings = BookLoader(
            {"taxlot-svc": urls.taxlot}, loader, Reporter(), services=("taxlot-svc",)
        )
        outcome = await holdings.load(files)
        assert not outcome.problems, outcome.problems

        async def rebalancer_knows_the_account() -> bool:
            known = await ballast.read_model()
            return (
                known["accounts"] > known_before["accounts"]
                and known["accounts_with_holdings"] > known_before["accounts_with_holdings"]
            )

        await eventually("rebalance-svc learning the opening account", rebalancer_knows_the_account)

        # a model change while it opens: its run skips it, saying why
        published = await ballast.publish_model(_own(CORE))
        skipping = await ballast.wait_for_run(MODEL_ID, published["version"], timeout_s=180)
        assert skipping["skipped"] == {account_id: SUSPENDED}, skipping
        assert skipping["proposals"] == 0

        opening = await ok(await manager.get(f"{urls.account}/accounts/{account_id}/opening"))
        assert opening["missing"] == ["paperwork", "funding", "compliance_review"]
        await mark("paperwork", "agreement signed")
        await mark("funding", "holdings received")
        done = await mark("compliance_review", "approved")
        assert (done["status"], done["missing"]) == ("active", [])

        async def rebalancer_sees_it_active() -> bool:
            scan = await ok(await manager.post(f"{urls.rebalance}/scans", json={}))
            run = await ballast.wait_for_chunks(scan["run_id"], time.monotonic() + 120)
            return account_id not in run["skipped"]

        await eventually("rebalance-svc hearing the account opened", rebalancer_sees_it_active, 120)

        # the next model change trades it
        published = await ballast.publish_model(_own(changed_core_model()))
        trading = await ballast.wait_for_run(MODEL_ID, published["version"], timeout_s=180)
        assert account_id not in trading["skipped"], trading
        assert trading["proposals"] == 1, trading

        async def proposal() -> dict[str, Any] | None:
            page = await ok(
                await manager.get(f"{urls.account}/proposals", params={"account_id": account_id})
            )
            mine = [p for p in page["items"] if p["run_id"] == trading["run_id"]]
            return mine[0] if mine else None

        proposed = await eventually("account-svc recording the proposal", proposal, 60)
        assert (proposed["status"], proposed["routed_by"]) == ("approved", "auto_approve")
        assert proposed["trades"]

        async def allocations() -> list[dict[str, Any]] | None:
            page = await ok(
                await manager.get(f"{urls.gateway}/allocations", params={"account_id": account_id})
            )
            return list(page["items"]) or None

        await eventually("the opened account's trades reaching the gateway", allocations, 60)
        trail = await ok(await manager.get(f"{urls.account}/accounts/{account_id}/audit"))
        actions = [r["action"] for r in trail["items"]]
        assert actions[0] == "start-opening" and actions[-1] == "open", actions
    finally:
        await manager.aclose()
        await loader.aclose()
        await ballast.close()
