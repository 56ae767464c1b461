"""Issue 13 item 3 through the running system: "do not buy AMD in every account of advisor A",
previewed, with one account exempted, applied all or nothing. A book of its own (SMAs of the
demo's core model, renamed, on a model of their own), four accounts of advisor A and two of
another. The model change that follows (AMD and NFLX replace PFE and CSCO) buys no AMD in
advisor A's restricted accounts, while the exempted account and the other advisor's accounts
buy it. Changes go over REST; what rebalance-svc knows is read from its table."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest
from ballast_common.auth import Role
from ballast_common.db import async_url
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts, changed_core_model
from ballast_demo.driver import Ballast
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration

PREFIX = "bkit-"
CORE = next(m for m in MODELS if m.model_id == "us-large-core")
SYMBOL = "AMD"  # the model change buys it in every account


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "BKIT-"),
        household_id=a.household_id.replace("HH-", "BKITH-"),
        model_id=PREFIX + CORE.model_id,
        restrictions=[],
    )
    for a in build_accounts(30, seed=17)
    if a.model_id == CORE.model_id and not a.is_uma
][:6]
MODEL_ID = PREFIX + CORE.model_id
ADVISOR_A, ADVISOR_B = "bkit-advisor-a", "bkit-advisor-b"
OF_A = [a.account_id for a in BOOK[:4]]
EXEMPTED = OF_A[1]


async def test_do_not_buy_in_every_account_of_an_advisor_with_one_exemption(
    system, system_database_url, tmp_path
):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(
        timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,), "olivia@demo")
    )
    engine = create_async_engine(async_url(system_database_url))

    async def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, f"{response.request.url}: {response.text}"
        return response.json() if response.content else None

    try:
        assert len(BOOK) == 6
        await ballast.load_securities()
        await ballast.publish_model(_own(CORE))
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)
        for account in BOOK:
            advisor = ADVISOR_A if account.account_id in OF_A else ADVISOR_B
            await ok(
                await http.patch(
                    f"{urls.account}/accounts/{account.account_id}", json={"advisor_id": advisor}
                )
            )

        preview = await ok(
            await http.post(
                f"{urls.account}/bulk-changes",
                json={
                    "selection": {
                        "conditions": [{"field": "advisor_id", "op": "eq", "value": ADVISOR_A}]
                    },
                    "change": {
                        "kind": "add_restriction",
                        "restriction": {
                            "kind": "do_not_buy",
                            "scope": "security",
                            "value": SYMBOL,
                            "source": "firm",
                            "reason": "the firm's view on AMD",
                        },
                    },
                    "note": "investment committee, December",
                },
            )
        )
        path = f"{urls.account}/bulk-changes/{preview['bulk_change_id']}"
        assert preview["status"] == "previewed"
        assert preview["counts"]["selected"] == 4 and preview["counts"]["changing"] == 4
        shown = await ok(await http.get(f"{path}/accounts"))
        assert sorted(a["account_id"] for a in shown["items"]) == sorted(OF_A)
        exempted = await ok(
            await http.post(
                f"{path}/exemptions",
                json={"account_id": EXEMPTED, "reason": "client mandate allows AMD"},
            )
        )
        assert exempted["exempted_by"] == "olivia@demo"
        applied = await ok(await http.post(f"{path}/apply"))
        assert applied["status"] == "applied" and applied["changed"] == 3
        again = await http.post(f"{path}/apply")
        assert again.status_code == 409

        restricted = [a for a in OF_A if a != EXEMPTED]
        history = await ok(
            await http.get(f"{urls.account}/accounts/{restricted[0]}/settings-history")
        )
        newest = history["items"][0]
        assert newest["bulk_change_id"] == preview["bulk_change_id"]
        assert newest["by"] == "olivia@demo"
        assert [c["field"] for c in newest["changes"]] == ["restrictions"]

        async def rebalancer_knows_the_restrictions() -> bool:
            if (await ballast.read_model())["accounts_with_holdings"] < known_before + len(BOOK):
                return False
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text(
                        "SELECT account_id FROM rebalance.accounts WHERE account_id = ANY(:ids) "
                        "AND restrictions @> CAST(:restriction AS jsonb)"
                    ),
                    {
                        "ids": restricted,
                        "restriction": f'[{{"kind": "do_not_buy", "value": "{SYMBOL}"}}]',
                    },
                )
                return sorted(r[0] for r in rows) == sorted(restricted)

        await eventually(
            "rebalance-svc learning the restrictions", rebalancer_knows_the_restrictions
        )
        published = await ballast.publish_model(_own(changed_core_model()))
        run = await ballast.wait_for_run(MODEL_ID, published["version"], timeout_s=180)

        async def proposals_of_run() -> dict[str, dict[str, Any]] | None:
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
            return found if len(found) == run["proposals"] else None

        proposals = await eventually("account-svc recording the run's proposals", proposals_of_run)

        def buys(account_id: str) -> bool:
            trades = proposals.get(account_id, {}).get("trades", [])
            return any(t["symbol"] == SYMBOL and t["side"] == "buy" for t in trades)

        for account_id in restricted:
            assert not buys(account_id), account_id
        unrestricted = [a.account_id for a in BOOK if a.account_id not in restricted]
        assert any(buys(a) for a in unrestricted), proposals  # the restriction made the difference
    finally:
        await http.aclose()
        await ballast.close()
        await engine.dispose()
