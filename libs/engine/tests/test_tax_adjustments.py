"""Adjustments (a lot set to the custodian's figure) applied by the tax ledger in order with
fills: quantity, basis, date, open and close; pieces of wash-sale splits; a replay from
scratch agreeing with the incremental path."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from ballast_engine.tax import (
    Adjustment,
    AdjustmentKind,
    Disposal,
    Fill,
    LedgerAccount,
    Lot,
    Side,
    TaxInputError,
    TaxLedger,
    replay,
)

ACCOUNTS = [LedgerAccount("A", "H")]


def buy(tid: str, qty: str, price: str, on: date, lot: str | None = None) -> Fill:
    return Fill(tid, "A", on, "X", Side.BUY, D(qty), D(price), lot_ids=(lot or tid,))


def sell(tid: str, qty: str, price: str, on: date, *lots: str) -> Fill:
    return Fill(tid, "A", on, "X", Side.SELL, D(qty), D(price), lot_ids=lots)


def adjust(
    aid: str,
    lot: str,
    kind: AdjustmentKind,
    on: date,
    quantity: str | None = None,
    basis: str | None = None,
    acquired: date | None = None,
) -> Adjustment:
    return Adjustment(
        aid,
        "A",
        on,
        "X",
        lot,
        kind,
        D(quantity) if quantity is not None else None,
        D(basis) if basis is not None else None,
        acquired,
    )


def state(ledger: TaxLedger) -> list[tuple[str, D, D, date, date]]:
    return [
        (lot.lot_id, lot.quantity, lot.cost_basis, lot.acquired, lot.holding_start)
        for lot in ledger.lots()
    ]


def booked() -> TaxLedger:
    ledger = TaxLedger(ACCOUNTS)
    ledger.apply(buy("b1", "10", "10", date(2024, 1, 2), "L1"))
    ledger.apply(buy("b2", "10", "12", date(2024, 1, 3), "L2"))
    return ledger


def washed() -> TaxLedger:
    """L bought after a loss sale of OLD: its first 10 shares wash it (piece L/1, a
    replacement), 5 shares stay L."""
    ledger = TaxLedger(ACCOUNTS)
    ledger.apply(buy("b0", "10", "100", date(2024, 1, 2), "OLD"))
    ledger.apply(sell("s0", "10", "90", date(2024, 2, 1), "OLD"))
    ledger.apply(buy("b1", "15", "95", date(2024, 2, 10), "L"))
    return ledger


def test_a_quantity_adjustment_then_a_later_sell_relieves_the_adjusted_lot() -> None:
    ledger = booked()
    changes = ledger.adjust(
        adjust("r1", "L1", AdjustmentKind.QUANTITY, date(2024, 3, 1), "9", "95.00")
    )
    assert [(c.kind, c.lot_id, c.quantity, c.basis) for c in changes] == [
        ("adjust", "L1", D(-1), D("-5.00"))
    ]
    assert state(ledger)[0] == ("L1", D(9), D("95.00"), date(2024, 1, 2), date(2024, 1, 2))
    [sale] = ledger.apply(sell("s1", "9", "20", date(2024, 3, 2)))  # fifo: L1, all of it
    assert (sale.lot_id, sale.quantity, sale.cost_basis) == ("L1", D(9), D("95.00"))
    assert sale.proceeds - sale.cost_basis == D("85.00")
    assert [lot.lot_id for lot in ledger.lots()] == ["L2"]


def test_a_quantity_without_basis_scales_ours_per_share() -> None:
    ledger = booked()
    ledger.adjust(adjust("r1", "L2", AdjustmentKind.QUANTITY, date(2024, 3, 1), "13"))
    assert state(ledger)[1] == ("L2", D(13), D("156.00"), date(2024, 1, 3), date(2024, 1, 3))
    ledger.adjust(adjust("r2", "L1", AdjustmentKind.QUANTITY, date(2024, 3, 1), "3"))
    assert state(ledger)[0][:3] == ("L1", D(3), D("30.00"))


def test_a_decrease_comes_off_the_latest_piece_and_an_increase_goes_on_the_first() -> None:
    ledger = washed()
    before = {lot.lot_id: lot for lot in ledger.lots()}
    assert (before["L"].quantity, before["L/1"].quantity) == (D(5), D(10))
    assert before["L/1"].replacement and before["L/1"].cost_basis == D("1050.00")
    ledger.adjust(adjust("r1", "L", AdjustmentKind.QUANTITY, date(2024, 3, 1), "12", "1200"))
    after = {lot.lot_id: lot for lot in ledger.lots()}
    # the 3 shares off L/1 (the piece after L); L/1 scaled to 735.00, L takes the cents left
    assert (after["L"].quantity, after["L/1"].quantity) == (D(5), D(7))
    assert after["L/1"].cost_basis == D("735.00")
    assert after["L"].cost_basis == D("465.00")
    assert after["L/1"].holding_start == before["L/1"].holding_start  # still a replacement

    ledger.adjust(adjust("r2", "L", AdjustmentKind.QUANTITY, date(2024, 3, 2), "4"))
    after = {lot.lot_id: lot for lot in ledger.lots()}
    assert set(after) == {"L"}  # L/1 closed: no share left
    assert (after["L"].quantity, after["L"].cost_basis) == (D(4), D("400.00"))

    ledger.adjust(adjust("r3", "L", AdjustmentKind.QUANTITY, date(2024, 3, 3), "6", "610"))
    assert state(ledger) == [("L", D(6), D("610.00"), date(2024, 2, 10), date(2024, 2, 10))]
    assert ledger.disposals[1:] == []  # only the sale of OLD: adjustments realize nothing


def test_basis_date_open_and_close() -> None:
    ledger = washed()
    ledger.adjust(adjust("r1", "L", AdjustmentKind.BASIS, date(2024, 3, 1), basis="1500.005"))
    lots = {lot.lot_id: lot for lot in ledger.lots()}
    assert lots["L"].cost_basis + lots["L/1"].cost_basis == D("1500.01")  # half away from zero
    assert lots["L/1"].cost_basis == D("1050.00")  # the difference on the first piece, L

    replaced_start = lots["L/1"].holding_start
    day = date(2024, 2, 9)
    ledger.adjust(adjust("r2", "L", AdjustmentKind.DATE, date(2024, 3, 1), acquired=day))
    lots = {lot.lot_id: lot for lot in ledger.lots()}
    assert (lots["L"].acquired, lots["L"].holding_start) == (day, day)
    assert (lots["L/1"].acquired, lots["L/1"].holding_start) == (day, replaced_start)

    opened = ledger.adjust(
        adjust("r3", "N", AdjustmentKind.OPEN, date(2024, 3, 1), "5", "55.25", date(2024, 1, 9))
    )
    assert [(c.kind, c.lot_id, c.quantity, c.basis) for c in opened] == [
        ("open", "N", D(5), D("55.25"))
    ]
    [n] = ledger.lots(symbol="X")[:1]
    assert (n.lot_id, n.purchase_id, n.holding_start) == ("N", "r3", date(2024, 1, 9))
    # opening it again (it is open) changes nothing
    again = adjust("r4", "N", AdjustmentKind.OPEN, date(2024, 3, 1), "7", "1", date(2024, 1, 9))
    assert ledger.adjust(again) == []

    closed = ledger.adjust(adjust("r5", "L", AdjustmentKind.CLOSE, date(2024, 3, 1)))
    assert sorted((c.kind, c.lot_id) for c in closed) == [("close", "L"), ("close", "L/1")]
    assert [lot.lot_id for lot in ledger.lots()] == ["N"]
    assert len(ledger.disposals) == 1  # the sale of OLD only
    # a lot no longer open: nothing to adjust
    assert ledger.adjust(adjust("r6", "L", AdjustmentKind.BASIS, date(2024, 3, 1), basis="1")) == []


def test_bad_adjustments_name_the_field_and_change_nothing() -> None:
    ledger = booked()
    before = state(ledger)
    cases = [
        (adjust("r1", "L1", AdjustmentKind.QUANTITY, date(2024, 3, 1)), "quantity"),
        (adjust("r2", "L1", AdjustmentKind.BASIS, date(2024, 3, 1)), "basis"),
        (adjust("r3", "L1", AdjustmentKind.DATE, date(2024, 3, 1)), "acquired"),
        (adjust("r4", "L1", AdjustmentKind.QUANTITY, date(2024, 3, 1), "-1"), "quantity"),
        (adjust("r5", "", AdjustmentKind.CLOSE, date(2024, 3, 1)), "lot"),
        (adjust("r6", "L1", AdjustmentKind.CLOSE, date(2023, 3, 1)), "date"),
        (adjust("r7", "L1", "shrink", date(2024, 3, 1)), "kind"),  # not a kind
    ]
    for bad, field in cases:
        with pytest.raises(TaxInputError) as err:
            ledger.adjust(bad)
        assert err.value.field == field
    assert state(ledger) == before


def _inputs() -> list[Fill | Adjustment]:
    return [
        buy("b0", "10", "100", date(2024, 1, 2), "OLD"),
        sell("s0", "10", "90", date(2024, 2, 1), "OLD"),
        buy("b1", "15", "95", date(2024, 2, 10), "L"),
        buy("b2", "4", "97", date(2024, 2, 12), "M"),
        adjust("r1", "L", AdjustmentKind.QUANTITY, date(2024, 3, 1), "12", "1190"),
        adjust("r2", "M", AdjustmentKind.DATE, date(2024, 3, 1), acquired=date(2024, 2, 11)),
        adjust("r3", "N", AdjustmentKind.OPEN, date(2024, 3, 1), "2", "20", date(2024, 1, 5)),
        sell("s1", "13", "80", date(2024, 3, 4)),  # fifo: N (2), then L's pieces
        buy("b3", "3", "79", date(2024, 3, 20), "P"),  # washes the loss of s1
    ]


def test_a_replay_from_scratch_gives_the_lots_of_the_incremental_path() -> None:
    inputs = _inputs()
    # incremental: each input applied to a ledger restored from the state the previous left
    lots: list[Lot] = []
    disposals: list[Disposal] = []
    names: set[str] = set()
    seq, last = 0, None
    for item in inputs:
        open_losses = [
            (d, "H", d.quantity - d.washed_quantity, d.cost_basis - d.proceeds - d.adjustment)
            for d in disposals
            if d.proceeds < d.cost_basis
        ]
        ledger = TaxLedger.restore(
            ACCOUNTS,
            lots=lots,
            open_losses=open_losses,
            names={"A": names},
            last_days={"H": last} if last else {},
            seq=seq,
        )
        if isinstance(item, Adjustment):
            ledger.adjust(item)
        else:
            ledger.apply(item)
        lots, seq, last = ledger.lots(), ledger.seq, item.on
        disposals += ledger.disposals
        names |= {lot.lot_id for lot in lots} | {d.lot_id for d in disposals}
    assert any(lot.replacement for lot in lots if lot.lot_id.startswith("P"))  # s1 was washed
    # from scratch, whatever order the days arrive in (a late fill is replayed into place)
    late_fill_last = [*inputs[:3], *inputs[4:], inputs[3]]
    for order in (inputs, late_fill_last, list(reversed(inputs))):
        scratch = replay(order, ACCOUNTS)
        assert [_key(x) for x in scratch.lots()] == [_key(x) for x in lots]
        assert [(d.lot_id, d.quantity, d.cost_basis, d.adjustment) for d in scratch.disposals] == [
            (d.lot_id, d.quantity, d.cost_basis, d.adjustment) for d in disposals
        ]


def _key(lot: Lot) -> tuple[object, ...]:
    return (
        lot.lot_id,
        lot.quantity,
        lot.cost_basis,
        lot.acquired,
        lot.holding_start,
        lot.replacement,
    )


def test_a_late_fill_before_the_adjustment_keeps_the_custodians_figure() -> None:
    """A replay with a fill dated before the adjustment: the fill first, then the figure."""
    on_time = [
        buy("b1", "10", "10", date(2024, 1, 2), "L1"),
        adjust("r1", "L1", AdjustmentKind.QUANTITY, date(2024, 3, 1), "9", "95"),
    ]
    late = sell("s1", "2", "11", date(2024, 2, 1), "L1")
    ledger = replay([*on_time, late], ACCOUNTS)
    assert state(ledger) == [("L1", D(9), D("95.00"), date(2024, 1, 2), date(2024, 1, 2))]
    [sale] = ledger.disposals
    assert (sale.quantity, sale.cost_basis) == (D(2), D("20.00"))
