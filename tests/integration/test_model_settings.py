"""Issue 13 item 5 through the running system: a model manager's settings (hold with a
buy-list replacement, a security's own band, tax-loss proxies, swap-back) published by
model-hub-svc reach the engine in rebalance-svc's run, and every proposal carries its
metrics (trades-proposed read from Kafka), agreeing with its trades and with the run's
drift-detected. Public REST APIs and the event topics only."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from ballast_common.testing import eventually, issuer_for_tests
from ballast_demo.book import build_accounts
from ballast_demo.driver import MODEL_MANAGER, Ballast
from ballast_engine.model import BandKind
from ballast_engine.scenario import scenario_from_dict

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:6]
MODEL = f"set-{RUN}-core"
# VEA is held (no more bought): what it lacks of its 30% buys VWO; AGG keeps to ±0.5 point
# whatever the account's band; LQD is AGG's tax-loss proxy (so it counts toward AGG)
MODEL_BODY: dict[str, Any] = {
    "name": "Core with the manager's settings",
    "swap_back": True,
    "targets": [
        {
            "symbol": "AGG",
            "weight": "0.4",
            "band": {"kind": "absolute", "width": "0.005"},
            "tax_loss_proxies": ["LQD"],
        },
        {"symbol": "VEA", "weight": "0.3", "hold": True, "replacement": "VWO"},
        {"symbol": "SHY", "weight": "0.3"},
    ],
}
BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", f"MS{RUN}-"),
        household_id=a.household_id.replace("HH-", f"MS{RUN}H"),
        model_id=MODEL,
    )
    for a in build_accounts(60, seed=11)
    if a.model_id == "balanced-60-40"
]


async def _events(
    topic: str, kafka_client_options: dict, want: int, run_id: str
) -> dict[str, dict[str, Any]]:
    """The payloads of `topic` of run `run_id`, by account, once `want` of them are read."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options,
        auto_offset_reset="earliest",
        group_id=f"model-settings-{uuid.uuid4().hex[:6]}",
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


async def test_the_managers_settings_reach_the_engine_and_proposals_carry_metrics(
    system, tmp_path, kafka_client_options, system_topic_prefix
):
    urls = system.urls
    ballast = Ballast(urls, issuer_for_tests())
    try:
        assert BOOK
        await ballast.load_securities()
        url = f"{urls.model_hub}/models/{MODEL}"
        published = await ballast._call("PUT", url, MODEL_MANAGER, json=MODEL_BODY)
        assert published["version"] == 1
        known_before = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(BOOK, tmp_path)

        async def rebalancer_knows_the_book() -> bool:
            known = (await ballast.read_model())["accounts_with_holdings"]
            return known >= known_before + len(BOOK)

        await eventually("rebalance-svc learning the book", rebalancer_knows_the_book)
        # the book came after the first version: a second one (swap-back off) rebalances it
        second = {**MODEL_BODY, "swap_back": False}
        assert (await ballast._call("PUT", url, MODEL_MANAGER, json=second))["version"] == 2
        run = await ballast.wait_for_run(MODEL, 2, timeout_s=180)
        assert run["accounts_evaluated"] == len(BOOK), run
        assert run["proposals"] > 0, run

        scenario = scenario_from_dict(
            await ballast._call(
                "GET", f"{urls.rebalance}/runs/{run['run_id']}/scenarios/{BOOK[0].account_id}"
            )
        )
        entries = {e.symbol: e for e in scenario.reference.models[MODEL].entries}
        assert entries["VEA"].hold and entries["VEA"].replacement == "VWO"
        band = entries["AGG"].band
        assert band is not None and (band.kind, band.width) == (BandKind.ABSOLUTE, 0.005)
        assert entries["SHY"].band is None and not entries["SHY"].hold
        sets = {e.set_id: e for e in scenario.reference.equivalence_sets}
        proxies = sets[f"proxies:{MODEL}:AGG"]
        assert proxies.members == ("AGG", "LQD") and not proxies.identical

        proposals = await _events(
            f"{system_topic_prefix}trades-proposed",
            kafka_client_options,
            run["proposals"],
            run["run_id"],
        )
        drifts = await _events(
            f"{system_topic_prefix}drift-detected",
            kafka_client_options,
            run["accounts_evaluated"],
            run["run_id"],
        )
        trades = [t for p in proposals.values() for t in p["trades"]]
        # the held VEA is not bought; its replacement is, for the part VEA lacks
        assert not [t for t in trades if t["symbol"] == "VEA" and t["side"] == "buy"]
        assert [t for t in trades if (t["symbol"], t["reason"]) == ("VWO", "replacement")]
        # LQD counts toward AGG (its proxy): never sold as outside the model
        assert not [t for t in trades if (t["symbol"], t["reason"]) == ("LQD", "not_in_model")]
        for account_id, proposal in proposals.items():
            metrics = proposal["metrics"]
            buys = sum(
                Decimal(t["estimated_value"]) for t in proposal["trades"] if t["side"] == "buy"
            )
            sells = sum(
                Decimal(t["estimated_value"]) for t in proposal["trades"] if t["side"] == "sell"
            )
            value = Decimal(metrics["account_value"])
            assert (Decimal(metrics["buy_value"]), Decimal(metrics["sell_value"])) == (
                buys,
                sells,
            )
            turnover = ((buys + sells) / (2 * value) * 100).quantize(
                Decimal("0.0001"), ROUND_HALF_UP
            )
            assert Decimal(metrics["turnover_percent"]) == turnover, account_id
            assert value == Decimal(drifts[account_id]["total_value"]), account_id
            taxes = [Decimal(t["estimated_tax"] or 0) for t in proposal["trades"]]
            assert Decimal(metrics["estimated_tax"]) == sum(taxes, Decimal(0))
            # the largest security drift before: drift-detected's, in points
            measured = Decimal(drifts[account_id]["max_abs_drift"]) * 100
            assert abs(Decimal(metrics["drift_before_percent"]) - measured) <= Decimal("0.0001")
            assert Decimal(metrics["drift_after_percent"]) <= Decimal(
                metrics["drift_before_percent"]
            ), account_id
            assert metrics["tracking_error_before_percent"] is None
    finally:
        await ballast.close()
