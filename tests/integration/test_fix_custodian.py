"""custodian-gateway and the custodian simulator over FIX 4.4 (issue 11 items 5 and 6): the
system started with `scripts/services.py up --order-protocol fix` (the gateway's asyncfix
initiator, the simulator's asyncfix acceptor), a model change's block orders to fills, and a
kill -9 of the simulator while the fills stream back. After its restart every order settles
once: each block's executions at the gateway are exactly the simulator's for that ClOrdID,
no order became two at the simulator, every allocation got its whole share.

A system of its own (one instance of each service, a database, a topic prefix and ports of
its own: BALLAST_TEST_PORT_BASE + 300), since the simulator holds one book and the other
modules count its orders."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, SECURITIES, build_accounts, changed_core_model
from ballast_demo.driver import Ballast, Urls

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PORT_BASE = int(os.environ.get("BALLAST_TEST_PORT_BASE", "18600")) + 300
ACCOUNTS = 40
BLOCK_DONE = {"filled", "rejected"}  # a block's ends (partly filled: a reject of its rest)
SHARE_DONE = {"filled", "partially_filled", "rejected"}  # an allocation's


@pytest.fixture(scope="module")
def fix_system(start_own_system: Any) -> Iterator[Any]:
    env = {
        "BALLAST_ORDER_PROTOCOL": "fix",
        # fills stream back over a few seconds, so the kill lands among them
        "SIM_LATENCY_MS": "700",
        "SIM_LATENCY_JITTER_MS": "300",
        "SIM_PARTIAL_FILL_PROBABILITY": "0.7",
        # the engine reconnects 1.5 heartbeats after the link drops
        "CUSTODIAN_GATEWAY_FIX_HEARTBEAT_S": "2",
    }
    with start_own_system("fixcust", PORT_BASE, env) as system:
        yield system


async def _stats(http: httpx.AsyncClient, urls: Urls) -> dict[str, Any]:
    response = await http.get(f"{urls.custodian}/stats")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_model_change_settles_once_over_fix_across_a_kill_of_the_simulator(
    fix_system: Any, tmp_path: Path
) -> None:
    urls, launcher, profile = fix_system.urls, fix_system.launcher, fix_system.profile
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(timeout=30, headers=bearer())
    try:
        stats = await _stats(http, urls)
        assert stats["fix"]["port"] == PORT_BASE + 8
        accounts = build_accounts(ACCOUNTS, seed=11)
        await ballast.load_securities()
        for model in MODELS:
            await ballast.publish_model(model)
        await ballast.load_book(accounts, tmp_path / "book")
        await ballast.wait_until_known(len(accounts), len(SECURITIES))
        assert (await _stats(http, urls))["fix"]["logged_on"]

        change = changed_core_model()
        published = await ballast.publish_model(change)

        async def streaming() -> dict[str, Any] | None:
            now = await _stats(http, urls)
            midway = now["orders_received"] and now["fills"] and now["pending_executions"]
            return now if midway else None

        before_kill = await eventually("fills streaming back over FIX", streaming, 120, 0.1)
        launcher.kill(profile, "custodian-sim")  # kill -9, fills still to come

        async def simulator_gone() -> bool:
            return not any(
                i.alive for i in launcher.instances(profile) if i.service == "custodian-sim"
            )

        await eventually("the simulator's process ending", simulator_gone, 30, 0.05)
        launcher.up(profile, PORT_BASE, timeout_s=120, quiet=True, migrate_first=False)

        run = await ballast.wait_for_run(change.model_id, published["version"], timeout_s=180)
        assert run["trades"] > 0 and run["accounts_skipped"] == 0, run
        await ballast.wait_until_complete(run, timeout_s=300)
        await ballast.wait_until_settled(timeout_s=120)
        after = await _stats(http, urls)
        assert after["fix"]["logged_on"], after
        # the session's numbers went on across the restart (no reset to 1)
        assert after["fix"]["next_num_out"] > before_kill["fix"]["next_num_out"] > 2

        owner = await asyncpg.connect(fix_system.database_url.replace("+asyncpg", ""))
        try:
            blocks = await owner.fetch(
                "SELECT client_order_id, status, quantity, filled_quantity "
                "FROM custodian_gateway.orders"
            )
            gateway_executions = await owner.fetch(
                "SELECT execution_id, client_order_id, kind, quantity "
                "FROM custodian_gateway.executions"
            )
            allocations = await owner.fetch(
                "SELECT client_order_id, status, quantity, filled_quantity "
                "FROM custodian_gateway.allocations"
            )
        finally:
            await owner.close()

        # every block settled (none still sent), and the simulator has each exactly once
        statuses = Counter(b["status"] for b in blocks)
        assert blocks and set(statuses) <= BLOCK_DONE, statuses
        page = await http.get(f"{urls.custodian}/executions", params={"after": 0, "limit": 5000})
        sim_executions = page.json()["executions"]
        assert after["orders_received"] == len(blocks), (after, len(blocks))
        for block in blocks[:50]:
            order = (await http.get(f"{urls.custodian}/orders/{block['client_order_id']}")).json()
            assert order["channel"] == "fix", order
            assert Decimal(order["filled_quantity"]) == block["filled_quantity"], (order, block)

        # each ClOrdID's executions: the same ids at both ends, none applied twice
        at_sim: dict[str, set[str]] = defaultdict(set)
        for e in sim_executions:
            at_sim[e["client_order_id"]].add(e["execution_id"])
        at_gateway: dict[str, list[str]] = defaultdict(list)
        for e in gateway_executions:
            at_gateway[e["client_order_id"]].append(e["execution_id"])
        assert {k: sorted(v) for k, v in at_gateway.items()} == {
            k: sorted(v) for k, v in at_sim.items()
        }
        assert len(sim_executions) == len({e["execution_id"] for e in sim_executions})
        filled_at_sim: Counter[str] = Counter()
        for e in sim_executions:
            if e["kind"] == "fill":
                filled_at_sim[e["client_order_id"]] += Decimal(e["quantity"])
        for block in blocks:
            assert filled_at_sim[block["client_order_id"]] == block["filled_quantity"], block
            assert block["filled_quantity"] <= block["quantity"]

        # every allocation got its share of its block once: the shares add up to the block
        assert len(allocations) == run["trades"], (len(allocations), run["trades"])
        shares: Counter[str] = Counter()
        for a in allocations:
            assert a["status"] in SHARE_DONE, a
            assert a["filled_quantity"] <= a["quantity"], a
            shares[a["client_order_id"]] += a["filled_quantity"]
        assert {k: v for k, v in shares.items() if v} == {
            b["client_order_id"]: b["filled_quantity"] for b in blocks if b["filled_quantity"]
        }
    finally:
        await http.aclose()
        await ballast.close()
