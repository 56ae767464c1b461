"""A proposal's metrics (trades-proposed's `metrics`) from the engine's result: the figures
of small scenarios worked out by hand, and the rounding and bounds of the contract. Pure."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from ballast_common.contracts.events import TradesProposedV1
from ballast_engine.harvesting import harvest
from ballast_engine.model import (
    AccountDrift,
    RebalanceInput,
    RebalanceResult,
    Request,
    Summary,
)
from ballast_engine.rebalance import rebalance
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    ModelSpec,
    PositionRow,
    SecurityRow,
    engine_account,
    engine_tax,
    proposal_json,
    proposal_metrics,
    proxy_sets_for,
    reference_for,
    tax_context,
)

DEFAULTS = Defaults(Decimal("25"), Decimal("0.005"), Decimal("0.02"))
SECURITIES = {
    s: SecurityRow(s, Decimal(p), "us_equity", "IT", False)
    for s, p in (("AAA", "100"), ("BBB", "50"), ("PXY", "25"))
}
TRADE_DATE = date(2026, 12, 7)


def lot(lot_id: str, quantity: str, cost: str, acquired: str = "2024-01-02") -> dict[str, str]:
    return {
        "lot_id": lot_id,
        "quantity": quantity,
        "acquired": acquired,
        "cost_basis": cost,
        "wash_adjustment": "0",
    }


def tax(harvesting: bool = False):
    context = tax_context("A-1", "taxable", None, {"harvest": harvesting}, [])
    return engine_tax(context, TRADE_DATE, None)


def test_a_rebalance_of_a_drifted_account_worked_by_hand():
    """70 AAA at $100 ($7,000, bought for $80), 40 BBB at $50 ($2,000), $1,000 cash: $10,000,
    against 50/50. AAA is 20 points over, BBB 30 under: sell 20 AAA ($2,000, a long-term gain
    of $400 at 20% = $80 of tax), buy 60 BBB ($3,000); after, both at 50%, no cash.
    Turnover (3,000 + 2,000) / (2 x 10,000) = 25%."""
    targets = {"core": {"AAA": Decimal("0.5"), "BBB": Decimal("0.5")}}
    reference = reference_for(SECURITIES, targets)
    positions = [
        PositionRow("AAA", Decimal("70"), [lot("L1", "70", "5600")]),
        PositionRow("BBB", Decimal("40"), [lot("L2", "40", "2000")]),
    ]
    account = engine_account(
        AccountRow("A-1", "core"), Decimal("1000"), positions, DEFAULTS, targets, (), tax()
    )
    result = rebalance(RebalanceInput(account, reference))
    assert [(t.symbol, t.side.value, t.quantity) for t in result.trades] == [
        ("AAA", "sell", Decimal("20")),
        ("BBB", "buy", Decimal("60")),
    ]
    metrics = proposal_metrics(result)
    assert metrics.model_dump(mode="json") == {
        "account_value": "10000.00",
        "buy_value": "3000.00",
        "sell_value": "2000.00",
        "turnover_percent": "25.0000",
        "estimated_tax": "80.00",
        "drift_before_percent": "30.0000",
        "drift_after_percent": "0.0000",
        "tracking_error_before_percent": None,
        "tracking_error_after_percent": None,
    }


def test_a_harvest_into_a_proxy_worked_by_hand():
    """100 AAA bought for $15,000, now $10,000: sold at a $5,000 long-term loss (saves
    $1,000 at 20%), and the $10,000 buys 400 PXY: turnover 20,000 / 20,000 = 100%. AAA's
    proxy counts toward its target, so the drift is nil before and after."""
    targets = {"core": {"AAA": Decimal("1")}}
    specs = {"core": ModelSpec(target_settings={"AAA": {"tax_loss_proxies": ["PXY"]}})}
    sets, _ = proxy_sets_for(specs, targets, SECURITIES, ())
    reference = reference_for(SECURITIES, targets, equivalence_sets=sets, specs=specs)
    loser = PositionRow("AAA", Decimal("100"), [lot("L1", "100", "15000", "2025-01-02")])
    account = engine_account(
        AccountRow("A-1", "core"), Decimal("0"), [loser], DEFAULTS, targets, sets, tax(True)
    )
    result = harvest(RebalanceInput(account, reference))
    assert [(t.symbol, t.side.value) for t in result.trades] == [("AAA", "sell"), ("PXY", "buy")]
    assert proposal_metrics(result).model_dump(mode="json") == {
        "account_value": "10000.00",
        "buy_value": "10000.00",
        "sell_value": "10000.00",
        "turnover_percent": "100.0000",
        "estimated_tax": "-1000.00",
        "drift_before_percent": "0.0000",
        "drift_after_percent": "0.0000",
        "tracking_error_before_percent": None,
        "tracking_error_after_percent": None,
    }


def _result(value: str, buys: str, sells: str, before: float, after: float) -> RebalanceResult:
    """A result with these figures; `before` and `after` the largest security drifts."""
    summary = Summary(
        0, 0, 0, Decimal(buys), Decimal(sells), 0.0, Decimal(value), Decimal(0), Decimal(0),
        max_drift_before=0.9,  # every level's (cash, here): not a security's
        max_drift_after=0.9,
        max_security_drift_before=before,
        max_security_drift_after=after,
    )  # fmt: skip
    drift = AccountDrift("A-1", ())
    return RebalanceResult("A-1", Request(), (), (), (), Decimal(0), drift, drift, (), summary)


def test_percents_round_half_up_to_four_decimals_and_stay_within_0_to_100():
    # 1 / 3 of a point: 0.333333...%; 2 / 3: 0.6667% (half up); drift 0.123455 -> 12.3455%
    third = proposal_metrics(_result("3000.00", "10.00", "10.00", 0.123455, 0.0000004999))
    assert (third.turnover_percent, third.drift_before_percent) == (
        Decimal("0.3333"),
        Decimal("12.3455"),
    )
    assert third.drift_after_percent == Decimal("0.0000")
    assert proposal_metrics(_result("3000.00", "20.00", "20.00", 0, 0)).turnover_percent == (
        Decimal("0.6667")
    )
    # an account worth nothing has no turnover; negative cash cannot push a figure past 100
    assert proposal_metrics(_result("0.00", "5.00", "0.00", 0, 0)).turnover_percent == 0
    small = proposal_metrics(_result("10.00", "500.00", "500.00", 3.5, 0))
    assert (small.turnover_percent, small.drift_before_percent) == (Decimal(100), Decimal(100))


def test_every_proposal_carries_its_metrics_on_the_wire():
    targets = {"core": {"AAA": Decimal("0.5"), "BBB": Decimal("0.5")}}
    account = engine_account(
        AccountRow("A-1", "core"), Decimal("10000"), [], DEFAULTS, targets, (), None
    )
    result = rebalance(RebalanceInput(account, reference_for(SECURITIES, targets)))
    ids = ["6f1c1f0e-8f7a-4a55-9d36-2d0c7f1d2a1" + str(i) for i in range(len(result.trades))]
    written = proposal_json(
        "6f1c1f0e-8f7a-4a55-9d36-2d0c7f1d2a10",
        uuid.UUID("0b4d7c2a-5e39-4c8e-a3f1-6a5f3e0c9b21"),
        ("core", 1),
        result,
        ids,
        False,
    )
    event = TradesProposedV1.model_validate_json(written)
    assert event.metrics == proposal_metrics(result)
    assert event.metrics is not None and event.metrics.turnover_percent == Decimal("50.0000")
