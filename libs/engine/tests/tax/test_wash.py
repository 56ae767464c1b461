"""Wash sales through the ledger API: after the fact (accounting) and before (blocks)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal as D

import pytest
from ballast_engine.tax import (
    AccountType,
    EquivalenceSet,
    Fill,
    Identity,
    InsufficientQuantityError,
    LedgerAccount,
    Side,
    SymbolChange,
    TaxInputError,
    TaxLedger,
    replay,
)

ACCOUNTS = [
    LedgerAccount("A", "SMITH"),
    LedgerAccount("B", "SMITH"),
    LedgerAccount("IRA", "SMITH", AccountType.IRA),
    LedgerAccount("Z", "JONES"),
]
_n = 0


def t(
    account: str, day: date, side: str, qty: str, price: str, symbol: str = "X", **kw: object
) -> Fill:
    global _n
    _n += 1
    return Fill(f"t{_n}", account, day, symbol, Side(side), D(qty), D(price), **kw)


def ledger(*trades: Fill, identity: Identity | None = None) -> TaxLedger:
    return replay(trades, ACCOUNTS, identity=identity)


def test_pub550_example_through_api() -> None:
    led = ledger(
        t("A", date(2024, 1, 10), "buy", "100", "10"),
        t("A", date(2024, 6, 3), "sell", "100", "7.50"),
        t("A", date(2024, 6, 20), "buy", "100", "8"),
    )
    (d,) = led.disposals
    assert (d.code, d.adjustment, d.gain_loss) == ("W", D("250.00"), D("0.00"))
    (lot,) = led.lots()
    assert lot.cost_basis == D("1050.00") and lot.wash_adjustment == D("250.00")
    assert lot.acquired == date(2024, 6, 20) and lot.holding_start == date(2024, 1, 27)
    assert lot.replacement
    assert led.realized().short_term == 0 and led.realized().disallowed == D("250.00")


def test_earlier_purchase_larger_than_sale_is_split() -> None:
    led = ledger(
        t("A", date(2023, 1, 3), "buy", "100", "10"),
        t("B", date(2024, 2, 20), "buy", "150", "6"),
        t("A", date(2024, 3, 1), "sell", "100", "7"),
    )
    (d,) = led.disposals
    assert (d.washed_quantity, d.adjustment) == (100, D("300.00"))
    b_lots = sorted(led.lots("B"), key=lambda x: -x.quantity)
    assert [(x.quantity, x.cost_basis, x.replacement) for x in b_lots] == [
        (100, D("900.00"), True),
        (50, D("300.00"), False),
    ]
    assert b_lots[0].lot_id.startswith(b_lots[1].lot_id + "/")
    # long-term holding period of the sold shares is tacked on
    assert b_lots[0].term_on(date(2024, 3, 2)).value == "long"
    kinds = [c.kind for c in led.journal]
    assert kinds == ["open", "open", "relieve", "wash-split", "wash-adjust"]


def test_ira_replacement_is_permanent_and_absorbs_once() -> None:
    led = ledger(
        t("A", date(2023, 1, 3), "buy", "100", "10"),
        t("B", date(2023, 1, 3), "buy", "100", "10"),
        t("A", date(2024, 3, 1), "sell", "100", "7"),
        t("IRA", date(2024, 3, 5), "buy", "100", "7"),
        t("B", date(2024, 3, 6), "sell", "100", "7"),
    )
    first, second = led.disposals
    assert (first.adjustment, first.permanent) == (D("300.00"), D("300.00"))
    assert second.code == "" and second.gain_loss == D("-300.00")
    (ira_lot,) = led.lots("IRA")
    assert ira_lot.cost_basis == D("700.00") and ira_lot.holding_start == date(2024, 3, 5)
    assert led.realized().permanently_disallowed == D("300.00")


def test_gains_and_ira_losses_are_never_washed() -> None:
    led = ledger(
        t("A", date(2024, 1, 2), "buy", "10", "10"),
        t("A", date(2024, 1, 20), "sell", "10", "12"),
        t("IRA", date(2024, 1, 2), "buy", "10", "10"),
        t("IRA", date(2024, 1, 20), "sell", "10", "8"),
        t("A", date(2024, 1, 25), "buy", "10", "9"),
    )
    assert all(d.code == "" for d in led.disposals)
    assert led.lots("A")[0].cost_basis == D("90.00")


def test_other_household_and_outside_window_do_not_wash() -> None:
    led = ledger(
        t("A", date(2024, 1, 2), "buy", "10", "10"),
        t("A", date(2024, 3, 1), "sell", "10", "8"),
        t("Z", date(2024, 3, 2), "buy", "10", "8"),  # another household
        t("B", date(2024, 4, 1), "buy", "10", "8"),  # 31 days later
    )
    assert led.disposals[0].code == ""
    led2 = ledger(
        t("A", date(2024, 1, 2), "buy", "10", "10"),
        t("A", date(2024, 3, 1), "sell", "10", "8"),
        t("B", date(2024, 3, 31), "buy", "10", "8"),  # day 30: still in the window
    )
    assert led2.disposals[0].code == "W"


def test_identical_equivalence_set_washes_but_plain_substitute_does_not() -> None:
    trades = (
        t("A", date(2024, 1, 2), "buy", "10", "10", "SPY"),
        t("A", date(2024, 3, 1), "sell", "10", "8", "SPY"),
        t("B", date(2024, 3, 2), "buy", "10", "8", "IVV"),
    )
    same = Identity.from_sets([EquivalenceSet("sp500", ("SPY", "IVV"), identical=True)])
    similar = Identity.from_sets([EquivalenceSet("sp500", ("SPY", "IVV"), identical=False)])
    assert ledger(*trades, identity=same).disposals[0].code == "W"
    assert ledger(*trades, identity=similar).disposals[0].code == ""


def test_symbol_change_carries_open_loss() -> None:
    led = ledger(
        t("A", date(2024, 1, 2), "buy", "20", "10"),
        t("A", date(2024, 3, 1), "sell", "10", "8"),
    )
    led.apply_action(SymbolChange("ca1", "X", date(2024, 3, 5), "Y"))
    led.apply(t("B", date(2024, 3, 10), "buy", "10", "8", "Y"))
    assert led.disposals[0].code == "W"
    assert {x.symbol for x in led.lots()} == {"Y"}


def test_rejected_trade_leaves_ledger_unchanged() -> None:
    led = ledger(t("A", date(2024, 1, 2), "buy", "10", "10"))
    before = (led.lots(), list(led.disposals), list(led.journal))
    with pytest.raises(InsufficientQuantityError) as info:
        led.apply(t("A", date(2024, 2, 1), "sell", "11", "9", ref="fill 7"))
    assert "fill 7" in str(info.value)
    assert (led.lots(), list(led.disposals), list(led.journal)) == before


def test_ledger_refuses_out_of_order_days_but_replay_sorts() -> None:
    led = ledger(t("A", date(2024, 2, 1), "buy", "10", "10"))
    with pytest.raises(TaxInputError, match="replay the household"):
        led.apply(t("B", date(2024, 1, 1), "buy", "10", "10"))
    led.apply(t("Z", date(2024, 1, 1), "buy", "10", "10"))  # other household: fine


def test_buy_blocks_before_the_fact() -> None:
    led = ledger(
        t("A", date(2024, 1, 2), "buy", "100", "10"),
        t("A", date(2024, 3, 1), "sell", "100", "8"),
    )
    (block,) = led.buy_blocks("IRA", date(2024, 3, 10))
    assert block.symbols == ("X",) and block.until == date(2024, 3, 31)
    assert (block.quantity, block.loss) == (100, D("200.00"))
    assert "X" in block.reason
    assert led.buy_blocks("Z", date(2024, 3, 10)) == []  # other household
    assert led.buy_blocks("B", date(2024, 4, 1)) == []  # window over
    # a replacement that absorbs 60 shares leaves 40 blocked
    led.apply(t("B", date(2024, 3, 12), "buy", "60", "8"))
    (block,) = led.buy_blocks("A", date(2024, 3, 13))
    assert (block.quantity, block.loss) == (40, D("80.00"))
    led.apply(t("B", date(2024, 3, 14), "buy", "40", "8"))
    assert led.buy_blocks("A", date(2024, 3, 15)) == []


def test_sell_blocks_before_the_fact() -> None:
    led = ledger(
        t("A", date(2023, 1, 3), "buy", "10", "10"),
        t("A", date(2024, 3, 1), "buy", "10", "9"),
        t("B", date(2024, 3, 10), "buy", "5", "9"),
    )
    blocks = {b.lot_id: b for b in led.sell_blocks("A", date(2024, 3, 20), {"X": D(8)})}
    assert set(blocks) == {"t" + str(_n - 2), "t" + str(_n - 1)}
    old = blocks["t" + str(_n - 2)]
    assert old.washable_quantity == 10 and old.until == date(2024, 4, 9)
    # the recent lot is blocked only by the other recent purchase (5 shares in B)
    assert blocks["t" + str(_n - 1)].washable_quantity == 5
    assert led.sell_blocks("A", date(2024, 3, 20), {"X": D(20)}) == []  # no loss
    assert led.sell_blocks("A", date(2024, 4, 10), {"X": D(8)}) == []  # window over
    assert led.sell_blocks("IRA", date(2024, 3, 20)) == []
