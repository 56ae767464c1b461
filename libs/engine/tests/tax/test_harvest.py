"""Tax-loss harvesting: thresholds, replacements, never a wash sale."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

from ballast_engine.tax import (
    EquivalenceSet,
    Fill,
    HarvestPolicy,
    Identity,
    LedgerAccount,
    Side,
    TaxLedger,
    TaxRates,
    harvest_candidates,
    propose_harvests,
    replacements_from_sets,
    replay,
)

RATES = TaxRates(short_term=D("0.37"), long_term=D("0.20"))
ON = date(2025, 6, 2)
IDENTITY = Identity.from_sets(
    [
        EquivalenceSet("sp500", ("SPY", "IVV", "VOO"), identical=True),
        EquivalenceSet("total", ("VTI", "ITOT"), identical=False),
    ]
)
REPLACEMENTS = {"SPY": ["IVV", "SCHX"], "VTI": ["ITOT"], "AAPL": ["MSFT"], "KO": ["PEP"]}


def buy(i: int, account: str, day: date, sym: str, qty: str, price: str) -> Fill:
    return Fill(f"b{i}", account, day, sym, Side.BUY, D(qty), D(price))


def household() -> TaxLedger:
    trades = [
        buy(1, "A", date(2024, 1, 2), "SPY", "100", "500"),  # down 10%: harvest
        buy(2, "A", date(2025, 1, 2), "VTI", "10", "300"),  # down 5%: below 10% threshold
        buy(3, "A", date(2025, 2, 3), "AAPL", "10", "200"),  # down 25% but only $500 < $600?
        buy(4, "A", date(2024, 3, 1), "KO", "100", "70"),  # down 20%, but B bought KO recently
        buy(5, "B", date(2025, 5, 20), "KO", "10", "56"),
    ]
    return replay(trades, [LedgerAccount("A", "H"), LedgerAccount("B", "H")], identity=IDENTITY)


PRICES = {
    "SPY": D(450),
    "IVV": D(450),
    "SCHX": D(22),
    "VTI": D(285),
    "ITOT": D(120),
    "AAPL": D(150),
    "MSFT": D(400),
    "KO": D(56),
    "PEP": D(150),
}


def test_candidates_respect_percent_and_dollar_thresholds() -> None:
    led = household()
    policy = HarvestPolicy(min_loss_percent=D(10), min_loss_dollars=D(600))
    cands = harvest_candidates(led.lots("A"), PRICES, ON, policy, RATES)
    assert [(c.lot.symbol, c.loss) for c in cands] == [("SPY", D("5000.00")), ("KO", D("1400.00"))]
    assert cands[0].tax_saved == D("1000.00")  # long-term loss at 20%
    # the schedule tightens the dollar threshold later in the year
    loose = HarvestPolicy(
        min_loss_percent=D(10), min_loss_dollars=D(100), schedule=((6, D(10), D(2000)),)
    )
    assert [
        c.lot.symbol
        for c in harvest_candidates(led.lots("A"), PRICES, date(2025, 5, 30), loose, RATES)
    ] == [
        "SPY",
        "KO",
        "AAPL",
    ]
    assert [c.lot.symbol for c in harvest_candidates(led.lots("A"), PRICES, ON, loose, RATES)] == [
        "SPY"
    ]


def test_proposals_skip_identical_and_washing_trades_and_execute_cleanly() -> None:
    led = household()
    policy = HarvestPolicy(min_loss_percent=D(10), min_loss_dollars=D(100))
    plan = propose_harvests(
        "A",
        led.lots("A"),
        PRICES,
        ON,
        policy,
        RATES,
        replacements=REPLACEMENTS,
        identity=IDENTITY,
        buy_blocked=[s for b in led.buy_blocks("A", ON) for s in b.symbols],
        sell_blocked={b.lot_id for b in led.sell_blocks("A", ON, PRICES)},
    )
    assert [(p.sell_symbol, p.buy_symbol) for p in plan.proposals] == [
        ("SPY", "SCHX"),
        ("AAPL", "MSFT"),
    ]
    spy = plan.proposals[0]
    assert (spy.loss, spy.tax_saved, spy.proceeds) == (D("5000.00"), D("1000.00"), D("45000.00"))
    assert spy.buy_quantity == 2045  # floor(45000 / 22)
    assert spy.swap_back_on == date(2025, 7, 3)
    assert "not substantially identical" in spy.reason and "$1000.00" in spy.reason
    skipped = dict(plan.skipped)
    assert "recent purchase would wash" in skipped["KO"]
    assert plan.tax_saved == D("1000.00") + D("185.00")

    # executing the plan creates no wash sale, and blocks the sold securities for 30 days
    n = 100
    for p in plan.proposals:
        n += 1
        led.apply(
            Fill(
                f"s{n}",
                "A",
                ON,
                p.sell_symbol,
                Side.SELL,
                p.quantity,
                PRICES[p.sell_symbol],
                lot_ids=tuple(lot_id for lot_id, _ in p.lots),
            )
        )
        led.apply(
            Fill(f"p{n}", "A", ON, p.buy_symbol, Side.BUY, p.buy_quantity, PRICES[p.buy_symbol])
        )
    assert led.disposals and all(d.code == "" for d in led.disposals)
    blocked = {s for b in led.buy_blocks("B", date(2025, 6, 10)) for s in b.symbols}
    assert blocked == {"SPY", "IVV", "VOO", "AAPL"}
    assert led.buy_blocks("B", spy.swap_back_on) == []


def test_replacement_being_harvested_is_not_bought() -> None:
    led = replay(
        [
            buy(1, "A", date(2024, 1, 2), "AAPL", "10", "200"),
            buy(2, "A", date(2024, 1, 2), "MSFT", "10", "500"),
        ],
        [LedgerAccount("A", "H")],
    )
    plan = propose_harvests(
        "A",
        led.lots("A"),
        PRICES,
        ON,
        HarvestPolicy(),
        RATES,
        replacements={"AAPL": ["MSFT"], "MSFT": ["AAPL"]},
    )
    # MSFT (larger saving) would buy AAPL, which is harvested: MSFT is skipped; then AAPL
    # can buy MSFT, which is no longer sold.
    assert [(p.sell_symbol, p.buy_symbol) for p in plan.proposals] == [("AAPL", "MSFT")]
    assert plan.skipped == [("MSFT", "AAPL is harvested at a loss in this run")]


def test_no_replacement_when_buy_would_wash() -> None:
    led = household()
    plan = propose_harvests(
        "A",
        [x for x in led.lots("A") if x.symbol == "AAPL"],
        PRICES,
        ON,
        HarvestPolicy(),
        RATES,
        replacements={"AAPL": ["MSFT"]},
        buy_blocked=["MSFT"],
    )
    assert plan.proposals == [] and "would wash a recent loss" in plan.skipped[0][1]


def test_replacements_from_equivalence_sets() -> None:
    sets = [
        EquivalenceSet("sp500", ("SPY", "IVV", "VOO"), identical=True),
        EquivalenceSet("large", ("SPY", "SCHX", "IVV")),
        EquivalenceSet("total", ("VTI", "ITOT")),
    ]
    got = replacements_from_sets(sets)
    assert got["SPY"] == ["SCHX"]  # IVV and VOO are substantially identical to SPY
    assert got["SCHX"] == ["SPY", "IVV"]
    assert got["VTI"] == ["ITOT"] and got["VOO"] == []
