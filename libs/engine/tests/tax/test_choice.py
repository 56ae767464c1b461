"""Tax-aware lot choice: cost per share, losses and long-term first, budget, avoid ST."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from ballast_engine.tax import (
    GainBudget,
    Lot,
    LotPolicy,
    TaxRates,
    choose_lots,
    estimate_tax,
    open_lot,
    rank_lots,
    tax_cost_per_share,
)

ON = date(2026, 1, 15)
RATES = TaxRates(short_term=D("0.37"), long_term=D("0.20"))


def lot(lot_id: str, basis_ps: str, acquired: date) -> Lot:
    return open_lot(
        lot_id=lot_id,
        account="A",
        symbol="X",
        quantity=D(10),
        price=D(basis_ps),
        acquired=acquired,
    )


LOTS = [
    lot("lt-gain", "50", date(2020, 1, 2)),
    lot("st-gain", "90", date(2025, 12, 1)),
    lot("st-loss", "120", date(2025, 11, 3)),
    lot("lt-loss", "130", date(2021, 5, 3)),
    lot("lt-gain-small", "95", date(2022, 2, 1)),
]


def test_tax_cost_per_share() -> None:
    assert tax_cost_per_share(LOTS[0], D(100), ON, RATES) == D("10.00")
    assert tax_cost_per_share(LOTS[2], D(100), ON, RATES) == D("-7.40")


def test_rank_prefers_losses_then_long_term_gains() -> None:
    ranked = [x.lot_id for x in rank_lots(LOTS, D(100), ON, RATES)]
    assert ranked == ["st-loss", "lt-loss", "lt-gain-small", "st-gain", "lt-gain"]
    washable = [x.lot_id for x in rank_lots(LOTS, D(100), ON, RATES, washable={"st-loss"})]
    assert washable[-1] == "st-loss"


def test_choose_lots_and_estimate() -> None:
    choice = choose_lots(LOTS, D(25), D(100), ON, RATES)
    assert [(p.lot_id, p.quantity) for p in choice.picks] == [
        ("st-loss", 10),
        ("lt-loss", 10),
        ("lt-gain-small", 5),
    ]
    assert (choice.short_term_gain, choice.long_term_gain) == (D("-200.00"), D("-275.00"))
    assert choice.tax_cost == D("-129.00") and choice.shortfall == 0 and choice.warnings == []


def test_hard_budget_stops_short() -> None:
    policy = LotPolicy(budget=GainBudget(limit=D(100)))
    choice = choose_lots(LOTS, D(50), D(100), ON, RATES, policy=policy, share_quantum=D(1))
    assert [(p.lot_id, p.quantity) for p in choice.picks][-1] == ("lt-gain", 9)
    assert choice.shortfall == 1
    assert choice.short_term_gain + choice.long_term_gain <= 100
    assert "realized-gain budget" in choice.warnings[-1]


def test_budget_already_used_this_year() -> None:
    policy = LotPolicy(budget=GainBudget(limit=D(100), realized_to_date=D(100)))
    choice = choose_lots(LOTS[:2], D(5), D(100), ON, RATES, policy=policy)
    assert choice.picks == [] and choice.shortfall == 5


def test_warning_budget_sells_and_warns() -> None:
    policy = LotPolicy(budget=GainBudget(limit=D(100), hard=False))
    choice = choose_lots(LOTS, D(50), D(100), ON, RATES, policy=policy)
    assert choice.shortfall == 0
    assert any("exceed the budget" in w for w in choice.warnings)


def test_avoid_short_term_gains() -> None:
    choice = choose_lots(
        LOTS, D(50), D(100), ON, RATES, policy=LotPolicy(avoid_short_term_gains=True)
    )
    assert "st-gain" not in choice.lot_ids
    assert choice.shortfall == 10
    assert "avoiding short-term gains" in choice.warnings[-1]


def test_washable_loss_used_last_with_warning() -> None:
    choice = choose_lots(LOTS, D(50), D(100), ON, RATES, washable={"st-loss"})
    assert choice.lot_ids[-1] == "st-loss"
    assert any("washed" in w for w in choice.warnings)


def test_estimate_tax_nets_terms() -> None:
    assert estimate_tax(D(1000), D(1000), RATES) == D("570.00")
    assert estimate_tax(D(-100), D(300), RATES) == D("40.00")  # 200 LT left
    assert estimate_tax(D(-500), D(300), RATES) == D("-74.00")  # 200 ST loss left
    assert estimate_tax(D(400), D(-100), RATES) == D("111.00")
