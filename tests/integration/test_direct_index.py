"""Issue 12 item 4 through the running system: a direct-index model published through
model-hub-svc's REST API, accounts following it (one excluding a name), a model change ->
rebalance-svc runs them through the optimizer: a proposal that sells the excluded name,
carries both tracking errors, and whose trades have sentences; a second index whose
settings cannot hold (a sector bound of 0.01 points, and a client who excludes a whole
sector) -> the proposal's notes name the bound that gave way and the excluded sector.
Public REST APIs and the event topics only. Run it with its own BALLAST_TEST_PORT_BASE
(31600)."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from ballast_common.testing import eventually, issuer_for_tests
from ballast_demo import direct_index as di
from ballast_demo.driver import Ballast, DriverError

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]
TRACKED = f"di-{RUN}-tracked"
TIGHT = f"di-{RUN}-tight"
NAMES = di.index_names(60, seed=3, prefix=f"X{RUN[:3].upper()}")
EXCLUDED = NAMES[1].symbol
TRACKED_BOOK = di.build_accounts(NAMES, TRACKED, 3, prefix=f"DT{RUN}", exclusion=EXCLUDED)
TIGHT_BOOK = di.build_accounts(NAMES, TIGHT, 1, prefix=f"DS{RUN}")
EMPTIED = "Utilities"  # the tight account excludes the whole sector
TIGHT_BOOK[0].restrictions.append(
    {
        "kind": "do_not_hold",
        "scope": "sector",
        "value": EMPTIED,
        "source": "client",
        "reason": "client owns no utilities",
    }
)


async def _proposals(
    topic: str, kafka_client_options: dict, want: int, run_id: str
) -> dict[str, dict[str, Any]]:
    """trades-proposed of run `run_id`, by account, once `want` of them are read."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options,
        auto_offset_reset="earliest",
        group_id=f"direct-index-{uuid.uuid4().hex[:6]}",
    )
    found: dict[str, dict[str, Any]] = {}
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while len(found) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        payload = json.loads(r.value)["payload"]
                        if payload.get("run_id") == run_id:
                            found[payload["account_id"]] = payload
    finally:
        await consumer.stop()
    return found


async def test_direct_index_sleeves_go_through_the_optimizer(
    system, tmp_path, kafka_client_options, system_topic_prefix
):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    topic = f"{system_topic_prefix}trades-proposed"
    try:
        await ballast.load_more_securities(di.security_rows(NAMES))
        tight_settings = {"sector_bound": "0.0001", "exclusion_rule": "sector"}
        bodies = {TRACKED: di.model_body(NAMES), TIGHT: di.model_body(NAMES, **tight_settings)}
        for model_id, body in bodies.items():
            published = await ballast.publish_model_body(model_id, body)
            assert published["direct_index"]["settings"]["tracking_tolerance"] == "0.01"
            assert published["targets"][0]["factor_exposures"]
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        book = TRACKED_BOOK + TIGHT_BOOK
        await ballast.load_book(book, tmp_path, more_securities=di.securities(NAMES))

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(book)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)

        # the index is reconstituted: every account following it goes through the optimizer
        changed = di.changed_weights(NAMES)
        published = await ballast.publish_model_body(TRACKED, di.model_body(changed))
        assert published["version"] == 2
        run = await ballast.wait_for_run(TRACKED, 2, timeout_s=180)
        assert run["accounts_evaluated"] == len(TRACKED_BOOK), run
        assert run["proposals"] == len(TRACKED_BOOK), run
        proposals = await _proposals(topic, kafka_client_options, run["proposals"], run["run_id"])
        excluding = TRACKED_BOOK[0]  # every third account excludes EXCLUDED
        assert excluding.restrictions and excluding.positions[EXCLUDED] > 0
        for account in TRACKED_BOOK:
            proposal = proposals[account.account_id]
            metrics = proposal["metrics"]
            before = Decimal(metrics["tracking_error_before_percent"])
            after = Decimal(metrics["tracking_error_after_percent"])
            assert Decimal(0) < after <= max(before, Decimal("1.1")), metrics
            for trade in proposal["trades"]:
                assert trade["explanation"].strip() and trade["reason"], trade
                if trade["side"] == "sell":
                    assert trade["lot_ids"] and trade["estimated_tax"] is not None, trade
        sold = [
            t
            for t in proposals[excluding.account_id]["trades"]
            if t["symbol"] == EXCLUDED and t["side"] == "sell"
        ]
        assert sold and sold[0]["reason"] == "restriction", proposals[excluding.account_id]
        assert Decimal(sold[0]["quantity"]) == excluding.positions[EXCLUDED]
        others = [proposals[a.account_id] for a in TRACKED_BOOK[1:]]
        assert not [
            t
            for p in others
            for t in p["trades"]
            if t["symbol"] == EXCLUDED and t["side"] == "sell" and t["reason"] == "restriction"
        ]

        # account-svc keeps the tracking errors and returns them with the proposal
        proposal_id = proposals[excluding.account_id]["proposal_id"]

        async def stored() -> dict[str, Any] | None:
            try:
                return await ballast._call("GET", f"{urls.account}/proposals/{proposal_id}")
            except DriverError:  # not there yet (404)
                return None

        kept = await eventually("account-svc keeping the proposal", stored)
        assert kept["tracking_error_after_percent"] is not None
        assert Decimal(kept["tracking_error_after_percent"]) == Decimal(
            proposals[excluding.account_id]["metrics"]["tracking_error_after_percent"]
        )

        # settings that cannot hold: the proposal says which bound gave way and why
        tight = di.model_body(changed, name="Tight index", **tight_settings)
        assert (await ballast.publish_model_body(TIGHT, tight))["version"] == 2
        run = await ballast.wait_for_run(TIGHT, 2, timeout_s=180)
        assert run["proposals"] == 1, run
        [proposal] = (await _proposals(topic, kafka_client_options, 1, run["run_id"])).values()
        notes = " ".join(proposal["notes"])
        assert "sector bound" in notes and EMPTIED in notes and "gave way" in notes, notes
        emptied = {n.symbol for n in NAMES if n.sector == EMPTIED}
        sold = {t["symbol"] for t in proposal["trades"] if t["side"] == "sell"}
        assert emptied & set(TIGHT_BOOK[0].positions) <= sold, proposal["trades"]
    finally:
        await ballast.close()
