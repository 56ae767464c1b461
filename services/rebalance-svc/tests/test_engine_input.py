"""engine_input: the engine's accounts built from the read model (settings with the service's
defaults, restrictions, UMA sleeves with the holdings split rule, tax lots). Pure, no I/O."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from ballast_common.contracts.events import DriftDetectedV1, SecurityDriftV1
from ballast_engine.drift import book_arrays, scan_drift
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    FreedCashPolicy,
    Holding,
    RangeKind,
    RebalanceInput,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Settings,
    Sleeve,
    TaxLot,
)
from ballast_engine.rebalance import rebalance
from hypothesis import example, given
from hypothesis import strategies as st
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    DriftVerdict,
    EquivalenceSetRow,
    PositionRow,
    SecurityRow,
    SleeveRow,
    drift_event_json,
    engine_account,
    engine_restrictions,
    engine_settings,
    equivalence_sets_for,
    rebalanced_verdict,
    reference_for,
    scanned_accounts,
    split_holdings,
    strategy_for,
    tax_context,
)

DEFAULTS = Defaults(Decimal("25"), Decimal("0.005"), Decimal("0.02"))
SECURITIES = {
    s: SecurityRow(s, Decimal(p), cls, sector, frac)
    for s, p, cls, sector, frac in (
        ("EQ1", "100", "us_equity", "IT", True),
        ("EQ2", "50", "us_equity", "Energy", False),
        ("BND", "20", "bonds", "Fixed", False),
        ("XYZ", "10", "us_equity", "IT", False),
    )
}
MODELS = {
    "growth": {"EQ1": Decimal("0.5"), "EQ2": Decimal("0.5")},
    "income": {"BND": Decimal("1")},
}
UMA = AccountRow(
    "U-1",
    None,
    sleeves=(
        SleeveRow("g", "growth", Decimal("0.6"), "absolute", Decimal("0.05")),
        SleeveRow("i", "income", Decimal("0.4"), "absolute", Decimal("0.05")),
    ),
    rebalance_range="target",
)


def lot(lot_id: str, quantity: str, cost: str, sleeve_id: str | None = None) -> dict:
    return {
        "lot_id": lot_id,
        "quantity": quantity,
        "acquired": "2025-03-01",
        "cost_basis": cost,
        "wash_adjustment": "0",
        "sleeve_id": sleeve_id,
    }


def test_settings_take_the_service_defaults_where_the_account_set_nothing():
    assert engine_settings({}, DEFAULTS) == Settings(
        min_trade_value=25.0,
        security_band=Band(BandKind.ABSOLUTE, 0.005),
        cash_band=Band(BandKind.ABSOLUTE, 0.02),
    )
    doc = {
        "min_trade_value": "0",
        "min_trade_shares": "2",
        "min_opening_trade_value": "500",
        "fractional": True,
        "share_decimals": 2,
        "cash_target": "0.03",
        "cash_reserve": "250",
        "cash_band": {"kind": "relative", "width": "0.5"},
        "security_band": {"kind": "relative", "width": "0.1"},
        "freed_cash": "sector",
    }
    assert engine_settings(doc, DEFAULTS) == Settings(
        min_trade_value=0.0,
        min_trade_shares=2.0,
        min_opening_trade_value=500.0,
        fractional=True,
        share_decimals=2,
        cash_target=0.03,
        cash_reserve=250.0,
        cash_band=Band(BandKind.RELATIVE, 0.5),
        security_band=Band(BandKind.RELATIVE, 0.1),
        freed_cash=FreedCashPolicy.SECTOR,
    )


def test_restrictions_map_kind_scope_value_and_source():
    docs = [
        {"kind": "do_not_buy", "scope": "sector", "value": "Energy", "source": "client"},
        {"kind": "do_not_hold", "scope": "list", "value": "esg", "source": "firm", "reason": "x"},
    ]
    assert engine_restrictions(docs) == (
        Restriction(RestrictionKind.DO_NOT_BUY, RestrictionScope.SECTOR, "Energy", "client"),
        Restriction(RestrictionKind.DO_NOT_HOLD, RestrictionScope.LIST, "esg", "firm"),
    )


def test_an_sma_is_one_sleeve_with_the_cash_and_lots_that_add_up():
    row = AccountRow("S-1", "growth", {"fractional": True}, [])
    positions = [
        PositionRow("EQ2", Decimal("10"), [lot("L2", "4", "200"), lot("L3", "6", "330")]),
        PositionRow("EQ1", Decimal("5"), [lot("L1", "4", "400")]),  # lots short of the position
    ]
    account = engine_account(row, Decimal("1000"), positions, DEFAULTS, MODELS)
    [sleeve] = account.sleeves
    assert (sleeve.sleeve_id, sleeve.model_id, sleeve.cash) == ("main", "growth", 1000.0)
    assert sleeve.settings.fractional is True
    assert sleeve.holdings == (
        Holding("EQ1", 5.0, ()),
        Holding(
            "EQ2",
            10.0,
            (TaxLot("L2", 4.0, 200.0, "2025-03-01"), TaxLot("L3", 6.0, 330.0, "2025-03-01")),
        ),
    )
    assert account.strategy_id is None and account.cash == 0.0


def test_uma_holdings_follow_lot_sleeves_then_the_model_that_holds_the_symbol():
    positions = [
        # 40 shares in lots of sleeve g, 20 in a lot naming no sleeve: home is g (growth)
        PositionRow("EQ1", Decimal("60"), [lot("A", "40", "3000", "g"), lot("B", "20", "2500")]),
        # a lot explicitly in sleeve i although the income model does not hold EQ2
        PositionRow("EQ2", Decimal("30"), [lot("C", "10", "400", "i"), lot("D", "20", "900", "g")]),
        PositionRow("BND", Decimal("50"), []),  # no lots: to income, which holds BND
        PositionRow("XYZ", Decimal("7"), [lot("E", "7", "70", "nope")]),  # unknown sleeve, no model
    ]
    split = split_holdings(UMA.sleeves, positions, MODELS)
    assert {
        s: [(h.symbol, h.quantity, [x.lot_id for x in h.lots]) for h in hs]
        for s, hs in split.items()
    } == {
        "g": [("EQ1", 60.0, ["A", "B"]), ("EQ2", 20.0, ["D"]), ("XYZ", 7.0, ["E"])],
        "i": [("BND", 50.0, []), ("EQ2", 10.0, ["C"])],
    }


def test_lots_claiming_more_than_the_position_are_ignored_for_the_split():
    positions = [
        PositionRow("EQ1", Decimal("10"), [lot("A", "8", "1", "i"), lot("B", "8", "1", "g")])
    ]
    split = split_holdings(UMA.sleeves, positions, MODELS)
    assert [(h.symbol, h.quantity, h.lots) for h in split["g"]] == [("EQ1", 10.0, ())]
    assert "i" not in split


def test_a_uma_with_two_sleeves_rebalances_strategically_as_the_engine_says():
    positions = [
        PositionRow("EQ1", Decimal("60"), [lot("A", "60", "5000", "g")]),
        PositionRow("EQ2", Decimal("60"), []),
        PositionRow("BND", Decimal("50"), [lot("C", "50", "1100", "i")]),
    ]
    account = engine_account(UMA, Decimal("0"), positions, DEFAULTS, MODELS)
    strategy = strategy_for(UMA)
    reference = reference_for(SECURITIES, MODELS, [strategy])
    assert account.strategy_id == "U-1" and strategy.strategy_id == "U-1"
    assert strategy.rebalance_range.kind is RangeKind.TARGET
    result = rebalance(RebalanceInput(account, reference))

    # growth is $9,000 of $10,000 (90% against 60% ± 5): $3,000 moves to income
    [move] = result.cash_movements
    assert (move.from_sleeve, move.to_sleeve, move.amount) == ("g", "i", Decimal("3000.00"))
    trades = {(t.sleeve_id, t.symbol, t.side.value, t.quantity) for t in result.trades}
    assert trades == {("g", "EQ1", "sell", Decimal("30")), ("i", "BND", "buy", Decimal("150"))}

    # the same account built by hand gives the same result: the service adds nothing
    settings = engine_settings({}, DEFAULTS)
    by_hand = Account(
        "U-1",
        (
            Sleeve(
                "g",
                "growth",
                holdings=(
                    Holding("EQ1", 60.0, (TaxLot("A", 60.0, 5000.0, "2025-03-01"),)),
                    Holding("EQ2", 60.0),
                ),
                settings=settings,
            ),
            Sleeve(
                "i",
                "income",
                holdings=(Holding("BND", 50.0, (TaxLot("C", 50.0, 1100.0, "2025-03-01"),)),),
                settings=settings,
            ),
        ),
        strategy_id="U-1",
    )
    assert account == by_hand
    assert rebalance(RebalanceInput(by_hand, reference)).to_dict() == result.to_dict()


def test_a_restricted_sector_is_not_bought_and_freed_weight_follows_the_setting():
    row = AccountRow(
        "S-2",
        "growth",
        {"freed_cash": "cash", "min_trade_value": "0"},
        [{"kind": "do_not_buy", "scope": "sector", "value": "Energy", "source": "advisor"}],
    )
    account = engine_account(row, Decimal("10000"), [], DEFAULTS, MODELS)
    result = rebalance(RebalanceInput(account, reference_for(SECURITIES, MODELS)))
    assert [(t.symbol, t.side.value, t.quantity) for t in result.trades] == [
        ("EQ1", "buy", Decimal("50"))
    ]
    assert result.summary.cash_after == Decimal("5000.00")


def test_tax_context_dedupes_household_loss_sales_and_defaults_settings():
    from ballast_common.contracts.events import LossSaleV1

    sale = LossSaleV1(
        symbol="EQ1", sold_on="2026-11-01", quantity=Decimal("5"), loss_per_share=Decimal("3")
    )
    ctx = tax_context("S-1", "taxable", "HH-1", None, [sale, sale])
    assert ctx.recent_loss_sales == (sale,)
    assert ctx.settings.relief_method == "fifo" and ctx.settings.short_term_rate == Decimal("0.37")
    ctx = tax_context("S-1", "ira", None, {"relief_method": "hifo", "harvest": True}, [])
    assert (ctx.settings.relief_method, ctx.settings.harvest) == ("hifo", True)


@pytest.mark.parametrize("drifted", [False, True])
def test_scan_reports_each_account_with_its_security_weights(drifted):
    row = AccountRow("S-3", "growth", {}, [])
    eq2 = Decimal("100") if drifted else Decimal("200")
    account = engine_account(
        row,
        Decimal("0"),
        [PositionRow("EQ1", Decimal("100"), []), PositionRow("EQ2", eq2, [])],
        DEFAULTS,
        MODELS,
    )
    arrays, failures = book_arrays(Book(reference_for(SECURITIES, MODELS), (account,)))
    assert failures == ()
    [scanned] = scanned_accounts(arrays, scan_drift(arrays))
    assert scanned.out_of_tolerance is drifted
    weights = {s.symbol: (s.target_weight, s.current_weight) for s in scanned.securities}
    if drifted:  # $10,000 EQ1 and $5,000 EQ2
        assert weights == {
            "EQ1": (Decimal("0.5"), Decimal("0.666667")),
            "EQ2": (Decimal("0.5"), Decimal("0.333333")),
        }
        assert scanned.max_abs_drift == Decimal("0.166667")
        assert scanned.total_value == Decimal("15000.00") and "security" in scanned.levels
    else:
        assert weights == {
            "EQ1": (Decimal("0.5"), Decimal("0.5")),
            "EQ2": (Decimal("0.5"), Decimal("0.5")),
        }
        assert scanned.max_abs_drift == 0 and scanned.levels == ()


@pytest.mark.parametrize(
    ("eq2_shares", "out", "max_drift"),
    [
        (200, False, "0"),  # $10,000 XYZ (for EQ1) and $10,000 EQ2: on target
        (196, True, "0.005051"),  # 0.51% off: outside the 0.5% band, inside the old 1% rule
        (150, True, "0.071429"),
    ],
)
def test_a_model_change_and_a_scan_give_the_engines_one_verdict(eq2_shares, out, max_drift):
    sets, _ = equivalence_sets_for([EquivalenceSetRow("eq1", ("EQ1", "XYZ"))], SECURITIES)
    reference = reference_for(SECURITIES, MODELS, equivalence_sets=sets)
    row = AccountRow("S-4", "growth", {}, [])
    holdings = [PositionRow("XYZ", Decimal("1000"), []), PositionRow("EQ2", eq2_shares, [])]
    account = engine_account(row, Decimal("0"), holdings, DEFAULTS, MODELS)
    arrays, _ = book_arrays(Book(reference, (account,)))
    [scanned] = scanned_accounts(arrays, scan_drift(arrays))
    rebalanced = rebalanced_verdict(rebalance(RebalanceInput(account, reference)))
    # XYZ counts toward EQ1's target (an equivalent), so only the real drift shows
    assert scanned.out_of_tolerance is rebalanced.out_of_tolerance is out
    assert scanned.max_abs_drift == rebalanced.max_abs_drift == Decimal(max_drift)
    assert scanned.tolerance == rebalanced.tolerance == Decimal("0.005")
    assert scanned.levels == rebalanced.levels
    assert scanned.total_value == rebalanced.total_value


def test_equivalence_sets_leave_out_unknown_and_doubly_claimed_members():
    sets, problems = equivalence_sets_for(
        [  # newest first, as the read model gives them
            EquivalenceSetRow("new", ("EQ2", "EQ1")),
            EquivalenceSetRow("old", ("XYZ", "EQ1", "NOPE")),
            EquivalenceSetRow("ghost", ("NOPE", "GONE")),
            EquivalenceSetRow("bonds", ("BND",)),  # one member: substitutes nothing, no problem
        ],
        SECURITIES,
    )
    assert [(e.set_id, e.members) for e in sets] == [("new", ("EQ1", "EQ2"))]
    assert problems == [
        "equivalence set old: EQ1 is also in the newer set new; left out of old",
        "equivalence set old: NOPE is not in the security master; left out of the set",
        "equivalence set old: fewer than two usable members; set left out",
        "equivalence set ghost: NOPE is not in the security master; left out of the set",
        "equivalence set ghost: GONE is not in the security master; left out of the set",
        "equivalence set ghost: fewer than two usable members; set left out",
    ]
    # the engine accepts what is left (one set per security, every member in the master)
    reference = reference_for(SECURITIES, MODELS, equivalence_sets=sets)
    account = Account("A", (Sleeve("main", "growth", cash=0.0, holdings=(Holding("EQ2", 10),)),))
    rebalance(RebalanceInput(account, reference))


def test_an_equivalent_holding_counts_toward_its_twin_through_the_reference():
    model = {"one": {"EQ1": Decimal("1")}}
    holder = AccountRow("A", "one")
    sets, _ = equivalence_sets_for([EquivalenceSetRow("tech", ("EQ1", "XYZ"))], SECURITIES)
    account = engine_account(
        holder, Decimal("0"), [PositionRow("XYZ", Decimal("100"))], DEFAULTS, model
    )
    without = rebalance(RebalanceInput(account, reference_for(SECURITIES, model)))
    assert {(t.symbol, t.side.value) for t in without.trades} == {("XYZ", "sell"), ("EQ1", "buy")}
    with_set = rebalance(RebalanceInput(account, reference_for(SECURITIES, model, (), None, sets)))
    assert with_set.trades == ()


def test_a_uma_holding_an_equivalent_puts_it_in_the_sleeve_whose_model_holds_its_twin():
    # XYZ is in no model; BND (income, the second sleeve) is its equivalent
    sets, _ = equivalence_sets_for([EquivalenceSetRow("bonds", ("BND", "XYZ"))], SECURITIES)
    positions = [PositionRow("EQ1", Decimal("60")), PositionRow("XYZ", Decimal("200"))]
    assert [h.symbol for h in split_holdings(UMA.sleeves, positions, MODELS)["g"]] == [
        "EQ1",
        "XYZ",
    ]  # without the set: the first sleeve, where it is not in the model
    split = split_holdings(UMA.sleeves, positions, MODELS, sets)
    assert [h.symbol for h in split["i"]] == ["XYZ"]
    account = engine_account(UMA, Decimal("4000"), positions, DEFAULTS, MODELS, sets)
    reference = reference_for(SECURITIES, MODELS, [strategy_for(UMA)], None, sets)
    result = rebalance(RebalanceInput(account, reference))
    assert not [t for t in result.trades if t.symbol == "XYZ" and t.side.value == "sell"]
    # income's 40% of $12,000 = $2,000 of XYZ (counted toward BND) + 140 BND at $20
    assert [
        (t.sleeve_id, t.side.value, t.quantity) for t in result.trades if t.symbol == "BND"
    ] == [("i", "buy", Decimal("140"))]


WEIGHTS = st.floats(min_value=-1e-9, max_value=1.5, allow_nan=False, allow_infinity=False)


@given(
    positions=st.lists(
        st.tuples(st.from_regex(r"[A-Z][A-Z0-9.\-]{0,7}", fullmatch=True), WEIGHTS, WEIGHTS),
        max_size=12,
    ),
    account_id=st.text(min_size=1, max_size=12),
    total=st.decimals(min_value=-(10**9), max_value=10**12, places=2, allow_nan=False),
    out=st.booleans(),
)
@example(
    positions=[("HALF", 0.0000005, 0.0000015), ("NEG", 0.25, -0.0), ("Z", 0.0, -0.0)],
    account_id='a "quoted" \\ id',
    total=Decimal("0.00"),
    out=False,
)
def test_drift_events_written_from_arrays_are_the_models_bytes(positions, account_id, total, out):
    verdict = DriftVerdict(
        account_id,
        out,
        ("security",) if out else (),
        Decimal("0.123457"),
        Decimal("0.005000"),
        total,
        [p[0] for p in positions],
        [p[1] for p in positions],
        [p[2] for p in positions],
    )
    run_id = uuid.UUID(int=7)
    model = DriftDetectedV1(
        run_id=run_id,
        account_id=account_id,
        model_id="core",
        model_version=3,
        total_value=total,
        max_abs_drift=verdict.max_abs_drift,
        tolerance=verdict.tolerance,
        out_of_tolerance=out,
        securities=[
            SecurityDriftV1(
                symbol=d.symbol,
                target_weight=d.target_weight,
                current_weight=d.current_weight,
                drift=d.drift,
            )
            for d in verdict.securities
        ],
    )
    written = drift_event_json(run_id, ("core", 3), verdict)
    assert written == model.model_dump_json().encode()
    assert DriftDetectedV1.model_validate_json(written) == model
