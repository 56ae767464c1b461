"""Unit tests of the replay adapter (taxlot_svc.book): stored inputs to engine trades, the
canonical order, relief methods and named lots, wash sales, corporate actions, rows out."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from ballast_engine.tax import (
    Disposal,
    Identity,
    InsufficientQuantityError,
    Lot,
    Split,
    SymbolChange,
    UnknownLotError,
)
from ballast_engine.tax.tradefile import FORM8949_COLUMNS, form8949_rows, to_csv
from hypothesis import given, settings
from hypothesis import strategies as st
from taxlot_svc.book import (
    ACTION_KINDS,
    AccountFacts,
    ActionInput,
    Input,
    SymbolState,
    build_action,
    disposal_of,
    gain_rows,
    identity_of,
    lot_rows,
    replay_household,
    symbol_family,
    to_trade,
)
from taxlot_svc.incremental import apply_in_date_order

D = Decimal
A = AccountFacts("A", "H")
IRA = AccountFacts("B", "H", "ira")


def opening(seq: int, lot: str, qty: str, basis: str, on: date, account: str = "A") -> Input:
    return Input(seq, account, "opening", lot, on, "X", "buy", D(qty), D(0), fees=D(basis))


def fill(
    seq: int,
    side: str,
    qty: str,
    price: str,
    on: date,
    account: str = "A",
    *,
    fees: str = "0",
    method: str | None = None,
    lot_ids: tuple[str, ...] = (),
) -> Input:
    return Input(
        seq,
        account,
        "fill",
        f"f{seq}",
        on,
        "X",
        side,
        D(qty),
        D(price),
        fees=D(fees),
        lot_ids=lot_ids,
        method=method,
    )


def test_an_opening_lot_keeps_its_exact_basis_and_name() -> None:
    trade = to_trade(opening(1, "opening-X-1", "3", "1000.01", date(2024, 1, 2)))
    assert (trade.price, trade.fees, trade.lot_ids) == (D(0), D("1000.01"), ("opening-X-1",))
    ledger = replay_household([A], [opening(1, "opening-X-1", "3", "1000.01", date(2024, 1, 2))])
    [lot] = ledger.ledger.lots("A")
    assert (lot.lot_id, lot.cost_basis, lot.acquired) == (
        "opening-X-1",
        D("1000.01"),
        date(2024, 1, 2),
    )


def two_lots() -> list[Input]:
    return [
        opening(1, "old", "10", "500.00", date(2023, 1, 5)),  # 50/share, long-term
        opening(2, "new", "10", "900.00", date(2024, 3, 1)),  # 90/share, short-term
    ]


@pytest.mark.parametrize(
    ("method", "relieved", "gain"),
    [
        ("fifo", "old", D("300.00")),
        ("lifo", "new", D("-100.00")),
        ("hifo", "new", D("-100.00")),
        ("mintax", "new", D("-100.00")),
    ],
)
def test_the_method_stored_with_a_sell_picks_the_lots(
    method: str, relieved: str, gain: Decimal
) -> None:
    sell = fill(3, "sell", "10", "80", date(2024, 6, 3), method=method)
    replay = replay_household([A], [*two_lots(), sell])
    [d] = replay.disposals_of("f3")
    assert (d.lot_id, d.proceeds - d.cost_basis) == (relieved, gain)


def test_named_lots_override_the_method_and_fees_cut_proceeds() -> None:
    buy = fill(3, "buy", "2", "100", date(2024, 5, 1), fees="1.50")
    sell = fill(
        4, "sell", "4", "80", date(2024, 6, 3), fees="2.00", method="hifo", lot_ids=("old",)
    )
    replay = replay_household([A], [*two_lots(), buy, sell])
    [d] = replay.disposals_of("f4")
    assert d.lot_id == "old" and d.proceeds == D("318.00")  # 4 x 80 - 2
    bought = [lot for lot in replay.ledger.lots("A") if lot.lot_id == "fill-f3"]
    assert bought[0].cost_basis == D("201.50")  # 2 x 100 + 1.50
    with pytest.raises(UnknownLotError):
        replay_household(
            [A], [*two_lots(), fill(4, "sell", "1", "80", date(2024, 6, 3), lot_ids=("nope",))]
        )


def test_an_oversell_names_the_fill() -> None:
    with pytest.raises(InsufficientQuantityError, match="fill f3"):
        replay_household([A], [*two_lots(), fill(3, "sell", "21", "80", date(2024, 6, 3))])


PUB550 = [
    opening(1, "lot1", "100", "1000.00", date(2024, 1, 10)),
    fill(2, "sell", "100", "7.50", date(2024, 6, 3)),
]


def test_a_taxable_replacement_in_another_account_takes_the_loss() -> None:
    other = AccountFacts("C", "H")
    buy = fill(3, "buy", "100", "8", date(2024, 6, 20), account="C")
    replay = replay_household([A, other], [*PUB550, buy])
    [d] = replay.disposals_of("f2")
    assert (d.code, d.adjustment, d.permanent, d.gain_loss) == ("W", D("250.00"), D(0), D(0))
    [lot] = replay.ledger.lots("C")
    assert (lot.cost_basis, lot.holding_start, lot.wash_adjustment) == (
        D("1050.00"),
        date(2024, 1, 27),
        D("250.00"),
    )


def test_an_ira_replacement_disallows_the_loss_for_good() -> None:
    buy = fill(3, "buy", "100", "8", date(2024, 6, 20), account="B")
    replay = replay_household([A, IRA], [*PUB550, buy])
    [d] = replay.disposals_of("f2")
    assert (d.code, d.adjustment, d.permanent) == ("W", D("250.00"), D("250.00"))
    [lot] = replay.ledger.lots("B")
    assert (lot.cost_basis, lot.holding_start, lot.replacement) == (
        D("800.00"),
        date(2024, 6, 20),
        True,
    )


DAYS = [date(2024, 6, d) for d in (3, 5, 9, 12, 20)]


@settings(max_examples=40, deadline=None)
@given(st.permutations(range(5)))
def test_arrival_order_of_days_does_not_change_the_result(order: list[int]) -> None:
    """Trades of different days replay to the same lots and gains whatever their seq."""
    trades = [
        ("sell", "40", "7", "A"),
        ("buy", "10", "8", "B"),
        ("sell", "30", "6.5", "A"),
        ("buy", "25", "7.25", "C"),
        ("buy", "50", "7", "A"),
    ]
    accounts = [A, IRA, AccountFacts("C", "H")]

    def run(seqs: list[int]) -> tuple[object, object]:
        inputs = [PUB550[0]]
        for i, (side, qty, price, acct) in enumerate(trades):
            item = fill(seqs[i] + 10, side, qty, price, DAYS[i], account=acct)
            inputs.append(replace(item, ref=f"t{i}"))
        replay = replay_household(accounts, inputs)
        lots = [
            (x.account, x.lot_id, x.quantity, x.cost_basis, x.holding_start)
            for x in replay.ledger.lots()
        ]
        gains = sorted(
            (d.sale_id, d.lot_id, d.adjustment, d.permanent) for d in replay.ledger.disposals
        )
        return lots, gains

    assert run(list(order)) == run(list(range(5)))


def test_an_action_takes_effect_before_the_trades_of_its_day() -> None:
    split = ActionInput("s1", date(2024, 6, 3), Split("s1", "X", date(2024, 6, 3), 2, 1))
    sell = fill(2, "sell", "150", "5", date(2024, 6, 3))  # post-split shares
    replay = replay_household([A], [PUB550[0], sell], [split])
    assert replay.applied_actions == {"s1"}
    [lot] = replay.ledger.lots("A")
    assert (lot.quantity, lot.cost_basis) == (D(50), D("250.00"))
    # An action on a security the household does not hold is not its business.
    other = ActionInput("s2", date(2024, 6, 4), Split("s2", "Y", date(2024, 6, 4), 2, 1))
    assert replay_household([A], [PUB550[0]], [other]).applied_actions == set()


def test_every_action_kind_builds() -> None:
    base = {"action_id": "a", "symbol": "X", "on": "2024-06-03"}
    extra: dict[str, dict[str, Any]] = {
        "split": {"numerator": 3, "denominator": 2, "cash_price": "10"},
        "reverse-split": {"numerator": 1, "denominator": 10},
        "symbol-change": {"new_symbol": "Y"},
        "cash-merger": {"cash_per_share": "12.5"},
        "stock-merger": {"new_symbol": "Y", "ratio": "0.5"},
        "spin-off": {"new_symbol": "Y", "ratio": "0.2", "basis_percent": "15"},
        "cash-dividend": {"per_share": "0.25"},
    }
    names = {type(build_action({**base, "type": k, **extra[k]})).__name__ for k in ACTION_KINDS}
    assert names == {
        "Split",
        "SymbolChange",
        "CashMerger",
        "StockMerger",
        "SpinOff",
        "CashDividend",
    }
    with pytest.raises(ValueError, match="unknown"):
        build_action({**base, "type": "bankruptcy"})


class Row:
    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def test_rows_round_trip_to_the_cli_form8949() -> None:
    buy = fill(3, "buy", "100", "8", date(2024, 6, 20))
    replay = replay_household([A], [*PUB550, buy])
    rows = gain_rows(replay.ledger.disposals, {"f2": "f2", "f3": "f3"})
    assert rows[0]["cause"] == "fill" and rows[0]["adjustment"] == D("250.00")
    back = [disposal_of(Row(**r)) for r in rows]
    expected = to_csv(FORM8949_COLUMNS, form8949_rows(replay.ledger.disposals))
    assert to_csv(FORM8949_COLUMNS, form8949_rows(back)) == expected
    assert (
        expected.splitlines()[1]
        == "A,X,100,2024-01-10,2024-06-03,750.00,1000.00,W,250.00,0.00,short"
    )
    lots = lot_rows(replay.ledger.lots(), {"f3": ("fill", "f3")})
    assert [(r["lot_id"], r["cause"], r["fill_id"], r["cost_basis"]) for r in lots] == [
        ("fill-f3", "fill", "f3", D("1050.00"))
    ]


def test_a_symbol_family_replays_like_everything() -> None:
    """Replaying only the inputs and actions of one family of securities gives that
    family's lots and sales exactly as the full replay (sequence numbers aside)."""

    def item(seq: int, acct: str, sym: str, side: str, qty: str, price: str, day: int) -> Input:
        return Input(seq, acct, "fill", f"t{seq}", date(2024, 6, day), sym, side, D(qty), D(price))

    inputs = [
        opening(1, "a1", "100", "1000.00", date(2024, 1, 10)),
        Input(2, "A", "opening", "b1", date(2024, 1, 11), "Y", "buy", D(50), D(0), fees=D(900)),
        Input(3, "A", "opening", "z1", date(2024, 1, 12), "Z", "buy", D(10), D(0), fees=D(100)),
        item(4, "A", "X", "sell", "60", "7", 3),
        item(5, "B", "Y", "buy", "20", "15", 4),
        item(6, "A", "Y", "sell", "30", "16", 5),
        item(7, "B", "W", "buy", "30", "8", 6),  # W is X renamed on June 6
        item(8, "A", "Z", "sell", "5", "9", 7),
        item(9, "B", "Z", "buy", "5", "8", 8),
    ]
    rename = ActionInput("r", date(2024, 6, 6), SymbolChange("r", "X", date(2024, 6, 6), "W"))
    accounts = [A, IRA]
    full = replay_household(accounts, inputs, [rename])
    family = symbol_family({"W"}, [rename])
    assert family == {"W", "X"}
    part = replay_household(accounts, [i for i in inputs if i.symbol in family], [rename])

    def lots_of(replay: object, symbols: set[str]) -> list[tuple[object, ...]]:
        return [
            (
                x.account,
                x.lot_id,
                x.symbol,
                x.quantity,
                x.cost_basis,
                x.holding_start,
                x.replacement,
            )
            for x in replay.ledger.lots()  # type: ignore[attr-defined]
            if x.symbol in symbols
        ]

    def sales_of(replay: object, symbols: set[str]) -> list[tuple[object, ...]]:
        return sorted(
            (d.sale_id, d.lot_id, d.quantity, d.proceeds, d.cost_basis, d.adjustment, d.permanent)
            for d in replay.ledger.disposals  # type: ignore[attr-defined]
            if d.symbol in symbols
        )

    assert lots_of(part, family) == lots_of(full, family)
    assert sales_of(part, family) == sales_of(full, family)
    assert any(d.adjustment for d in part.ledger.disposals)  # the rename carried a wash sale
    assert symbol_family({"Z"}, [rename]) == {"Z"}


# --- the incremental path agrees with a replay --------------------------------------------------

STEP = st.tuples(
    st.integers(min_value=0, max_value=12),  # days after the previous trade
    st.sampled_from(["A", "B", "C"]),  # A, C taxable; B an IRA
    st.sampled_from(["buy", "sell", "sell"]),
    st.integers(min_value=1, max_value=60),
    st.sampled_from(["6.50", "7", "7.25", "8", "9.10", "10"]),
    st.sampled_from(["fifo", "lifo", "hifo", "mintax"]),
)


def _in_order_inputs(steps: list[tuple[int, str, str, int, str, str]]) -> list[Input]:
    """Fills in date order that never oversell (a sell takes at most what is held)."""
    held = {"A": D(100), "B": D(0), "C": D(0)}
    day = date(2024, 3, 1)
    out = [opening(1, "o1", "100", "1000.00", date(2023, 12, 1))]
    for n, (gap, account, side, qty, price, method) in enumerate(steps, start=2):
        day = date.fromordinal(day.toordinal() + gap)
        quantity = D(qty) if side == "buy" else min(D(qty), held[account])
        if quantity <= 0:
            continue
        held[account] += quantity if side == "buy" else -quantity
        out.append(
            fill(
                n,
                side,
                str(quantity),
                price,
                day,
                account,
                method=method if side == "sell" else None,
            )
        )
    return out


def _incremental(
    accounts: list[AccountFacts],
    inputs: list[Input],
    identity: Identity | None = None,
    batches: list[int] | None = None,
    shuffle: random.Random | None = None,
) -> tuple[Any, Any]:
    """Apply the inputs in consecutive batches (``batches``: their sizes; default one
    input each) to state rebuilt from what the service stores (lots, loss sales, names,
    last day, seq), with the service's own ``apply_in_date_order``, as the fills
    consumer does against the database. A batch's state holds the securities of its
    inputs and those ``identity`` makes identical to them; its inputs arrive in any order
    (``shuffle``) and are applied in date order."""
    lots: dict[tuple[str, str], Lot] = {}
    sales: list[Disposal] = []
    last: date | None = None
    seq = 0
    sizes = list(batches or [])
    start = 0
    while start < len(inputs):
        size = max(1, sizes.pop(0)) if sizes else 1
        batch = inputs[start : start + size]
        start += size
        family = {
            m
            for item in batch
            for m in (identity.members(item.symbol) if identity else (item.symbol,))
        }
        since = date.fromordinal(min(i.on for i in batch).toordinal() - 30)
        stored = [
            d
            for d in sales
            if d.symbol in family
            and d.cause.startswith("trade ")
            and d.account_type.value == "taxable"
            and d.proceeds < d.cost_basis
            and d.washed_quantity < d.quantity
            and d.sold >= since
        ]
        copies = [replace(d) for d in stored]
        names: dict[str, set[str]] = {a.account_id: set() for a in accounts}
        mine = [lot for lot in lots.values() if lot.symbol in family]
        for lot in mine:
            names[lot.account].add(lot.lot_id)
        for d in sales:
            if d.symbol in family:
                names[d.account].add(d.lot_id)
        state = SymbolState(
            "H", accounts, batch[0].symbol, mine, copies, names, last, seq, identity
        )
        arrived = list(batch)
        if shuffle is not None:
            shuffle.shuffle(arrived)
        applied = apply_in_date_order(state, arrived)
        for original, copy in zip(stored, copies, strict=True):
            original.adjustment = copy.adjustment
            original.washed_quantity = copy.washed_quantity
            original.permanent = copy.permanent
        for key in applied.gone:
            del lots[key]
        lots.update({(lot.account, lot.lot_id): lot for lot in applied.fresh})
        sales += applied.disposals
        assert applied.state is not None
        last, seq = applied.state
    return _outcome(list(lots.values()), sales)


def _outcome(lots: list[Lot], sales: list[Disposal]) -> tuple[Any, Any]:
    return (
        sorted(
            (
                x.account,
                x.lot_id,
                x.quantity,
                x.cost_basis,
                x.acquired,
                x.holding_start,
                x.replacement,
                x.wash_adjustment,
                x.purchase_id,
                x.seq,
            )
            for x in lots
        ),
        sorted(
            (
                d.sale_id,
                d.account,
                d.lot_id,
                d.quantity,
                d.proceeds,
                d.cost_basis,
                d.adjustment,
                d.washed_quantity,
                d.permanent,
                d.holding_start,
                d.seq,
            )
            for d in sales
        ),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=14))
def test_the_incremental_path_gives_what_a_replay_gives(steps: list[Any]) -> None:
    accounts = [A, IRA, AccountFacts("C", "H")]
    inputs = _in_order_inputs(steps)
    replay = replay_household(accounts, inputs)
    assert _incremental(accounts, inputs) == _outcome(replay.ledger.lots(), replay.ledger.disposals)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(STEP, min_size=1, max_size=14),
    st.lists(st.sampled_from(["X", "Y"]), min_size=14, max_size=14),
)
def test_the_incremental_path_with_identical_securities_gives_what_a_replay_gives(
    steps: list[Any], symbols: list[str]
) -> None:
    """X and Y are one identical equivalence set: a loss on either is washed by buying
    the other, in both paths alike."""
    accounts = [A, IRA, AccountFacts("C", "H")]
    held: dict[tuple[str, str], Decimal] = {("A", "X"): D(100)}
    inputs = [opening(1, "o1", "100", "1000.00", date(2023, 12, 1))]
    day = date(2024, 3, 1)
    for n, ((gap, account, side, qty, price, method), sym) in enumerate(
        zip(steps, symbols, strict=False), start=2
    ):
        day = date.fromordinal(day.toordinal() + gap)
        have = held.get((account, sym), D(0))
        quantity = D(qty) if side == "buy" else min(D(qty), have)
        if quantity <= 0:
            continue
        held[(account, sym)] = have + (quantity if side == "buy" else -quantity)
        item = fill(n, side, str(quantity), price, day, account, method=method)
        inputs.append(replace(item, symbol=sym, method=method if side == "sell" else None))
    identity = identity_of([["X", "Y"]])
    replay = replay_household(accounts, inputs, identity=identity)
    expected = _outcome(replay.ledger.lots(), replay.ledger.disposals)
    assert _incremental(accounts, inputs, identity) == expected


BATCHES = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=14), BATCHES, st.randoms(use_true_random=False))
def test_batches_of_fills_give_what_a_replay_gives(
    steps: list[Any], batches: list[int], arrival: random.Random
) -> None:
    """The consumer applies a batch of fills at once (in any arrival order within it):
    the same lots and gains as a replay of every input in date order."""
    accounts = [A, IRA, AccountFacts("C", "H")]
    inputs = _in_order_inputs(steps)
    replay = replay_household(accounts, inputs)
    expected = _outcome(replay.ledger.lots(), replay.ledger.disposals)
    assert _incremental(accounts, inputs, None, batches, arrival) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(STEP, min_size=1, max_size=16),
    st.lists(st.sampled_from(["X", "Y", "Z"]), min_size=16, max_size=16),
    BATCHES,
    st.randoms(use_true_random=False),
)
def test_batches_over_several_securities_give_what_a_replay_gives(
    steps: list[Any], symbols: list[str], batches: list[int], arrival: random.Random
) -> None:
    """X and Y are one identical set, Z is not: a batch restores the state of all of its
    securities in one ledger, and that changes nothing against a replay."""
    accounts = [A, IRA, AccountFacts("C", "H")]
    held: dict[tuple[str, str], Decimal] = {("A", "X"): D(100), ("A", "Z"): D(50)}
    inputs = [
        opening(1, "o1", "100", "1000.00", date(2023, 12, 1)),
        replace(opening(2, "o2", "50", "400.00", date(2023, 12, 2)), symbol="Z"),
    ]
    day = date(2024, 3, 1)
    for n, ((gap, account, side, qty, price, method), sym) in enumerate(
        zip(steps, symbols, strict=False), start=3
    ):
        day = date.fromordinal(day.toordinal() + gap)
        have = held.get((account, sym), D(0))
        quantity = D(qty) if side == "buy" else min(D(qty), have)
        if quantity <= 0:
            continue
        held[(account, sym)] = have + (quantity if side == "buy" else -quantity)
        item = fill(n, side, str(quantity), price, day, account, method=method)
        inputs.append(replace(item, symbol=sym, method=method if side == "sell" else None))
    identity = identity_of([["X", "Y"]])
    replay = replay_household(accounts, inputs, identity=identity)
    expected = _outcome(replay.ledger.lots(), replay.ledger.disposals)
    assert _incremental(accounts, inputs, identity, batches, arrival) == expected


def test_a_loss_on_x_is_washed_by_y_only_when_they_are_identical() -> None:
    accounts = [A, AccountFacts("C", "H")]
    inputs = [
        opening(1, "o1", "100", "1000.00", date(2024, 1, 10)),
        fill(2, "sell", "100", "7.50", date(2024, 6, 3)),
        replace(fill(3, "buy", "100", "8", date(2024, 6, 20), "C"), symbol="Y"),
    ]
    for identity, adjustment in (
        (None, D(0)),
        (identity_of([]), D(0)),
        (identity_of([["Y", "X"]]), D("250.00")),
    ):
        [sale] = replay_household(accounts, inputs, identity=identity).ledger.disposals
        assert sale.adjustment == adjustment
        _lots, [sale_row] = _incremental(accounts, inputs, identity)
        assert sale_row[6] == adjustment


def test_identical_sets_sharing_a_member_are_one_group() -> None:
    identity = identity_of([["A", "B"], ["C", "D"], ["B", "C"], ["E"]])
    assert identity.members("D") == ("A", "B", "C", "D")
    assert identity.identical("A", "D") and not identity.identical("A", "E")
    assert identity.members("Z") == ("Z",)
    rename = ActionInput("r", date(2024, 6, 6), SymbolChange("r", "W", date(2024, 6, 6), "E"))
    assert symbol_family({"D"}, [], identity) == {"A", "B", "C", "D"}
    assert symbol_family({"W"}, [rename], identity) == {"W", "E"}
    link = ActionInput("s", date(2024, 6, 6), SymbolChange("s", "A", date(2024, 6, 6), "V"))
    assert symbol_family({"V"}, [link], identity) == {"A", "B", "C", "D", "V"}


def test_the_incremental_path_washes_a_loss_across_accounts() -> None:
    """Publication 550 example 1 across accounts A and C, one input at a time."""
    accounts = [A, AccountFacts("C", "H")]
    inputs = [
        opening(1, "o1", "100", "1000.00", date(2024, 1, 10)),
        fill(2, "sell", "100", "7.50", date(2024, 6, 3)),
        fill(3, "buy", "100", "8", date(2024, 6, 20), "C"),
    ]
    lots, sales = _incremental(accounts, inputs)
    [lot] = lots
    assert (lot[0], lot[3], lot[5], lot[7]) == ("C", D("1050.00"), date(2024, 1, 27), D("250.00"))
    [sale] = sales
    assert (sale[6], sale[7]) == (D("250.00"), D("100"))


def test_a_sell_in_a_sleeve_adopts_lots_stated_without_one() -> None:
    """Opening lots without a sleeve join the sleeve of the first sell that needs them (no
    taxable event); lots already in another sleeve stay there."""
    inputs = [
        opening(1, "o1", "10", "100.00", date(2024, 1, 10)),
        opening(2, "o2", "5", "80.00", date(2024, 2, 10)),
        replace(fill(3, "buy", "4", "12", date(2024, 3, 1)), sleeve="income"),
        replace(fill(4, "sell", "12", "15", date(2024, 4, 1), method="hifo"), sleeve="core"),
    ]
    replay = replay_household([A], inputs)
    lots = {(x.lot_id, x.sleeve, x.quantity) for x in replay.ledger.lots()}
    # HIFO inside "core": o2 (16/share) first, then 7 of o1 (10/share).
    assert lots == {("o1", "core", D("3")), ("fill-f3", "income", D("4"))}
    relieved = sorted((d.lot_id, d.quantity, d.cost_basis) for d in replay.ledger.disposals)
    assert relieved == [("o1", D("7"), D("70.00")), ("o2", D("5"), D("80.00"))]
    moves = [c for c in replay.ledger.journal if c.kind == "move"]
    assert {c.lot_id for c in moves} == {"o1", "o2"} and all(c.cause == "trade f4" for c in moves)


def test_a_sell_in_a_sleeve_without_lots_names_the_sleeve() -> None:
    inputs = [
        replace(fill(1, "buy", "4", "12", date(2024, 3, 1)), sleeve="income"),
        replace(fill(2, "sell", "1", "15", date(2024, 4, 1)), sleeve="core"),
    ]
    with pytest.raises(InsufficientQuantityError, match="sleeve core"):
        replay_household([A], inputs)


def test_partial_fills_of_an_order_naming_lots_skip_the_lots_already_closed() -> None:
    """An order naming lots o2, o1 is filled in three parts, each naming both lots."""
    inputs = [
        opening(1, "o1", "10", "100.00", date(2024, 1, 10)),
        opening(2, "o2", "5", "80.00", date(2024, 2, 10)),
        fill(3, "sell", "4", "15", date(2024, 4, 1), lot_ids=("o2", "o1")),
        fill(4, "sell", "3", "15", date(2024, 4, 1), lot_ids=("o2", "o1")),  # closes o2
        fill(5, "sell", "6", "15", date(2024, 4, 1), lot_ids=("o2", "o1")),  # o1 only now
    ]
    replay = replay_household([A], inputs)
    relieved = [(d.sale_id, d.lot_id, d.quantity) for d in replay.ledger.disposals]
    assert relieved == [
        ("f3", "o2", D("4")),
        ("f4", "o2", D("1")),
        ("f4", "o1", D("2")),
        ("f5", "o1", D("6")),
    ]
    # More than the named lots still hold is refused, naming what they hold.
    with pytest.raises(InsufficientQuantityError, match="the named lots hold 2"):
        replay_household(
            [A], [*inputs, fill(6, "sell", "3", "15", date(2024, 4, 2), lot_ids=("o1",))]
        )
    # A lot that is not open at all is still an error naming it.
    with pytest.raises(UnknownLotError, match="o9"):
        replay_household(
            [A], [*inputs, fill(6, "sell", "1", "15", date(2024, 4, 2), lot_ids=("o9",))]
        )
