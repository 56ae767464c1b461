"""Direct-index sleeves through the optimizer (`rebalance_svc.direct_index`): an account of
the read model's shape, rebalanced by the rule engine, then its sleeve proposed by the
optimizer with the account's personalization (exclusions, wash-sale blocks, rates). Pure."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from decimal import Decimal

import pytest
from ballast_common.contracts.events import (
    DirectIndexV1,
    LossSaleV1,
    ModelChangedV1,
    ModelTargetV1,
    OptimizerSettingsV1,
    RiskModelV1,
    TradesProposedV1,
)
from ballast_engine.model import RebalanceInput
from ballast_engine.optimizer import OptimizedTrade
from ballast_engine.rebalance import rebalance
from rebalance_svc.direct_index import (
    DirectIndex,
    direct_index_doc,
    engine_trades,
    indexes_of,
    optimize_account,
)
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    ModelSpec,
    PositionRow,
    ProposalExtras,
    SecurityRow,
    SleeveRow,
    engine_account,
    engine_tax,
    proposal_json,
    reference_for,
    strategy_for,
    tax_context,
)
from rebalance_svc.service import target_settings

DEFAULTS = Defaults(Decimal("25"), Decimal("0.005"), Decimal("0.02"))
TRADE_DATE = date.today()
MODEL = "di-test"
# 8 names in two sectors, $50 each; the index is equally weighted
NAMES = [f"N{i}" for i in range(8)]
SECTOR = {s: ("Tech" if i < 4 else "Energy") for i, s in enumerate(NAMES)}
SECURITIES = {s: SecurityRow(s, Decimal("50"), "us_equity", SECTOR[s], False) for s in NAMES}
EXPOSURES = {s: {"market": Decimal("1.2" if SECTOR[s] == "Tech" else "0.8")} for s in NAMES}


def model_event(**settings: object) -> ModelChangedV1:
    return ModelChangedV1(
        model_id=MODEL,
        name="Direct index",
        version=2,
        changed_by="pm@test",
        targets=[
            ModelTargetV1(symbol=s, weight=Decimal("0.125"), factor_exposures=EXPOSURES[s])
            for s in NAMES
        ],
        direct_index=DirectIndexV1(
            risk_model=RiskModelV1(
                factors=["market"],
                covariance=[[Decimal("0.0256")]],
                specific_volatility=Decimal("0.3"),
            ),
            settings=OptimizerSettingsV1.model_validate(settings),
        ),
    )


def lot(
    lot_id: str,
    quantity: str,
    cost: str,
    acquired: str = "2024-01-02",
    sleeve_id: str | None = None,
) -> dict[str, str | None]:
    return {
        "lot_id": lot_id,
        "quantity": quantity,
        "acquired": acquired,
        "cost_basis": cost,
        "wash_adjustment": "0",
        "sleeve_id": sleeve_id,
    }


def setup(
    restrictions: tuple[dict[str, str], ...] = (),
    loss_sales: tuple[LossSaleV1, ...] = (),
    shares: dict[str, int] | None = None,
    cash: str = "10000",
    **settings: object,
):
    """The account ($10,000 cash, 25 shares of each name at $50 bought at $40, N0 at $70: a
    loss),
    the reference and the chunk's indexes, and the rule engine's result."""
    event = model_event(**settings)
    targets = {MODEL: {t.symbol: t.weight for t in event.targets}}
    spec = ModelSpec(target_settings=target_settings(event), direct_index=direct_index_doc(event))
    reference = reference_for(SECURITIES, targets, specs={MODEL: spec})
    held = shares or dict.fromkeys(NAMES, 25)
    positions = [
        PositionRow(s, Decimal(q), [lot(f"L-{s}", str(q), str(q * (70 if s == "N0" else 40)))])
        for s, q in held.items()
    ]
    context = tax_context("A-1", "taxable", None, {"harvest": True}, loss_sales)
    account = engine_account(
        AccountRow("A-1", MODEL, {}, restrictions),
        Decimal(cash),
        positions,
        DEFAULTS,
        targets,
        (),
        engine_tax(context, TRADE_DATE, None),
    )
    indexes = indexes_of(reference, {MODEL: spec.direct_index})
    return account, reference, indexes, rebalance(RebalanceInput(account, reference))


def restriction(kind: str, scope: str, value: str) -> dict[str, str]:
    return {"kind": kind, "scope": scope, "value": value, "source": "client", "reason": "test"}


def test_the_read_model_keeps_the_index_and_no_exposures_in_the_target_settings():
    event = model_event(tax_sensitivity="high", tilts={"market": Decimal("0.1")})
    doc = direct_index_doc(event)
    assert doc is not None
    assert doc["settings"]["tax_sensitivity"] == "high"
    assert doc["exposures"]["N0"] == {"market": "1.2"}
    assert target_settings(event) == {}  # exposures live with the risk model
    index = DirectIndex.of(MODEL, {s: 0.125 for s in NAMES}, doc)
    assert index.exposures[:, 0].tolist() == [1.2] * 4 + [0.8] * 4
    assert index.weights.sum() == pytest.approx(1.0)
    assert direct_index_doc(model_event().model_copy(update={"direct_index": None})) is None


def test_an_excluded_name_is_sold_whole_and_the_proposal_carries_tracking_errors():
    account, reference, indexes, base = setup(
        (restriction("do_not_hold", "security", "N5"),), harvesting=False
    )
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None and optimized.sleeves_optimized == 1 and not optimized.relaxed
    trades = {(t.symbol, t.side.value): t for t in optimized.result.trades}
    sold = trades[("N5", "sell")]
    assert sold.quantity == Decimal(25) and sold.reason.value == "restriction"
    assert [lot.lot_id for lot in sold.lots] == ["L-N5"]
    assert ("N5", "buy") not in trades
    assert all(t.explanation for t in optimized.result.trades)
    # cash was 50% of the sleeve: the optimizer invests it, tracking error falls
    assert optimized.tracking_error_after < optimized.tracking_error_before
    summary = optimized.result.summary
    buys = sum(t.estimated_value for t in optimized.result.trades if t.side.value == "buy")
    sells = sum(t.estimated_value for t in optimized.result.trades if t.side.value == "sell")
    assert (summary.buy_value, summary.sell_value) == (buys, sells)
    assert summary.cash_after == base.summary.cash_before - buys + sells
    extras = ProposalExtras(
        optimized.tracking_error_before, optimized.tracking_error_after, optimized.notes
    )
    ids = [str(uuid.uuid4()) for _ in optimized.result.trades]
    event = TradesProposedV1.model_validate_json(
        proposal_json(
            str(uuid.uuid4()), uuid.uuid4(), (MODEL, 2), optimized.result, ids, False, extras
        )
    )
    assert event.metrics is not None
    assert event.metrics.tracking_error_before_percent == (
        Decimal(repr(optimized.tracking_error_before * 100)).quantize(Decimal("0.0001"))
    )
    assert event.metrics.tracking_error_after_percent is not None
    assert event.notes and "tracking error" in event.notes[-1]


def test_a_recent_loss_sale_blocks_buying_the_name_back():
    sale = LossSaleV1(
        symbol="N3",
        sold_on=TRADE_DATE - timedelta(days=5),
        quantity=Decimal(10),
        loss_per_share=Decimal(5),
    )
    account, reference, indexes, base = setup(loss_sales=(sale,), harvesting=False)
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None
    bought = {t.symbol for t in optimized.result.trades if t.side.value == "buy"}
    assert "N3" not in bought and len(bought) >= 5  # the rest of the cash is invested


def test_harvesting_sells_the_loss_lot_and_says_what_it_saves():
    account, reference, indexes, base = setup(cash="100", harvesting=True, tax_sensitivity="high")
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None
    [harvest] = [t for t in optimized.result.trades if t.symbol == "N0" and t.side.value == "sell"]
    assert harvest.reason.value == "tax-loss-harvest" and harvest.estimated_tax < 0
    assert "harvest" in harvest.explanation
    assert not [t for t in optimized.result.trades if t.symbol == "N0" and t.side.value == "buy"]


def test_a_do_not_sell_holding_keeps_the_rule_engine_and_the_proposal_says_why():
    account, reference, indexes, base = setup((restriction("do_not_sell", "security", "N2"),))
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None and optimized.sleeves_optimized == 0
    assert optimized.result is base and optimized.tracking_error_after is None
    assert "N2 may not be sold" in optimized.notes[0] and "rule engine" in optimized.notes[0]
    assert optimized.relaxed


def test_a_sector_emptied_under_a_tight_bound_is_explained():
    account, reference, indexes, base = setup(
        (restriction("do_not_hold", "sector", "Energy"),), sector_bound=Decimal("0.0001")
    )
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None
    notes = " ".join(optimized.notes)
    assert "Energy" in notes and "sector bound" in notes and "gave way" in notes
    sold = {t.symbol for t in optimized.result.trades if t.side.value == "sell"}
    assert sold >= {"N4", "N5", "N6", "N7"}
    assert optimized.relaxed


def test_a_model_that_is_no_direct_index_is_left_to_the_rules():
    account, reference, _, base = setup()
    assert optimize_account(base, account, reference, {}, 0.0) is None


def test_lot_sales_of_one_name_are_one_engine_trade():
    parts = [
        OptimizedTrade("N1", "sell", Decimal(3), 50.0, Decimal("150.00"), "drift", "Sell 3 N1.",
                       "L1", "2024-01-02", Decimal("120"), Decimal("30"), "long", Decimal("6")),
        OptimizedTrade("N1", "sell", Decimal(2), 50.0, Decimal("100.00"), "drift", "Sell 2 N1.",
                       "L2", "2025-06-02", Decimal("110"), Decimal("-10"), "short", Decimal("-4")),
        OptimizedTrade("N2", "buy", Decimal(4), 50.0, Decimal("200.00"), "drift", "Buy 4 N2."),
    ]  # fmt: skip
    sell, buy = engine_trades("A-1", "main", parts)
    assert (sell.quantity, sell.estimated_value, sell.estimated_tax) == (
        Decimal(5),
        Decimal("250.00"),
        Decimal("2"),
    )
    assert [lot.lot_id for lot in sell.lots] == ["L1", "L2"]
    assert sell.explanation == "Sell 3 N1. Sell 2 N1."
    assert (buy.symbol, buy.side.value, buy.lots, buy.estimated_tax) == ("N2", "buy", (), None)


def test_a_uma_sleeve_on_the_index_is_optimized_and_the_other_keeps_the_rules():
    """A UMA: 70% in the direct index (sleeve "di"), 30% in a bond model (sleeve "b"). Only
    the index sleeve's trades come from the optimizer, with the cash the strategic rebalance
    gave it; the bond sleeve's are the rule engine's; the notes name the sleeve."""
    event = model_event(harvesting=False)
    securities = {**SECURITIES, "BND": SecurityRow("BND", Decimal("20"), "bonds", "Bonds", False)}
    models = {MODEL: {t.symbol: t.weight for t in event.targets}, "bonds": {"BND": Decimal(1)}}
    spec = ModelSpec(direct_index=direct_index_doc(event))
    uma = AccountRow(
        "U-1",
        None,
        sleeves=(
            SleeveRow("di", MODEL, Decimal("0.7"), "absolute", Decimal("0.05")),
            SleeveRow("b", "bonds", Decimal("0.3"), "absolute", Decimal("0.05")),
        ),
        rebalance_range="target",
    )
    reference = reference_for(securities, models, [strategy_for(uma)], specs={MODEL: spec})
    positions = [
        PositionRow(s, Decimal(25), [lot(f"L-{s}", "25", "1000", sleeve_id="di")]) for s in NAMES
    ] + [PositionRow("BND", Decimal(100), [lot("L-BND", "100", "2000", sleeve_id="b")])]
    context = tax_context("U-1", "taxable", None, {}, [])
    account = engine_account(
        uma,
        Decimal("6000"),
        positions,
        DEFAULTS,
        models,
        (),
        engine_tax(context, TRADE_DATE, None),
    )
    base = rebalance(RebalanceInput(account, reference))
    indexes = indexes_of(reference, {MODEL: spec.direct_index, "bonds": None})
    optimized = optimize_account(base, account, reference, indexes, 0.0)
    assert optimized is not None and optimized.sleeves_optimized == 1
    bonds = [t for t in optimized.result.trades if t.sleeve_id == "b"]
    assert bonds == [t for t in base.trades if t.sleeve_id == "b"]
    index_trades = [t for t in optimized.result.trades if t.sleeve_id == "di"]
    assert index_trades and all(t.symbol in NAMES for t in index_trades)
    frame = next(f for f in base.sleeves if f.sleeve_id == "di")
    spent = sum(t.estimated_value for t in index_trades if t.side.value == "buy") - sum(
        t.estimated_value for t in index_trades if t.side.value == "sell"
    )
    assert spent <= frame.cash_before + frame.cash_in - frame.cash_out
    assert optimized.notes[0].startswith("sleeve di: ")
