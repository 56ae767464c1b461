"""Worked cases of the tax-aware direct-index optimizer (answers computed by hand)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from ballast_engine.optimizer import (
    LotArrays,
    OptimizedSleeve,
    OptimizerInputError,
    PlainSettings,
    SleeveProblem,
    optimize,
    problem_from_lots,
)
from ballast_engine.optimizer import result as result_module
from ballast_engine.optimizer import solve as solve_module
from ballast_engine.optimizer.formulation import formulate
from ballast_engine.optimizer.problem import long_term_mask, prepare
from ballast_engine.optimizer.settings import solver_settings
from ballast_engine.tax import (
    HarvestPolicy,
    LossWindow,
    Lot,
    TaxRates,
    Term,
    harvest_candidates,
    tax_cost_per_share,
    term_of,
)
from ballast_engine.tax.model import EquivalenceSet
from scipy.sparse import csr_matrix

ON = date(2026, 12, 7)
OLD = "2020-01-02"  # long-term
RECENT = "2026-10-01"  # short-term, outside the wash window


def make(
    names: list[str],
    weights: list[float],
    prices: list[float],
    lots: list[tuple[str, float, float, str]],
    *,
    sectors: list[int] | None = None,
    sector_names: tuple[str, ...] = ("Tech", "Energy", "Health"),
    cash: float = 0.0,
    **extra: Any,
) -> SleeveProblem:
    """A sleeve with one market factor; lots as (name, shares, total basis, start date)."""
    n = len(names)
    index = {s: i for i, s in enumerate(names)}
    return SleeveProblem(
        names=np.array(names),
        index_weights=np.array(weights, dtype=float),
        prices=np.array(prices, dtype=float),
        sectors=np.array(sectors if sectors is not None else [0] * n, dtype=np.int64),
        sector_names=sector_names,
        exposures=np.ones((n, 1)),
        factor_names=("market",),
        factor_cov=np.array([[0.03]]),
        specific_vol=np.full(n, 0.25),
        lots=LotArrays(
            name=np.array([index[s] for s, *_ in lots], dtype=np.int64),
            quantity=np.array([q for _, q, _, _ in lots], dtype=float),
            basis=np.array([b for _, _, b, _ in lots], dtype=float),
            holding_start=np.array([d for *_, d in lots], dtype="datetime64[D]"),
            lot_ids=tuple(f"L{k}" for k in range(len(lots))),
            sell_blocked=extra.pop("sell_blocked", None),
        ),
        cash=cash,
        on=ON,
        account_id="ACC-1",
        **extra,
    )


def sells(result: OptimizedSleeve, symbol: str) -> list[Any]:
    return [t for t in result.trades if t.side == "sell" and t.symbol == symbol]


def bought(result: OptimizedSleeve, symbol: str) -> Decimal:
    return sum(
        (t.quantity for t in result.trades if t.side == "buy" and t.symbol == symbol), Decimal(0)
    )


def test_loss_lot_is_harvested_and_replaced_by_its_equivalent() -> None:
    # A (index 50%) holds one lot bought at $100 now at $70: a $3,000 long-term loss.
    # B is A's equivalent (not substantially identical); C is at its target.
    problem = make(
        ["A", "B", "C"],
        [0.5, 0.0, 0.5],
        [70.0, 35.0, 50.0],
        [("A", 100, 10_000.0, OLD), ("C", 140, 7_000.0, OLD)],
        equivalence=np.array([0, 0, -1]),
    )
    result = optimize(problem, PlainSettings(tax_sensitivity="high"))
    (sale,) = sells(result, "A")
    assert sale.quantity == 100 and sale.reason == "tax-loss-harvest"
    assert sale.gain == Decimal("-3000.00") and sale.estimated_tax == Decimal("-600.00")
    assert "2027-01-07" in sale.explanation  # bought back no earlier than sale + 31 days
    assert bought(result, "A") == 0
    # the proceeds (7,000 less 5 bp) buy 199 whole shares of B at 35 × 1.0005
    assert bought(result, "B") == 199
    (buy,) = [t for t in result.trades if t.symbol == "B"]
    assert buy.reason == "replacement" and "A" in buy.explanation
    assert result.estimated_tax == Decimal("-600.00")
    assert result.solver == "glop" and not result.relaxations


def test_without_harvesting_the_loss_lot_stays() -> None:
    problem = make(
        ["A", "B", "C"],
        [0.5, 0.0, 0.5],
        [70.0, 35.0, 50.0],
        [("A", 100, 10_000.0, OLD), ("C", 140, 7_000.0, OLD)],
        equivalence=np.array([0, 0, -1]),
    )
    result = optimize(problem, PlainSettings(tax_sensitivity="high", harvesting=False))
    assert result.trades == ()
    assert "No trade" in result.explanation


def _overweight_gains(**extra: Any) -> SleeveProblem:
    # A is 70% of the sleeve against a 50% target; all its lots are at a gain
    return make(
        ["A", "B"],
        [0.5, 0.5],
        [100.0, 100.0],
        [("A", 40, 2_000.0, OLD), ("A", 30, 2_400.0, RECENT), ("B", 30, 3_000.0, OLD)],
        **extra,
    )


def test_gain_budget_of_zero_sells_no_gain_lot() -> None:
    free = optimize(_overweight_gains(), PlainSettings(tax_sensitivity="low"))
    assert sells(free, "A"), "without a budget the overweight is trimmed"
    capped = optimize(_overweight_gains(), PlainSettings(tax_sensitivity="low", gain_budget=0))
    assert sells(capped, "A") == []
    assert capped.short_term_gain + capped.long_term_gain <= 0
    assert capped.relaxations == ()


def test_gain_budget_counts_gains_realized_this_year() -> None:
    # $1,000 budget, $900 already realized: at most $100 more; the short-term lot gains
    # $20 a share (the old one $50): 5 short-term shares use the room best
    result = optimize(
        _overweight_gains(realized_to_date=900.0),
        PlainSettings(tax_sensitivity="low", gain_budget=1_000),
    )
    assert result.short_term_gain + result.long_term_gain <= Decimal(100)
    assert [(t.lot_id, t.quantity) for t in sells(result, "A")] == [("L1", 5)]


def test_trims_sell_the_cheapest_lots_first() -> None:
    # with no budget, the long-term lot ($50 gain a share at 20%) costs $10 a share, the
    # short-term one ($20 a share at 37%) $7.40: the short-term lot goes first
    result = optimize(_overweight_gains(), PlainSettings(tax_sensitivity="low"))
    lots = [t.lot_id for t in sells(result, "A")]
    assert lots and lots[0] == "L1"


@pytest.mark.parametrize("rule", ["pro_rata", "sector", "equivalence"])
def test_excluded_name_goes_to_zero_and_its_weight_follows_the_rule(rule: str) -> None:
    # X (20%, sector Tech) is excluded; B shares its sector, C does not
    problem = make(
        ["X", "B", "C"],
        [0.2, 0.3, 0.5],
        [10.0, 10.0, 10.0],
        [("X", 2_000, 20_000.0, OLD), ("B", 3_000, 30_000.0, OLD), ("C", 5_000, 50_000.0, OLD)],
        sectors=[0, 0, 1],
        excluded=np.array([True, False, False]),
        redistribution=rule,
    )
    result = optimize(problem, PlainSettings(tracking_tolerance=0.05, sector_bound=1.0))
    (sale,) = sells(result, "X")
    assert sale.quantity == 2_000 and sale.reason == "restriction"
    assert "excluded" in sale.explanation
    post = dict(zip(problem.names.tolist(), result.post_shares.tolist(), strict=True))
    assert post["X"] == 0
    # sector: B takes X's 20% (same sector); pro rata (and equivalence, X having no set):
    # B gets 30/80 and C 50/80 of the sleeve, within a share and the 5 bp of costs
    if rule == "sector":
        assert post["B"] * 10 == pytest.approx(50_000, abs=100)
        assert post["C"] * 10 == pytest.approx(50_000, abs=100)
    else:
        assert post["B"] * 10 == pytest.approx(37_500, abs=100)
        assert post["C"] * 10 == pytest.approx(62_500, abs=100)


def test_whole_shares_when_fractional_is_off_and_decimals_when_on() -> None:
    base = dict(
        names=["A", "B", "C"],
        weights=[0.33, 0.33, 0.34],
        prices=[313.37, 97.13, 41.9],
        lots=[("A", 10, 3_000.0, OLD)],
        cash=20_000.0,
    )
    whole = optimize(make(**base), PlainSettings())  # type: ignore[arg-type]
    assert whole.trades and all(t.quantity == t.quantity.to_integral_value() for t in whole.trades)
    frac = optimize(make(**base, fractional=True), PlainSettings())  # type: ignore[arg-type]
    quantities = [t.quantity for t in frac.trades]
    assert any(q != q.to_integral_value() for q in quantities)
    assert all(q == q.quantize(Decimal("0.001")) for q in quantities)
    assert frac.cash_after < whole.cash_after  # fractions invest more of the cash


def test_wash_sale_blocked_name_is_not_bought_its_equivalent_is() -> None:
    # A was sold at a loss 10 days ago (still in its window): buying A would wash it
    window = LossWindow("S-1", "ACC-1", "A", ON - timedelta(days=10), Decimal(50), Decimal(500))
    problem = problem_from_lots(
        names=["A", "B", "C"],
        lots=[_lot("L-C", "C", 100, 5_000, date(2020, 1, 2))],
        on=ON,
        equivalence_sets=[EquivalenceSet("a-set", ("A", "B"))],
        loss_windows=[window],
        index_weights=np.array([0.5, 0.0, 0.5]),
        prices=np.array([50.0, 25.0, 50.0]),
        sectors=np.zeros(3, dtype=np.int64),
        sector_names=("Tech",),
        exposures=np.ones((3, 1)),
        factor_names=("market",),
        factor_cov=np.array([[0.03]]),
        specific_vol=np.full(3, 0.25),
        cash=5_000.0,
    )
    assert problem.buy_blocked is not None and problem.buy_blocked.tolist() == [True, False, False]
    result = optimize(problem, PlainSettings())
    assert bought(result, "A") == 0
    assert bought(result, "B") == 199  # 5,000 / (25 × 1.0005), whole shares


def test_identical_set_members_are_blocked_together() -> None:
    window = LossWindow("S-1", "ACC-1", "A", ON - timedelta(days=3), Decimal(10), Decimal(100))
    problem = problem_from_lots(
        names=["A", "A2", "C"],
        lots=[],
        on=ON,
        equivalence_sets=[EquivalenceSet("share-classes", ("A", "A2"), identical=True)],
        loss_windows=[window],
        index_weights=np.array([0.5, 0.0, 0.5]),
        prices=np.array([50.0, 50.0, 50.0]),
        sectors=np.zeros(3, dtype=np.int64),
        sector_names=("Tech",),
        exposures=np.ones((3, 1)),
        factor_names=("market",),
        factor_cov=np.array([[0.03]]),
        specific_vol=np.full(3, 0.25),
        cash=10_000.0,
    )
    result = optimize(problem, PlainSettings())
    assert bought(result, "A") == 0 and bought(result, "A2") == 0
    assert bought(result, "C") > 0


def test_sell_blocked_loss_lot_is_not_sold() -> None:
    # A's loss lot would be washed by a recent purchase: even "high" does not harvest it
    problem = make(
        ["A", "B", "C"],
        [0.5, 0.0, 0.5],
        [70.0, 35.0, 50.0],
        [("A", 100, 10_000.0, OLD), ("C", 140, 7_000.0, OLD)],
        equivalence=np.array([0, 0, -1]),
        sell_blocked=np.array([True, False]),
    )
    result = optimize(problem, PlainSettings(tax_sensitivity="high"))
    assert sells(result, "A") == []


def _empty_energy() -> SleeveProblem:
    # Energy (sector 1) is X and Y, 10% of the index; the client excludes both
    return make(
        ["A", "B", "X", "Y"],
        [0.45, 0.45, 0.06, 0.04],
        [10.0, 10.0, 10.0, 10.0],
        [("A", 4_500, 45_000.0, OLD), ("B", 4_500, 45_000.0, OLD), ("X", 600, 3_000.0, OLD),
         ("Y", 400, 6_000.0, OLD)],
        sectors=[0, 0, 1, 1],
        excluded=np.array([False, False, True, True]),
    )  # fmt: skip


def test_exclusion_emptying_a_sector_with_tight_bounds_is_explained() -> None:
    result = optimize(_empty_energy(), PlainSettings(sector_bound=0.01))
    assert [r.bound for r in result.relaxations] == ["sector"]
    reason = result.relaxations[0].reason
    assert "Energy" in reason and "X, Y" in reason and "±1.00 points" in reason
    assert "sector bound gave way" in reason
    assert reason[1:] in result.explanation
    assert sum(t.quantity for t in sells(result, "X")) == 600  # still a real answer
    assert result.status == "optimal after relaxing sector"
    assert any("every name of Energy is excluded" in n for n in result.notices)


def test_wide_sector_bounds_need_no_relaxation() -> None:
    result = optimize(_empty_energy(), PlainSettings(sector_bound=0.2))
    assert result.relaxations == () and result.status == "optimal"


def test_forced_gains_beyond_the_budget_relax_it_and_say_why() -> None:
    # selling X (excluded) realizes $3,000 of gains; the budget is $1,000
    problem = make(
        ["A", "X"],
        [0.9, 0.1],
        [10.0, 10.0],
        [("A", 9_000, 90_000.0, OLD), ("X", 1_000, 7_000.0, OLD)],
        excluded=np.array([False, True]),
    )
    result = optimize(problem, PlainSettings(gain_budget=1_000))
    assert [r.bound for r in result.relaxations] == ["gain_budget"]
    assert "$3,000.00" in result.relaxations[0].reason
    assert "$1,000.00" in result.relaxations[0].reason


def test_solver_failure_falls_back_to_the_rule_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(lp: Any, time_limit_s: float) -> solve_module.LpOutcome:
        return solve_module.LpOutcome("failed", np.zeros(0), "GLOP stopped with ABNORMAL")

    monkeypatch.setattr(solve_module, "solve_lp", failing)
    result = optimize(_empty_energy(), PlainSettings())
    assert result.solver == "rules" and result.status == "fallback"
    assert "rule engine" in result.explanation and "ABNORMAL" in result.explanation
    assert sum(t.quantity for t in sells(result, "X")) == 600
    assert sum(t.quantity for t in sells(result, "Y")) == 400
    assert all(t.lot_id for t in result.trades if t.side == "sell")


def test_tilt_moves_factor_exposure_toward_target() -> None:
    names = [f"N{i}" for i in range(6)]
    problem = SleeveProblem(
        names=np.array(names),
        index_weights=np.full(6, 1 / 6),
        prices=np.full(6, 20.0),
        sectors=np.zeros(6, dtype=np.int64),
        sector_names=("All",),
        exposures=np.array([[-1.0], [-0.6], [-0.2], [0.2], [0.6], [1.0]]),
        factor_names=("value",),
        factor_cov=np.array([[0.0025]]),
        specific_vol=np.full(6, 0.2),
        lots=LotArrays(
            np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, "datetime64[D]"), ()
        ),
        cash=60_000.0,
        on=ON,
    )
    plain = optimize(problem, PlainSettings(tracking_tolerance=0.05))
    tilted = optimize(problem, PlainSettings(tracking_tolerance=0.05, tilts={"value": 0.2}))

    def exposure(r: OptimizedSleeve) -> float:
        w = r.post_shares * 20.0 / 60_000.0
        return float(w @ problem.exposures[:, 0] - problem.index_weights @ problem.exposures[:, 0])

    assert abs(exposure(plain)) < 0.01
    # moving weight from N0 (-1) to N5 (+1) gains 2 units of exposure per unit of weight at
    # the factor weight 0.01 for 2 units of name deviation at 0.008: worth it, up to the
    # ±2.5-point position bound (tolerance 5%), i.e. 2 × 2.5% = 0.05; the other pairs gain
    # less exposure than their tracking costs
    assert exposure(tilted) == pytest.approx(0.05, abs=0.003)


def test_bad_input_names_the_field() -> None:
    with pytest.raises(OptimizerInputError) as err:
        optimize(make(["A", "B"], [0.5, 0.4], [1.0, 1.0], []), PlainSettings())
    assert err.value.field == "index_weights" and "add up to 0.900000" in str(err.value)
    with pytest.raises(OptimizerInputError) as err:
        optimize(make(["A"], [1.0], [-1.0], []), PlainSettings())
    assert err.value.field == "prices" and err.value.security == "A"
    with pytest.raises(OptimizerInputError) as err:
        optimize(make(["A"], [1.0], [1.0], []), PlainSettings(tilts={"size": 0.1}))
    assert err.value.field == "tilts" and "size" in str(err.value)
    with pytest.raises(OptimizerInputError) as err:
        optimize(make(["A"], [1.0], [1.0], []), PlainSettings(tax_sensitivity="extreme"))  # type: ignore[arg-type]
    assert err.value.field == "tax_sensitivity"


def _lot(lot_id: str, symbol: str, qty: float, basis: float, start: date) -> Lot:
    return Lot(lot_id, "ACC-1", symbol, Decimal(qty), Decimal(basis), start, start)


def test_vectorized_rules_agree_with_the_tax_engine() -> None:
    rng = np.random.default_rng(7)
    starts = [ON - timedelta(days=int(d)) for d in rng.integers(300, 420, 200)]
    starts += [date(2024, 2, 29), date(2025, 2, 28), date(2025, 3, 1)]
    for on in (ON, date(2025, 3, 1), date(2025, 2, 28), date(2026, 3, 1)):
        valid = [s for s in starts if s <= on]
        mask = long_term_mask(np.array(valid, dtype="datetime64[D]"), on)
        assert mask.tolist() == [term_of(s, on) is Term.LONG for s in valid]

    lots = [
        _lot(f"L{k}", "A", float(q), float(b), s)
        for k, (q, b, s) in enumerate(
            zip(rng.integers(1, 50, 60), rng.uniform(100, 5_000, 60), starts[:60], strict=True)
        )
    ]
    problem = problem_from_lots(
        names=["A"],
        lots=lots,
        on=ON,
        index_weights=np.array([1.0]),
        prices=np.array([61.25]),
        sectors=np.zeros(1, dtype=np.int64),
        sector_names=("S",),
        exposures=np.ones((1, 1)),
        factor_names=("market",),
        factor_cov=np.array([[0.03]]),
        specific_vol=np.array([0.2]),
        cash=0.0,
        harvest_policy=HarvestPolicy(Decimal(10), Decimal(100)),
    )
    prep = prepare(problem)
    rates = TaxRates(Decimal("0.37"), Decimal("0.2"))
    price = Decimal("61.25")
    scalar = [float(tax_cost_per_share(lot, price, ON, rates)) for lot in lots]
    assert prep.tax_per_share == pytest.approx(scalar, abs=1e-9)
    candidates = {
        c.lot.lot_id for c in harvest_candidates(lots, {"A": price}, ON, HarvestPolicy(), rates)
    }
    assert {problem.lots.lot_ids[k] for k in np.flatnonzero(prep.harvestable)} == candidates


def test_same_input_same_output() -> None:
    a = optimize(_empty_energy(), PlainSettings(tax_sensitivity="high"))
    b = optimize(_empty_energy(), PlainSettings(tax_sensitivity="high"))
    assert a.to_dict() == b.to_dict()


def test_recent_household_purchase_blocks_selling_the_loss_lot() -> None:
    # A's old lot is at a 30% loss, but the household bought A 5 days ago (another account):
    # tax.wash.sell_blocks marks the lot, and even "high" does not harvest it
    old = Lot("L-A", "ACC-1", "A", Decimal(100), Decimal(10_000), date(2020, 1, 2),
              date(2020, 1, 2), purchase_id="P-1")  # fmt: skip
    recent = Lot("L-X", "ACC-2", "A", Decimal(10), Decimal(700), ON - timedelta(days=5),
                 ON - timedelta(days=5), purchase_id="P-2")  # fmt: skip
    arrays: dict[str, Any] = dict(
        index_weights=np.array([0.5, 0.0, 0.5]),
        prices=np.array([70.0, 35.0, 70.0]),
        sectors=np.zeros(3, dtype=np.int64),
        sector_names=("Tech",),
        exposures=np.ones((3, 1)),
        factor_names=("market",),
        factor_cov=np.array([[0.03]]),
        specific_vol=np.full(3, 0.25),
        cash=7_000.0,
    )
    sets = [EquivalenceSet("a-set", ("A", "B"))]
    names = ["A", "B", "C"]
    free = problem_from_lots(names=names, lots=[old], on=ON, equivalence_sets=sets, **arrays)
    assert sells(optimize(free, PlainSettings(tax_sensitivity="high")), "A")
    blocked = problem_from_lots(
        names=names, lots=[old], on=ON, equivalence_sets=sets, household_lots=[recent], **arrays
    )
    assert blocked.lots.sell_blocked is not None and blocked.lots.sell_blocked.tolist() == [True]
    assert sells(optimize(blocked, PlainSettings(tax_sensitivity="high")), "A") == []


def test_a_loss_too_small_to_pay_for_its_trades_does_not_block_buying() -> None:
    # every loss is past these thresholds; A's lot is 1% down and A is underweight: the
    # saving (1% × 37% × 3) is below the round trip (2 × 0.25%) plus the hole (0.04), so A
    # is not harvested and the cash buys it
    problem = make(
        ["A", "C"],
        [0.5, 0.5],
        [99.0, 50.0],
        [("A", 20, 2_000.0, RECENT), ("C", 80, 4_000.0, OLD)],
        cash=2_000.0,
        harvest_policy=HarvestPolicy(Decimal(0), Decimal("0.01")),
    )
    result = optimize(problem, PlainSettings(tax_sensitivity="high"))
    assert sells(result, "A") == []
    # V = 1,980 + 4,000 + 2,000: A is 2,010 short of its 3,990; 2,000 / (99 × 1.0005) = 20.2
    assert bought(result, "A") == 20


def test_sentences_name_whole_shares_without_an_exponent() -> None:
    # A is 70% against 50%: 20 shares of the short-term lot L1 ($80 basis, $20 gain a share,
    # 37%) go first; the $1,999 they bring buy 19 B at $100 × 1.0005
    result = optimize(_overweight_gains(), PlainSettings(tax_sensitivity="low"))
    sale, buy = result.trades
    assert sale.explanation == (
        "Sell 20 A (lot L1, short-term gain $400.00): A is 20.00 points above its 50.00% "
        "target. Estimated tax $148.00."
    )
    assert buy.explanation == "Buy 19 B: B is 20.00 points below its 50.00% target."
    assert sale.to_dict()["quantity"] == "20" and str(buy.quantity) == "19"  # never 2E+1


def test_the_lp_matrix_is_canonical_csr() -> None:
    # rows sorted by column, each (row, column) once: the order GLOP gets does not depend on
    # how formulate gathers the coefficients
    for problem in (_overweight_gains(), _empty_energy()):
        prep = prepare(problem)
        lp = formulate(prep, solver_settings(PlainSettings(gain_budget=1_000), problem))
        shape = (len(lp.row_lb), len(lp.var_lb))
        matrix = csr_matrix((lp.data, lp.indices, lp.indptr), shape=shape)
        assert matrix.has_canonical_format and np.all(lp.data != 0)


def test_amounts_written_at_once_round_as_one_at_a_time() -> None:
    # the trades' cents and quantities are formatted in one call per array; each must read
    # exactly as the one-value f-string (half-way cases and negative zero included)
    values = np.concatenate(
        [
            np.array([0.005, 0.015, 0.025, 2.675, -0.001, 1e-9, 19.999999, 1_234_567.125]),
            np.random.default_rng(7).normal(0.0, 1e4, 5_000),
        ]
    )
    for decimals in (0, 2, 3):
        expected = [f"{x:.{decimals}f}" for x in values.tolist()]
        assert result_module._written(values, decimals) == expected
    assert [str(q) for q in result_module._quantities(np.array([20.0, 20.5, 3.0]), 3)] == [
        "20",
        "20.5",
        "3",
    ]
