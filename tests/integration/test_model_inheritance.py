"""Issue 13 item 4 through the running system: a parent model with limits and two children,
accounts following each child. A new parent version gives each child a new effective
version (one model-changed each, naming the parent version), and rebalance-svc rebalances
each child's accounts against that child's effective targets. Only public REST APIs."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.testing import eventually, issuer_for_tests
from ballast_demo.book import MODELS, build_accounts
from ballast_demo.driver import MODEL_MANAGER, Ballast
from ballast_engine.scenario import scenario_from_dict

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]
PARENT = f"inh-{RUN}-balanced"
CHILD_A, CHILD_B = f"inh-{RUN}-tilted", f"inh-{RUN}-no-reits"
BALANCED = next(m for m in MODELS if m.model_id == "balanced-60-40")
PARENT_V1 = {
    "name": "Balanced (parent)",
    "targets": [{"symbol": s, "weight": str(w)} for s, w in BALANCED.weights.items()],
    "limits": {"max_reweight_points": "5", "locked": ["AGG"], "max_added": 0},
}
# A: more US stocks; B: no REITs (VNQ's 5 points go to the others pro rata)
OVERRIDES_A = {"reweight": [{"symbol": "VTI", "weight": "0.38"}]}
OVERRIDES_B = {"remove": ["VNQ"]}
# the committee moves 3 points from emerging to developed markets
MOVES = {"VEA": Decimal("0.03"), "VWO": Decimal("-0.03")}
PARENT_V2 = {
    **PARENT_V1,
    "targets": [
        {"symbol": s, "weight": str(w + MOVES.get(s, 0))} for s, w in BALANCED.weights.items()
    ],
}


def _follow(accounts: list[Any], model_id: str, prefix: str) -> list[Any]:
    return [
        dataclasses.replace(
            a,
            account_id=a.account_id.replace("ACC-", prefix),
            household_id=a.household_id.replace("HH-", prefix + "H"),
            model_id=model_id,
        )
        for a in accounts
    ]


BALANCED_ACCOUNTS = [a for a in build_accounts(60, seed=11) if a.model_id == BALANCED.model_id]
HALF = len(BALANCED_ACCOUNTS) // 2
BOOK_A = _follow(BALANCED_ACCOUNTS[:HALF], CHILD_A, f"IA{RUN}-")
BOOK_B = _follow(BALANCED_ACCOUNTS[HALF:], CHILD_B, f"IB{RUN}-")


async def test_a_parent_change_reaches_the_accounts_of_each_child(system, tmp_path):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())

    async def put(model_id: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{urls.model_hub}/models/{model_id}"
        answer: dict[str, Any] = await ballast._call("PUT", url, MODEL_MANAGER, json=body)
        return answer

    try:
        assert BOOK_A and BOOK_B
        await ballast.load_securities()
        await put(PARENT, PARENT_V1)
        a1 = await put(
            CHILD_A, {"name": "Tilted", "parent_model_id": PARENT, "overrides": OVERRIDES_A}
        )
        b1 = await put(
            CHILD_B, {"name": "No REITs", "parent_model_id": PARENT, "overrides": OVERRIDES_B}
        )
        assert a1["version"] == b1["version"] == 1
        # outside the parent's limits: refused, naming the limit
        refused = await ballast.http.put(
            f"{urls.model_hub}/models/inh-{RUN}-too-far",
            json={
                "name": "Too far",
                "parent_model_id": PARENT,
                "overrides": {"reweight": [{"symbol": "VTI", "weight": "0.45"}]},
            },
            headers=ballast.headers(MODEL_MANAGER),
        )
        assert refused.status_code == 422
        assert refused.json()["detail"] == "reweights VTI by 10.0 points; the parent allows 5.0"

        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book([*BOOK_A, *BOOK_B], tmp_path)

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(BOOK_A) + len(BOOK_B)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)

        changed = await put(PARENT, PARENT_V2)
        assert changed["version"] == 2
        assert sorted(changed["children_changed"]) == sorted([CHILD_A, CHILD_B])
        assert changed["children_outside_limits"] == []

        for child_id, book in ((CHILD_A, BOOK_A), (CHILD_B, BOOK_B)):
            model = await ballast._call("GET", f"{urls.model_hub}/models/{child_id}")
            assert model["parent"] == {"model_id": PARENT, "version": 2}
            targets = {t["symbol"]: Decimal(t["weight"]) for t in model["targets"]}
            assert sum(targets.values()) == 1
            run = await ballast.wait_for_run(child_id, 2, timeout_s=180)
            assert run["accounts_evaluated"] == len(book), run
            proposed = 0
            for account in book:
                scenario = await ballast._call(
                    "GET", f"{urls.rebalance}/runs/{run['run_id']}/scenarios/{account.account_id}"
                )
                used = scenario_from_dict(scenario).reference.models[child_id]
                assert {e.symbol: Decimal(str(e.weight)) for e in used.entries} == targets
                page = await ballast._call(
                    "GET", f"{urls.account}/proposals", params={"account_id": account.account_id}
                )
                proposed += any(p["run_id"] == run["run_id"] for p in page["items"])
            assert proposed > 0, f"no proposal for the accounts of {child_id}"
        a2 = await ballast._call("GET", f"{urls.model_hub}/models/{CHILD_A}")
        assert Decimal(next(t["weight"] for t in a2["targets"] if t["symbol"] == "VTI")) == Decimal(
            "0.38"
        )
        b2 = await ballast._call("GET", f"{urls.model_hub}/models/{CHILD_B}")
        assert "VNQ" not in {t["symbol"] for t in b2["targets"]}
    finally:
        await ballast.close()
