"""Issue #8's proof of scale-out: two instances of every consumer service share the work, and
killing one of each (SIGKILL) in the middle of a model change loses nothing and does nothing
twice. Only public REST APIs are read, and the book of record is checked share by share."""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal

import httpx
import pytest
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts, changed_core_model
from ballast_demo.driver import Ballast

pytestmark = pytest.mark.integration

CONSUMERS = ("account-svc", "rebalance-svc", "taxlot-svc", "custodian-gateway", "reporting-svc")
PREFIX = "kill-"


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


# A book of its own (its own account ids and models), so this run is apart from the others.
BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "KIL-"),
        household_id=a.household_id.replace("HH-", "KHH-"),
        model_id=PREFIX + (a.model_id or ""),
    )
    for a in build_accounts(48, seed=29)
]
CHANGE = _own(changed_core_model())


async def test_killing_one_instance_of_each_consumer_mid_run_loses_nothing(system, tmp_path):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(timeout=30, headers=bearer())
    try:
        await ballast.load_securities()
        for model in MODELS:
            await ballast.publish_model(_own(model))
        await ballast.load_book(BOOK, tmp_path)
        mine = [a.account_id for a in BOOK]

        async def rebalancer_knows_the_book() -> bool:
            known = await http.get(f"{urls.rebalance}/read-model")
            return known.status_code == 200 and known.json()["accounts_with_holdings"] >= len(BOOK)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)
        published = await ballast.publish_model(CHANGE)

        async def the_run():
            runs = await http.get(
                f"{urls.rebalance}/runs",
                params={"model_id": CHANGE.model_id, "model_version": published["version"]},
            )
            return runs.json()["items"][0] if runs.json()["items"] else None

        planned = await eventually("the run", the_run)
        # the run is split into chunks that both instances work on; now take one of each away
        assert planned["chunks"] >= 3
        killed = {s: system.launcher.kill(system.profile, s, replica=1) for s in CONSUMERS}
        assert all(killed.values())

        run = await ballast.wait_for_chunks(planned["run_id"], time.monotonic() + 240)
        progress = await ballast.wait_until_complete(run, timeout_s=300)

        following = [a for a in BOOK if a.model_id == CHANGE.model_id]
        # every chunk done once, none failed; every following account evaluated once
        assert (run["chunks_done"], run["chunks_failed"]) == (run["chunks"], 0)
        assert run["accounts_evaluated"] + run["accounts_skipped"] == len(following)
        assert run["accounts_skipped"] == 0 and run["proposals"] > 0
        assert progress["trades_filled"] == run["trades"]  # the simulator rejects nothing here

        # each proposal recorded once in account-svc, approved once
        proposals = []
        for account_id in mine:
            page = await http.get(f"{urls.account}/proposals", params={"account_id": account_id})
            assert page.json()["next_offset"] is None  # a handful per account
            proposals += [p for p in page.json()["items"] if p["run_id"] == run["run_id"]]
        assert len(proposals) == run["proposals"]
        assert len({p["proposal_id"] for p in proposals}) == len(proposals)
        assert {p["status"] for p in proposals} == {"approved"}

        # each trade allocated once, from a block executed once, and filled in full
        trades = [t for p in proposals for t in p["trades"]]
        assert len(trades) == run["trades"]
        filled: dict[tuple[str, str], Decimal] = {}
        for trade in trades:
            allocation = (await http.get(f"{urls.gateway}/trades/{trade['trade_id']}")).json()
            assert allocation["status"] == "filled", allocation
            assert Decimal(allocation["filled_quantity"]) == Decimal(trade["quantity"])
            sign = 1 if trade["side"] == "buy" else -1
            key = (allocation["account_id"], trade["symbol"])
            filled[key] = filled.get(key, Decimal(0)) + sign * Decimal(trade["quantity"])
        gateway = (await http.get(f"{urls.gateway}/stats")).json()
        assert gateway["executions"]["overfills"] == 0 and gateway["executions"]["invalid"] == 0
        assert gateway["blocks"]["done_unallocated"] == 0

        # the book of record holds exactly what was loaded plus every fill, once
        for account in BOOK:
            book = (await http.get(f"{urls.taxlot}/accounts/{account.account_id}/holdings")).json()
            held = {
                p["symbol"]: Decimal(p["quantity"])
                for p in book["positions"]
                if Decimal(p["quantity"]) != 0
            }
            expected = dict(account.positions)
            for (account_id, symbol), quantity in filled.items():
                if account_id == account.account_id:
                    expected[symbol] = expected.get(symbol, Decimal(0)) + quantity
            expected = {s: q for s, q in expected.items() if q != 0}
            assert held == expected, account.account_id
    finally:
        await http.aclose()
        await ballast.close()
        system.restore()
