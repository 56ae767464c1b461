"""The engine's shortcuts on the rebalance path give what the plain computation gives (pure,
hypothesis): a position's tax lots made when first read (checked when the position is made,
a bad lot refused with its first problem), sell blocks looked for only where a security was
bought in the wash-sale window, restrictions matched through an index, and only do-not-sell
restrictions asked whether a holding may be sold."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal

import pytest
from ballast_engine.amounts import decimal_of
from ballast_engine.errors import SettingError
from ballast_engine.model import (
    Account,
    EquivalenceSet,
    Holding,
    RecentPurchase,
    Reference,
    Restriction,
    RestrictionKind,
    RestrictionScope,
    Security,
    Sleeve,
    TaxLot,
    TaxSettings,
)
from ballast_engine.restrictions import binding
from ballast_engine.tactical import (
    Member,
    _apply_indexed_restrictions,
    _apply_restrictions,
    _restriction_index,
)
from ballast_engine.tax.choice import TaxRates, rank_lots
from ballast_engine.tax.lots import order_lots
from ballast_engine.tax.model import ZERO, Identity, Lot, ReliefMethod, money
from ballast_engine.tax.model import EquivalenceSet as TaxSet
from ballast_engine.tax.wash import sell_blocks
from ballast_engine.taxaware import tax_context
from hypothesis import given
from hypothesis import strategies as st

ON = date(2026, 12, 6)
SYMBOLS = ("A", "B", "C", "D", "E")
PRICES = {"A": 10.0, "B": 25.5, "C": 99.99, "D": 3.0, "E": 180.0}
SECTORS = {"A": "Tech", "B": "Tech", "C": "Energy", "D": "Health", "E": "Energy"}


@st.composite
def lots(draw: st.DrawFn, symbol: str, first: int) -> tuple[TaxLot, ...]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        quantity = draw(st.sampled_from([0.0, 1.0, 7, 12.5, 40.0, 1e-06]))  # an int too
        factor = draw(st.sampled_from([0.5, 0.98, 1.0, 1.02, 2.0]))
        days = draw(st.sampled_from([0, 3, 29, 30, 31, 45, 400, 800]))
        acquired = (ON - timedelta(days=days)).isoformat()
        cost = round(quantity * PRICES[symbol] * factor, 2)
        out.append(TaxLot(f"L{first + i}", quantity, cost, acquired, draw(st.booleans())))
    return tuple(out)


@st.composite
def accounts(draw: st.DrawFn) -> tuple[Account, Reference]:
    sleeves = []
    n = 0
    for sleeve_id in ("s1", "s2")[: draw(st.integers(1, 2))]:
        holdings = []
        for symbol in draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True)):
            held = draw(lots(symbol, n)) if draw(st.integers(0, 4)) else ()
            n += len(held)
            quantity = sum(lot.quantity for lot in held) if held else 5.0
            holdings.append(Holding(symbol, quantity, held))
        sleeves.append(Sleeve(sleeve_id, "M", 0.0, tuple(holdings)))
    purchases = tuple(
        RecentPurchase(s, (ON - timedelta(days=d)).isoformat(), q, pid)
        for s, d, q, pid in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(SYMBOLS),
                    st.sampled_from([0, 10, 30, 31]),
                    st.sampled_from([1.0, 3.0]),
                    st.sampled_from(["", "p1", "L0"]),
                ),
                max_size=3,
            )
        )
    )
    tax = TaxSettings(
        ON.isoformat(),
        account_type=draw(st.sampled_from(["taxable", "taxable", "ira"])),
        method=draw(st.sampled_from(list(ReliefMethod))),
        recent_purchases=purchases,
    )
    sets = (EquivalenceSet("AB", ("A", "B"), identical=draw(st.booleans())),)
    ref = Reference(
        {s: Security(s, p, "eq", SECTORS[s]) for s, p in PRICES.items()}, {}, {}, {}, sets
    )
    return Account("acct", tuple(sleeves), tax=tax), ref


def eager_lots(account: Account) -> dict[tuple[str, str], list[Lot]]:
    """Every holding's lots as the tax engine's, numbered across the account (the plain way)."""
    out: dict[tuple[str, str], list[Lot]] = {}
    seq = 0
    for sleeve in account.sleeves:
        for h in sleeve.holdings:
            if h.quantity <= 0 or not h.lots:
                continue
            made = []
            for lot in h.lots:
                if lot.quantity <= 0:
                    continue
                seq += 1
                day = date.fromisoformat(lot.acquired)
                made.append(
                    Lot(
                        lot_id=lot.lot_id,
                        account=account.account_id,
                        symbol=h.symbol,
                        quantity=decimal_of(lot.quantity),
                        cost_basis=money(decimal_of(lot.cost)),
                        acquired=day,
                        holding_start=day,
                        purchase_id=lot.lot_id,
                        sleeve=sleeve.sleeve_id,
                        seq=seq,
                        replacement=lot.replacement,
                    )
                )
            out[(sleeve.sleeve_id, h.symbol)] = made
    return out


@given(accounts())
def test_lots_made_when_read_and_sell_blocks_are_those_of_every_lot(case) -> None:
    account, ref = case
    assert account.tax is not None
    ctx = tax_context(account, ref)
    expected = eager_lots(account)
    identity = Identity.from_sets(
        [TaxSet("AB", ("A", "B"), True)] if ref.equivalence_sets[0].identical else []
    )
    prices = {s: decimal_of(p) for s, p in PRICES.items()}
    purchases = [
        Lot(
            lot_id=f"household-purchase-{i}",
            account="",
            symbol=p.symbol,
            quantity=decimal_of(p.quantity),
            cost_basis=ZERO,
            acquired=date.fromisoformat(p.acquired),
            holding_start=date.fromisoformat(p.acquired),
            purchase_id=p.purchase_id or f"household-purchase-{i}",
        )
        for i, p in enumerate(account.tax.recent_purchases)
    ]
    every = [lot for made in expected.values() for lot in made]
    blocks = (
        sell_blocks(every, every + purchases, ON, identity=identity, prices=prices)
        if account.tax.account_type == "taxable"
        else []
    )
    assert ctx.sell_blocks == blocks
    assert ctx.washable == frozenset(b.lot_id for b in blocks)
    assert set(ctx.positions) == set(expected)
    rates = TaxRates(Decimal("0.37"), Decimal("0.2"))
    method = account.tax.method
    for key, position in ctx.positions.items():
        assert position.lots == expected[key]
        ranked = (
            rank_lots(expected[key], position.price, ON, rates, washable=ctx.washable)
            if method is ReliefMethod.MINTAX
            else order_lots(expected[key], method)
        )
        assert position.ranked == ranked


RESTRICTIONS = st.builds(
    Restriction,
    st.sampled_from(RestrictionKind),
    st.sampled_from(RestrictionScope),
    st.sampled_from([*SYMBOLS, "Tech", "Energy", "eq", "screen", "nope"]),
    st.sampled_from(["client", "wash-sale rule"]),
)
LISTS = {"screen": frozenset({"A", "C"})}


@given(st.lists(RESTRICTIONS, max_size=12), st.sampled_from(SYMBOLS))
def test_restrictions_matched_through_the_index_bind_as_matched_one_by_one(
    restrictions, symbol
) -> None:
    ref = Reference({s: Security(s, p, "eq", SECTORS[s]) for s, p in PRICES.items()}, lists=LISTS)
    plain, indexed = (Member(symbol, 1.0, 0.0, 1.0, True) for _ in range(2))
    _apply_restrictions(plain, tuple(restrictions), ref)
    _apply_indexed_restrictions(indexed, _restriction_index(tuple(restrictions)), ref)
    assert (indexed.dnb, indexed.dns, indexed.dnh) == (plain.dnb, plain.dns, plain.dnh)
    do_not_sell = tuple(r for r in restrictions if r.kind is RestrictionKind.DO_NOT_SELL)
    assert (
        binding(symbol, do_not_sell, ref).blocks_selling
        == binding(symbol, tuple(restrictions), ref).blocks_selling
    )


GOOD = ("L1", 1.0, 10.0, "2026-01-01")
BAD_LOTS = [  # the lots of a holding, and the first problem named
    ([GOOD, ("L1", 1.0, 10.0, "bad")], "lots.lot_id: tax lot 'L1' appears twice"),
    ([("L1", 1.0, -1.0, "2026-13-01")], "lots.acquired: must be an ISO date (YYYY-MM-DD)"),
    ([("L1", 1.0, -1.0, "2027-01-01")], "lots.acquired: tax lot 'L1' was acquired 2027-01-01"),
    ([("L1", 1.0, math.nan, "2026-01-01")], "lots.cost: tax lot 'L1' cost must be an amount"),
    ([("L1", 1.0, math.inf, "2026-01-01")], "lots.cost: tax lot 'L1' cost must be an amount"),
    ([("L1", 0.0, -1.0, "2026-01-01"), ("L2", 1.0, 5.0, "2026-01-01")], "lots.cost: tax lot 'L1'"),
]


@pytest.mark.parametrize(("lots", "problem"), BAD_LOTS)
def test_a_bad_lot_is_refused_with_its_first_problem(lots, problem) -> None:
    made = tuple(TaxLot(*lot) for lot in lots)
    holding = Holding("A", sum(lot.quantity for lot in made), made)
    account = Account("x", (Sleeve("s", "M", 0.0, (holding,)),), tax=TaxSettings(ON.isoformat()))
    with pytest.raises(SettingError) as refused:
        tax_context(account, Reference({"A": Security("A", 10.0)}))
    assert problem in refused.value.one_line()
