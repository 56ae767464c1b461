"""Property tests: quantity and basis are conserved, day order does not matter, an IRA
replacement never increases basis, each replacement share absorbs one loss."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal as D

from ballast_engine.tax import (
    AccountType,
    EquivalenceSet,
    Fill,
    Identity,
    LedgerAccount,
    ReliefMethod,
    Side,
    TaxLedger,
    replay,
)
from ballast_engine.tax.model import money
from ballast_engine.tax.tradefile import form8949_csv, lots_csv
from hypothesis import given, settings
from hypothesis import strategies as st

ACCOUNTS = [
    LedgerAccount("A", "H"),
    LedgerAccount("B", "H"),
    LedgerAccount("I", "H", AccountType.IRA),
    LedgerAccount("Z", "OTHER"),
]
SYMBOLS = ("X", "Y")
START = date(2024, 1, 1)

quantities = st.one_of(
    st.integers(1, 60).map(D),
    st.decimals(min_value=D("0.001"), max_value=D(40), places=3),
)
prices = st.decimals(min_value=D("0.50"), max_value=D(120), places=2)
fees = st.sampled_from([D(0), D(0), D("1.00"), D("4.95")])
op = st.tuples(
    st.sampled_from([a.account_id for a in ACCOUNTS]),
    st.sampled_from(SYMBOLS),
    st.sampled_from(["buy", "buy", "sell"]),
    quantities,
    st.floats(0.05, 1.0),  # share of the position a sell takes
    prices,
    fees,
)
day_ops = st.lists(op, min_size=1, max_size=4)
scenario = st.lists(
    st.tuples(st.integers(0, 150), day_ops), min_size=1, max_size=14, unique_by=lambda d: d[0]
)


def build(days: list[tuple[int, list[tuple[str, str, str, D, float, D, D]]]]) -> list[list[Fill]]:
    """Trades grouped by day, sells sized to the position held at that point."""
    held: dict[tuple[str, str], D] = defaultdict(D)
    groups: list[list[Fill]] = []
    n = 0
    for offset, ops in sorted(days):
        group = []
        for account, symbol, side, qty, share, price, fee in ops:
            n += 1
            key = (account, symbol)
            if side == "sell":
                if held[key] <= 0:
                    continue
                qty = max(D("0.001"), (held[key] * D(str(round(share, 3)))).quantize(D("0.001")))
                qty = min(qty, held[key])
                held[key] -= qty
            else:
                held[key] += qty
            group.append(
                Fill(
                    f"t{n}",
                    account,
                    START + timedelta(days=offset),
                    symbol,
                    Side(side),
                    qty,
                    price,
                    fee,
                )
            )
        if group:
            groups.append(group)
    return groups


def flat(groups: list[list[Fill]]) -> list[Fill]:
    return [t for g in groups for t in g]


IDENTICAL = Identity.from_sets([EquivalenceSet("xy", SYMBOLS, identical=True)])
# 120 examples; ten times more with HYPOTHESIS_PROFILE=deep (conftest.py)
settings.register_profile(
    "tax", max_examples=120 * settings.default.max_examples // 100, deadline=None
)


def check_conservation(trades: list[Fill], led: TaxLedger) -> None:
    # quantity: what was bought and not sold is open, per account and security
    net: dict[tuple[str, str], D] = defaultdict(D)
    for t in trades:
        net[(t.account, t.symbol)] += t.quantity if t.side is Side.BUY else -t.quantity
    open_qty: dict[tuple[str, str], D] = defaultdict(D)
    for lot in led.lots():
        open_qty[(lot.account, lot.symbol)] += lot.quantity
    assert {k: v for k, v in net.items() if v} == dict(open_qty)

    # basis: bought basis + disallowed losses moved into replacements
    #        == open basis + basis relieved by sales; nothing vanishes or doubles
    bought = sum(money(t.quantity * t.price + t.fees) for t in trades if t.side is Side.BUY)
    moved_in = sum(c.basis for c in led.journal if c.kind == "wash-adjust")
    open_basis = sum(lot.cost_basis for lot in led.lots())
    relieved = sum(d.cost_basis for d in led.disposals)
    assert bought + moved_in == open_basis + relieved
    # every disallowed dollar is either in a replacement's basis or permanently lost
    disallowed = sum(d.adjustment for d in led.disposals)
    permanent = sum(d.permanent for d in led.disposals)
    assert disallowed == moved_in + permanent
    assert sum(lot.wash_adjustment for lot in led.lots()) <= moved_in
    for d in led.disposals:
        loss = max(d.cost_basis - d.proceeds, D(0))
        assert D(0) <= d.adjustment <= loss
        assert D(0) <= d.washed_quantity <= d.quantity
        if d.account_type is AccountType.IRA:
            assert d.adjustment == 0
    # each replacement share absorbs one loss: one wash entry per lot, shares add up
    washes = [c for c in led.journal if c.kind in ("wash-adjust", "wash-permanent")]
    assert max(Counter((c.account, c.lot_id) for c in washes).values(), default=0) <= 1
    assert sum(c.quantity for c in washes) == sum(d.washed_quantity for d in led.disposals)
    # washes stay inside the household of the loss
    household = {a.account_id: a.household for a in ACCOUNTS}
    for c in washes:
        loss_account = c.detail.removeprefix("loss of ").split("/")[0]
        assert household[c.account] == household[loss_account]


@settings(settings.get_profile("tax"))
@given(scenario, st.sampled_from(list(ReliefMethod)[:4]), st.booleans())
def test_quantity_and_basis_are_conserved(days, method: ReliefMethod, identical: bool) -> None:
    trades = flat(build(days))
    led = replay(trades, ACCOUNTS, method=method, identity=IDENTICAL if identical else None)
    check_conservation(trades, led)


@settings(settings.get_profile("tax"))
@given(scenario, st.randoms(use_true_random=False), st.sampled_from(list(ReliefMethod)[:4]))
def test_order_of_days_does_not_change_the_result(days, rnd, method: ReliefMethod) -> None:
    groups = build(days)
    shuffled = list(groups)
    rnd.shuffle(shuffled)
    a = replay(flat(groups), ACCOUNTS, method=method, identity=IDENTICAL)
    b = replay(flat(shuffled), ACCOUNTS, method=method, identity=IDENTICAL)
    assert form8949_csv(a) == form8949_csv(b)
    assert lots_csv(a) == lots_csv(b)
    # applying fills one by one in date order gives the same book as a replay
    c = TaxLedger([replace_method(x, method) for x in ACCOUNTS], identity=IDENTICAL)
    for t in flat(groups):
        c.apply(t)
    assert form8949_csv(c) == form8949_csv(a) and lots_csv(c) == lots_csv(a)


def replace_method(account: LedgerAccount, method: ReliefMethod) -> LedgerAccount:
    return LedgerAccount(account.account_id, account.household, account.account_type, method)


@settings(settings.get_profile("tax"))
@given(scenario)
def test_ira_replacement_never_increases_basis(days) -> None:
    trades = flat(build(days))
    led = replay(trades, ACCOUNTS, identity=IDENTICAL)
    ira_bought = sum(
        money(t.quantity * t.price + t.fees)
        for t in trades
        if t.account == "I" and t.side is Side.BUY
    )
    ira_open = sum(lot.cost_basis for lot in led.lots("I"))
    ira_relieved = sum(d.cost_basis for d in led.disposals if d.account == "I")
    assert ira_open + ira_relieved == ira_bought
    for lot in led.lots("I"):
        assert lot.wash_adjustment == 0 and lot.holding_start == lot.acquired
