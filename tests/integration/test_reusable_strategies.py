"""Issue 13 item 4 through the running system: a reusable strategy that accounts follow. A book
of its own (two of the demo's UMAs, on models of their own) follows a two-sleeve strategy; a
new version of it (other sleeve weights) reaches both accounts at once, their settings history
names the version that moved them, and rebalance-svc's next run gives the engine the new
weights. A strategy that breaks the rules is refused naming the field, and changes nothing.
Changes go over REST; what rebalance-svc knows is read from its table and its run's scenarios."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
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

PREFIX = "rsit-"
STRATEGY_ID = "rsit-core-income"
CORE, INCOME = PREFIX + "us-large-core", PREFIX + "dividend-growth"


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "RSIT-"),
        household_id=a.household_id.replace("HH-", "RSITH-"),
        sleeves=[(s, PREFIX + m, w) for s, m, w in a.sleeves],
        restrictions=[],  # the demo's named lists are not loaded here
    )
    for a in build_accounts(120, seed=3, instructions=True)
    if a.is_uma
][:2]
ACCOUNTS = [a.account_id for a in BOOK]


def _strategy(core_weight: str, income_weight: str) -> dict[str, Any]:
    return {
        "name": "Core and income",
        "sleeves": [
            {
                "sleeve_id": "core",
                "model_id": CORE,
                "weight": core_weight,
                "band": {"kind": "absolute", "width": "0.05"},
            },
            {
                "sleeve_id": "income",
                "model_id": INCOME,
                "weight": income_weight,
                "band": {"kind": "relative", "width": "0.2"},
            },
        ],
        "rebalance_range": "band",
        "interior_pct": "50",
    }


V1, V2 = _strategy("0.6", "0.4"), _strategy("0.3", "0.7")
NEW_WEIGHTS = {"core": Decimal("0.3"), "income": Decimal("0.7")}


def _weights(strategy: dict[str, Any]) -> dict[str, Decimal]:
    return {s["sleeve_id"]: Decimal(str(s["weight"])) for s in strategy["sleeves"]}


def _fields(problem: httpx.Response) -> list[str]:
    assert problem.status_code == 422, problem.text
    return [e["field"] for e in problem.json()["errors"]]


async def test_a_new_version_of_a_strategy_reaches_every_follower_and_the_engine(
    system, system_database_url, tmp_path
):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(
        timeout=30, headers=bearer("demo", (Role.OVERLAY_MANAGER,), "olivia@demo")
    )
    engine = create_async_engine(async_url(system_database_url))
    strategy_url = f"{urls.account}/strategies/{STRATEGY_ID}"

    async def ok(response: httpx.Response) -> Any:
        assert response.status_code < 300, f"{response.request.url}: {response.text}"
        return response.json() if response.content else None

    try:
        assert len(BOOK) == 2
        await ballast.load_securities()
        for model in MODELS:
            await ballast.publish_model(_own(model))
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)

        created = await ok(await http.put(strategy_url, json=V1))
        assert (created["version"], created["followers"]) == (1, 0)
        assert (await ok(await http.put(strategy_url, json=V1)))["version"] == 1  # same again
        respelled = _strategy("0.60", "0.400")  # the same weights
        assert (await ok(await http.put(strategy_url, json=respelled)))["version"] == 1

        # a strategy that breaks the rules: refused naming the field, the version kept
        unbalanced = _strategy("0.6", "0.3")
        assert _fields(await http.put(strategy_url, json=unbalanced)) == ["sleeves"]
        unknown = _strategy("0.6", "0.4")
        unknown["sleeves"][1]["model_id"] = PREFIX + "no-such-model"
        assert _fields(await http.put(strategy_url, json=unknown)) == ["sleeves[1].model_id"]
        kept = await ok(await http.get(strategy_url))
        assert kept["version"] == 1 and _weights(kept) == _weights(V1)

        for account_id in ACCOUNTS:
            follow = f"{urls.account}/accounts/{account_id}/strategy"
            await ok(await http.put(follow, json={"strategy_id": STRATEGY_ID}))
        missing = await http.put(
            f"{urls.account}/accounts/{ACCOUNTS[0]}/strategy", json={"strategy_id": "rsit-none"}
        )
        assert _fields(missing) == ["strategy_id"]
        assert (await ok(await http.get(strategy_url)))["followers"] == 2

        moved = await ok(await http.put(strategy_url, json=V2))
        assert (moved["version"], moved["followers"]) == (2, 2)
        action = f"follow-strategy:{STRATEGY_ID}@2"
        for account_id in ACCOUNTS:
            account = await ok(await http.get(f"{urls.account}/accounts/{account_id}"))
            assert _weights(account["strategy"]) == NEW_WEIGHTS
            assert [s["model_id"] for s in account["strategy"]["sleeves"]] == [CORE, INCOME]
            history = await ok(
                await http.get(f"{urls.account}/accounts/{account_id}/settings-history")
            )
            newest = history["items"][0]
            assert (newest["action"], newest["by"]) == (action, "olivia@demo")
            [change] = newest["changes"]
            assert change["field"] == "strategy"
            assert _weights(change["before"]) == _weights(V1)
            assert _weights(change["after"]) == NEW_WEIGHTS

        async def rebalancer_knows_the_new_weights() -> bool:
            if (await ballast.read_model())["accounts_with_holdings"] < known_before + len(BOOK):
                return False
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text(
                        "SELECT account_id, sleeve_id, weight FROM rebalance.sleeves "
                        "WHERE account_id = ANY(:ids)"
                    ),
                    {"ids": ACCOUNTS},
                )
                known = {(a, s, w) for a, s, w in rows}
            return known == {(a, s, w) for a in ACCOUNTS for s, w in NEW_WEIGHTS.items()}

        await eventually("rebalance-svc learning the new version", rebalancer_knows_the_new_weights)
        published = await ballast.publish_model(_own(changed_core_model()))
        run = await ballast.wait_for_run(CORE, published["version"], timeout_s=180)
        assert not set(ACCOUNTS) & set(run["skipped"]), run

        for account_id in ACCOUNTS:

            async def scenario(account_id: str = account_id) -> dict[str, Any] | None:
                response = await http.get(
                    f"{urls.rebalance}/runs/{run['run_id']}/scenarios/{account_id}"
                )
                assert response.status_code in (200, 404), response.text
                return response.json() if response.status_code == 200 else None

            given = await eventually(f"the run's scenario of {account_id}", scenario, 60)
            sleeves = given["account"]["sleeves"]
            assert [(s["sleeve_id"], s["model_id"]) for s in sleeves] == [
                ("core", CORE),
                ("income", INCOME),
            ]
            [strategy] = [
                s
                for s in given["strategies"]
                if s["strategy_id"] == given["account"]["strategy_id"]
            ]
            assert strategy["rebalance_range"]["kind"] == "band"
            assert {e["model_id"]: (e["weight"], e["band"]) for e in strategy["entries"]} == {
                CORE: (0.3, {"kind": "absolute", "width": 0.05}),
                INCOME: (0.7, {"kind": "relative", "width": 0.2}),
            }
    finally:
        await http.aclose()
        await ballast.close()
        await engine.dispose()
