"""Lot relief methods, terms, fees, unrealized gains and sleeve moves (pure functions)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from ballast_engine.tax import (
    DEFAULT_TAX_RATES,
    Fill,
    InsufficientQuantityError,
    LedgerAccount,
    Lot,
    ReliefMethod,
    Side,
    TaxLedger,
    TaxRates,
    Term,
    UnknownLotError,
    move_lots,
    one_year_after,
    open_lot,
    order_lots,
    rank_lots,
    relieve,
    split_lot,
    term_of,
    value_lots,
)


def lot(lot_id: str, qty: str, price: str, acquired: date, seq: int = 0) -> Lot:
    return open_lot(
        lot_id=lot_id,
        account="A",
        symbol="X",
        quantity=D(qty),
        price=D(price),
        acquired=acquired,
        seq=seq,
    )


def test_one_year_boundary() -> None:
    bought = date(2025, 3, 15)
    assert term_of(bought, date(2026, 3, 15)) is Term.SHORT
    assert term_of(bought, date(2026, 3, 16)) is Term.LONG
    assert one_year_after(date(2024, 2, 29)) == date(2025, 2, 28)
    assert term_of(date(2024, 2, 29), date(2025, 2, 28)) is Term.SHORT
    assert term_of(date(2024, 2, 29), date(2025, 3, 1)) is Term.LONG


def test_fees_go_into_basis_and_out_of_proceeds() -> None:
    bought = open_lot(
        lot_id="a",
        account="A",
        symbol="X",
        quantity=D(10),
        price=D("10.005"),
        acquired=date(2024, 1, 2),
        fees=D("4.95"),
    )
    assert bought.cost_basis == D("105.00")  # 100.05 + 4.95
    reliefs, remaining = relieve(
        [bought], D(4), ReliefMethod.FIFO, price=D(12), sold=date(2024, 5, 1), fees=D("1.00")
    )
    assert remaining[0].quantity == 6 and remaining[0].cost_basis == D("63.00")
    (r,) = reliefs
    assert (r.proceeds, r.cost_basis, r.gain) == (D("47.00"), D("42.00"), D("5.00"))


POOL = [
    lot("old-gain", "10", "50", date(2020, 1, 2), 1),  # long-term gain at 100
    lot("lt-loss", "10", "130", date(2021, 6, 1), 2),  # long-term loss
    lot("st-loss-small", "10", "101", date(2025, 9, 1), 3),
    lot("st-gain", "10", "90", date(2025, 10, 1), 4),
    lot("st-loss-big", "10", "140", date(2025, 11, 1), 5),
    lot("zero", "10", "100", date(2025, 12, 1), 6),
    lot("lt-gain-small", "10", "95", date(2022, 1, 3), 7),
]
SOLD = date(2026, 1, 15)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (ReliefMethod.FIFO, ["old-gain", "lt-loss", "lt-gain-small", "st-loss-small"]),
        (ReliefMethod.LIFO, ["zero", "st-loss-big", "st-gain", "st-loss-small"]),
        (ReliefMethod.HIFO, ["st-loss-big", "lt-loss", "st-loss-small", "zero"]),
        # lowest tax cost per share at 37% short-term / 20% long-term: -14.80 (40 x 37%),
        # -6.00 (30 x 20%), -0.37 (1 x 37%), 0
        (ReliefMethod.MINTAX, ["st-loss-big", "lt-loss", "st-loss-small", "zero"]),
    ],
)
def test_relief_order(method: ReliefMethod, expected: list[str]) -> None:
    reliefs, remaining = relieve(POOL, D(40), method, price=D(100), sold=SOLD)
    assert [r.lot.lot_id for r in reliefs] == expected
    assert sum(r.quantity for r in reliefs) == 40
    assert sum(x.quantity for x in remaining) == 30


def test_mintax_full_order() -> None:
    ordered = order_lots(POOL, ReliefMethod.MINTAX, net_price=D(100), on=SOLD)
    # tax per share: -14.80, -6.00, -0.37, 0, +1.00 (5 x 20%), +3.70 (10 x 37%), +10.00
    assert [x.lot_id for x in ordered] == [
        "st-loss-big",
        "lt-loss",
        "st-loss-small",
        "zero",
        "lt-gain-small",
        "st-gain",
        "old-gain",
    ]


def test_mintax_weighs_gains_by_the_accounts_rates() -> None:
    # with short-term gains taxed as long-term ones, the smaller gain per share goes first
    flat = TaxRates(D("0.20"), D("0.20"))
    ordered = order_lots(POOL, ReliefMethod.MINTAX, net_price=D(100), on=SOLD, rates=flat)
    assert [x.lot_id for x in ordered][:4] == ["st-loss-big", "lt-loss", "st-loss-small", "zero"]
    assert [x.lot_id for x in ordered][4:] == ["lt-gain-small", "st-gain", "old-gain"]
    heavy = TaxRates(D("0.90"), D("0.10"))  # 10 x 90% short-term now costs more than 50 x 10%
    ordered = order_lots(POOL, ReliefMethod.MINTAX, net_price=D(100), on=SOLD, rates=heavy)
    assert [x.lot_id for x in ordered][4:] == ["lt-gain-small", "old-gain", "st-gain"]


@pytest.mark.parametrize("rates", [DEFAULT_TAX_RATES, TaxRates(D("0.5"), D("0.1"))])
@pytest.mark.parametrize("price", [D(1), D(95), D(100), D("100.5"), D(135), D(500)])
def test_the_ledgers_mintax_is_the_engines_lot_ranking(rates: TaxRates, price: D) -> None:
    """One definition: a sell that names no lot relieves them in the order the rebalancing
    engine ranks them for a sale (``choice.rank_lots``)."""
    ledger = order_lots(POOL, ReliefMethod.MINTAX, net_price=price, on=SOLD, rates=rates)
    assert ledger == rank_lots(POOL, price, SOLD, rates)


def test_specific_lots_and_errors() -> None:
    reliefs, remaining = relieve(
        POOL, D(15), ReliefMethod.FIFO, price=D(100), sold=SOLD, lot_ids=["zero", "st-gain"]
    )
    assert [(r.lot.lot_id, r.quantity) for r in reliefs] == [("zero", 10), ("st-gain", 5)]
    assert len(remaining) == len(POOL) - 1
    with pytest.raises(UnknownLotError, match="nope"):
        relieve(POOL, D(1), ReliefMethod.FIFO, price=D(1), sold=SOLD, lot_ids=["nope"])
    with pytest.raises(InsufficientQuantityError, match="named lots hold 10"):
        relieve(POOL, D(11), ReliefMethod.FIFO, price=D(1), sold=SOLD, lot_ids=["zero"])
    with pytest.raises(InsufficientQuantityError, match="open position is 70"):
        relieve(POOL, D(71), ReliefMethod.FIFO, price=D(1), sold=SOLD)


def test_proceeds_split_conserves_cents() -> None:
    lots = [lot(f"l{i}", "1", "1", date(2024, 1, i + 1), i) for i in range(3)]
    reliefs, _ = relieve(lots, D(3), ReliefMethod.FIFO, price=D("0.3333"), sold=date(2024, 6, 1))
    assert sum(r.proceeds for r in reliefs) == D("1.00")
    assert all(r.proceeds in (D("0.33"), D("0.34")) for r in reliefs)


def test_split_lot_conserves_basis() -> None:
    whole = lot("a", "3", "3.3333", date(2024, 1, 2))
    part, rest = split_lot(whole, D(1), "a/1")
    assert rest is not None
    assert part.cost_basis + rest.cost_basis == whole.cost_basis
    assert (part.lot_id, rest.lot_id) == ("a/1", "a")


def test_move_between_sleeves_keeps_basis_and_dates() -> None:
    lots = [lot("a", "10", "10", date(2023, 1, 2), 1), lot("b", "10", "20", date(2024, 1, 2), 2)]
    moved, remaining = move_lots(lots, D(15), "growth")
    assert [(x.lot_id, x.quantity, x.cost_basis, x.sleeve) for x in moved] == [
        ("a", 10, D("100.00"), "growth"),
        ("b/growth", 5, D("100.00"), "growth"),
    ]
    assert [(x.lot_id, x.quantity, x.cost_basis, x.sleeve) for x in remaining] == [
        ("b", 5, D("100.00"), "")
    ]
    assert moved[1].acquired == date(2024, 1, 2)


def test_unrealized_per_lot() -> None:
    lots = [lot("a", "10", "10", date(2023, 1, 2)), lot("b", "5", "30", date(2025, 12, 1))]
    vals = value_lots(lots, {"X": D("20")}, date(2026, 1, 15))
    assert [(v.market_value, v.unrealized, v.term) for v in vals] == [
        (D("200.00"), D("100.00"), Term.LONG),
        (D("100.00"), D("-50.00"), Term.SHORT),
    ]
    assert vals[1].unrealized_pct == D("-0.3333333333333333333333333333")


def test_ledger_sleeves_move_without_tax_and_sell_per_sleeve() -> None:
    led = TaxLedger([LedgerAccount("U", "H")])
    led.apply(Fill("b1", "U", date(2024, 1, 2), "X", Side.BUY, D(10), D(10), sleeve="core"))
    led.apply(Fill("b2", "U", date(2024, 2, 1), "X", Side.BUY, D(10), D(20), sleeve="core"))
    moved = led.move("U", "X", D(12), from_sleeve="core", to_sleeve="esg")
    assert [(x.quantity, x.cost_basis, x.acquired) for x in moved] == [
        (10, D("100.00"), date(2024, 1, 2)),
        (2, D("40.00"), date(2024, 2, 1)),
    ]
    assert led.disposals == [] and led.position("U", "X", "esg") == 12
    assert led.journal[-1].kind == "move"
    (d,) = led.apply(Fill("s1", "U", date(2024, 3, 1), "X", Side.SELL, D(8), D(25), sleeve="core"))
    assert (d.quantity, d.cost_basis) == (D(8), D("160.00"))
    with pytest.raises(InsufficientQuantityError):
        led.apply(Fill("s2", "U", date(2024, 3, 1), "X", Side.SELL, D(1), D(25), sleeve="core"))
    assert led.position("U", "X") == 12


def test_the_ledger_relieves_min_tax_at_the_accounts_rates() -> None:
    # sold at 90: the lot at 120 is a long-term loss of 30 a share (saves 6.00 at 20%), the
    # lot at 105 a short-term loss of 15 (saves 5.55 at 37%): the long-term lot goes first,
    # though a dollar of loss is worth more short-term; at 90% short-term (13.50) it is last
    def first_relieved(rates: TaxRates) -> str:
        ledger = TaxLedger([LedgerAccount("A", "H", method=ReliefMethod.MINTAX, rates=rates)])
        for n, (price, day) in enumerate([("120", date(2022, 6, 1)), ("105", date(2024, 1, 10))]):
            ledger.apply(Fill(f"b{n}", "A", day, "X", Side.BUY, D(10), D(price)))
        [d] = ledger.apply(Fill("s", "A", date(2024, 6, 3), "X", Side.SELL, D(10), D(90)))
        return d.acquired.isoformat()

    assert first_relieved(DEFAULT_TAX_RATES) == "2022-06-01"
    assert first_relieved(TaxRates(D("0.90"), D("0.20"))) == "2024-01-10"
