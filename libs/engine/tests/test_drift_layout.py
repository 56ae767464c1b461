"""The whole-book layout of plain SMAs with numpy (``ballast_engine.drift``) gives the same
arrays, to the last bit, and so the same scan as laying every account out through
``plan_sleeve``; accounts it cannot take (restrictions, "hold" entries, bad data, UMAs) still
go through ``plan_sleeve`` and fail the same way, in the book's order."""

from __future__ import annotations

import os
from dataclasses import fields, replace

import numpy as np
import pytest
from ballast_engine import drift
from ballast_engine.builders import reference, restriction, sleeve, synthetic_uma_book
from ballast_engine.drift import (
    BookArrays,
    SmaArrays,
    book_arrays,
    plain_sma,
    scan_drift,
    sma_book_arrays,
)
from ballast_engine.model import (
    Account,
    Band,
    BandKind,
    Book,
    Model,
    ModelEntry,
    Security,
    Settings,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROPS = settings(
    max_examples=int(
        os.environ.get("ENGINE_HYPOTHESIS_EXAMPLES") or 150 * settings.default.max_examples // 100
    ),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SYMS = [f"S{i}" for i in range(10)]
CLASSES = ["us_equity", "bonds", "intl"]
BANDS = [
    Band(),
    Band(BandKind.ABSOLUTE, 0.01),
    Band(BandKind.ABSOLUTE, 0.05),
    Band(BandKind.RELATIVE, 0.2),
    Band(BandKind.RELATIVE, 0.0),
]


def assert_same_arrays(got: BookArrays, want: BookArrays) -> None:
    """Every field equal: arrays of the same shape, bit for bit (NaN where NaN)."""
    for f in fields(BookArrays):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, np.ndarray):
            assert a.shape == b.shape and a.dtype == b.dtype, f.name
            assert np.array_equal(a, b, equal_nan=b.dtype.kind == "f"), f.name
        else:
            assert a == b, f.name


def assert_same_scan(got: BookArrays, want: BookArrays) -> None:
    x, y = scan_drift(got), scan_drift(want)
    assert x.account_ids == y.account_ids
    for name in ("flags", "max_abs_drift", "max_breach", "worst_slot"):
        assert np.array_equal(getattr(x, name), getattr(y, name)), name


@st.composite
def universe(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(3, len(SYMS)))
    secs = {}
    for s in SYMS[:n]:
        price = draw(st.sampled_from([None, 0.1, 0.2, 0.3, 7.25, 29.0, 101.37, 480.0]))
        if price is None and draw(st.integers(0, 5)):
            price = 55.5  # unpriced now and then: such a holding is a failure
        secs[s] = Security(s, price, draw(st.sampled_from(CLASSES)), "Tech", draw(st.booleans()))
    return secs


@st.composite
def model_of(draw, model_id, syms, hold_ok):  # type: ignore[no-untyped-def]
    chosen = draw(st.lists(st.sampled_from(syms), min_size=1, max_size=len(syms), unique=True))
    raw = [draw(st.sampled_from([0.0, 0.05, 0.3, 1.0, 2.5])) for _ in chosen]
    if not sum(raw):
        raw[0] = 1.0
    cash_w = draw(st.sampled_from([0.0, 0.0, 0.02, 0.1]))
    weights = [r / sum(raw) * (1 - cash_w) for r in raw]
    entries = []
    for s, w in zip(chosen, weights, strict=True):
        band = draw(st.sampled_from([None, None, Band(BandKind.ABSOLUTE, 0.0), BANDS[3]]))
        if band is not None and band.kind is BandKind.ABSOLUTE and band.width > w:
            band = None
        hold = hold_ok and draw(st.integers(0, 9)) == 0
        entries.append(ModelEntry(s, w, hold=hold, band=band))
    if draw(st.integers(0, 5)) == 0:  # a share-based model now and then
        shares = tuple(ModelEntry(e.symbol, shares=float(i + 1)) for i, e in enumerate(entries))
        return Model(model_id, shares, "shares", cash=draw(st.sampled_from([0.0, 500.0])))
    return Model(model_id, tuple(entries), "weights", cash_w)


@st.composite
def sleeve_settings(draw):  # type: ignore[no-untyped-def]
    return Settings(
        cash_target=draw(st.sampled_from([0.0, 0.0, 0.01, 0.05])),
        cash_reserve=draw(st.sampled_from([0.0, 0.0, 100.0, 1500, 50_000.0])),
        cash_band=draw(st.sampled_from(BANDS)),
        security_band=draw(st.sampled_from(BANDS)),
    )


@st.composite
def account_of(draw, i, secs, models, shared):  # type: ignore[no-untyped-def]
    syms = list(secs)
    held = draw(st.lists(st.sampled_from([*syms, *syms, "NOPE"]), max_size=8, unique=True))
    if "NOPE" in held and draw(st.integers(0, 3)):
        held.remove("NOPE")  # unknown to the security master: a failure, now and then
    shares = st.sampled_from([0.0, 1.0, 3.0, 17.5, 240.0, 9_000.0, 0.7, -2.0])
    holdings = {s: draw(shares) for s in held}
    if any(q < 0 for q in holdings.values()) and draw(st.integers(0, 3)):
        holdings = {s: abs(q) for s, q in holdings.items()}
    model_id = draw(st.sampled_from(sorted(models)))
    restricted = draw(st.integers(0, 7)) == 0
    sl = sleeve(
        "main",
        model_id,
        holdings,
        draw(st.sampled_from([0.0, -250.0, 12.5, 3_000.0, 250_000.0])),
        shared if draw(st.booleans()) else draw(sleeve_settings()),
        [restriction("do_not_buy", syms[0])] if restricted else [],
    )
    return Account(
        f"A{i}",
        (sl,),
        cash=draw(st.sampled_from([0.0, 0.0, 0.0, 400.0, -30.0])),
        asset_class_band=draw(st.sampled_from([Band(BandKind.ABSOLUTE, 0.05), BANDS[3]])),
    )


@st.composite
def sma_books(draw):  # type: ignore[no-untyped-def]
    """Books of SMAs on a few models (weights or shares, with and without equivalence sets
    among and beside the model's securities), mostly plain, some restricted or with a
    "hold" entry in their model, some invalid."""
    secs = draw(universe())
    syms = list(secs)
    models = {
        f"M{k}": draw(model_of(f"M{k}", syms, hold_ok=k == 0))
        for k in range(draw(st.integers(1, 3)))
    }
    sets = []
    free = list(syms)
    for _ in range(draw(st.integers(0, 2))):
        if len(free) < 2:
            break
        members = draw(st.lists(st.sampled_from(free), min_size=2, max_size=4, unique=True))
        free = [s for s in free if s not in members]
        sets.append(members)
    ref = reference(secs, list(models.values()), equivalence=sets)
    shared = draw(sleeve_settings())
    n = draw(st.integers(1, 7))
    return Book(ref, tuple(draw(account_of(i, secs, models, shared)) for i in range(n)))


@PROPS
@given(sma_books())
def test_the_numpy_layout_equals_plan_sleeves(book: Book) -> None:
    got, got_failures = book_arrays(book)
    want, want_failures = book_arrays(book, vectorized=False)
    assert got_failures == want_failures
    assert_same_arrays(got, want)
    assert_same_scan(got, want)


@PROPS
@given(sma_books())
def test_arrays_of_smas_equal_the_book_of_their_accounts(book: Book) -> None:
    """``sma_book_arrays`` (the service's way in: no Account per plain SMA) lays out the
    plain SMAs in their order, then the others, as the book in that order."""
    plain = [a for a in book.accounts if plain_sma(a)]
    others = [a for a in book.accounts if not plain_sma(a)]
    got, got_failures = sma_book_arrays(book.reference, SmaArrays.from_accounts(plain), others)
    want, want_failures = book_arrays(Book(book.reference, (*plain, *others)), vectorized=False)
    assert got_failures == want_failures
    assert_same_arrays(got, want)


def _counting_plan_sleeve(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    planned: list[str] = []
    original = drift.plan_sleeve

    def counting(account, sleeve, ref, **kw):  # type: ignore[no-untyped-def]
        planned.append(account.account_id)
        return original(account, sleeve, ref, **kw)

    monkeypatch.setattr(drift, "plan_sleeve", counting)
    return planned


def test_only_the_accounts_numpy_cannot_take_are_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    secs = {
        "VTI": Security("VTI", 250.0, "us_equity"),
        "ITOT": Security("ITOT", 120.0, "us_equity"),
        "BND": Security("BND", 72.5, "bonds"),
        "XOM": Security("XOM", 110.0, "us_equity", "Energy"),
    }
    plain_model = Model("M", (ModelEntry("VTI", 0.6), ModelEntry("BND", 0.4)))
    hold_model = Model("H", (ModelEntry("VTI", 0.6), ModelEntry("BND", 0.4, hold=True)))
    ref = reference(secs, [plain_model, hold_model], equivalence=[["VTI", "ITOT"]])
    holdings = {"ITOT": 30.0, "BND": 50.0, "XOM": 4.0}
    plain = Account("P", (sleeve("main", "M", holdings, 900.0),))
    restricted = Account(
        "R", (sleeve("main", "M", holdings, 900.0, None, [restriction("do_not_buy", "BND")]),)
    )
    held = Account("H", (sleeve("main", "H", holdings, 900.0),))
    bad = Account("B", (sleeve("main", "M", {"NOPE": 1.0}),))
    uma = synthetic_uma_book(1, 2, 3, seed=2)
    ref = replace(
        ref,
        securities={**ref.securities, **uma.reference.securities},
        models={**ref.models, **uma.reference.models},
        strategies=uma.reference.strategies,
    )
    book = Book(ref, (plain, restricted, held, bad, *uma.accounts))
    planned = _counting_plan_sleeve(monkeypatch)
    got, failures = book_arrays(book)
    assert planned == ["R", "H", "U000000", "U000000"]
    assert [f.account_id for f in failures] == ["B"] and "NOPE" in failures[0].error
    assert got.account_ids == ["P", "R", "H", "U000000"]
    # ITOT counts toward VTI's group (an equivalent); XOM is a group of its own
    assert got.slot_keys is not None and got.slot_keys[0][:3] == ["VTI", "BND", "XOM"]
    assert got.value[0, 0] == 30 * 120.0 and got.slot_target[0, 2] == 0.0
    planned.clear()
    want, _ = book_arrays(book, vectorized=False)
    assert planned == ["P", "R", "H", "U000000", "U000000"]
    assert_same_arrays(got, want)


def test_a_row_of_sma_arrays_is_the_account_it_came_from() -> None:
    accounts = [
        Account("X", (sleeve("main", "M", {"A": 3.0, "B": 0.5}, 12.0, Settings(cash_target=0.1)),)),
        Account("Y", (sleeve("s", "M", {}, -4.0),), cash=7.0, asset_class_band=BANDS[3]),
    ]
    smas = SmaArrays.from_accounts(accounts)
    assert [smas.account(i) for i in range(2)] == accounts


@pytest.mark.parametrize("model_members", [1, 3])
def test_a_groups_value_adds_its_members_in_plan_sleeves_order(model_members: int) -> None:
    """Model securities in entry order, then the equivalents held in holding order: with
    three terms the order shows in the float (0.1 + 0.2 + 3.3 is not 0.1 + 3.3 + 0.2)."""
    secs = {
        "A": Security("A", 0.1, "eq"),
        "B": Security("B", 0.2, "eq"),
        "C": Security("C", 3.3, "eq"),
        "Z": Security("Z", 10.0, "bonds"),
    }
    entries = [ModelEntry(s, 0.5 / model_members) for s in "ABC"[:model_members]]
    model = Model("M", (*entries, ModelEntry("Z", 0.5)))
    ref = reference(secs, [model], equivalence=[["A", "B", "C"]])
    book = Book(ref, (Account("X", (sleeve("main", "M", {"A": 1, "B": 1, "C": 1}),)),))
    got, _ = book_arrays(book)
    want, _ = book_arrays(book, vectorized=False)
    assert got.value[0, 0] == 0.0 + 0.1 + 0.2 + 3.3 != 0.0 + 0.1 + 3.3 + 0.2
    assert_same_arrays(got, want)


def test_rows_of_sma_arrays_with_bad_data_fail_as_their_accounts_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the numpy layout cannot vouch for goes through ``plan_sleeve``'s checks, so
    each bad row fails with the engine's own message, in order, and the good ones pass."""
    secs = {
        "A": Security("A", 20.0, "eq"),
        "B": Security("B", 50.0, "bonds"),
        "U": Security("U", None, "eq"),  # unpriced
    }
    ref = reference(secs, [Model("M", (ModelEntry("A", 0.5), ModelEntry("B", 0.5)))])
    nan = float("nan")
    rows = [  # (id, model, cash, settings, [(symbol, shares)], account cash, class band)
        ("ok", "M", 100.0, Settings(), [("A", 10.0), ("B", 2.0)], 0.0, None),
        ("twice", "M", 0.0, Settings(), [("A", 1.0), ("A", 2.0)], 0.0, None),
        ("negative", "M", 0.0, Settings(), [("B", -1.0)], 0.0, None),
        ("nan-shares", "M", 0.0, Settings(), [("B", nan)], 0.0, None),
        ("unknown", "M", 0.0, Settings(), [("NOPE", 1.0)], 0.0, None),
        ("unpriced", "M", 0.0, Settings(), [("U", 1.0)], 0.0, None),
        ("nan-cash", "M", nan, Settings(), [], 0.0, None),
        ("nan-account-cash", "M", 0.0, Settings(), [], nan, None),
        ("bad-settings", "M", 0.0, Settings(cash_target=1.5), [], 0.0, None),
        ("bad-band", "M", 0.0, Settings(), [], 0.0, Band(BandKind.ABSOLUTE, -0.1)),
        ("no-model", "GHOST", 0.0, Settings(), [], 0.0, None),
        ("ok-too", "M", 5.0, Settings(), [("B", 3.0)], 0.0, None),
    ]
    holdings = [(i, s, q) for i, r in enumerate(rows) for s, q in r[4]]
    smas = SmaArrays(
        [r[0] for r in rows],
        ["main"] * len(rows),
        [r[1] for r in rows],
        np.array([r[2] for r in rows]),
        [r[3] for r in rows],
        np.array([h[0] for h in holdings], dtype=np.int64),
        [h[1] for h in holdings],
        np.array([h[2] for h in holdings]),
        np.array([r[5] for r in rows]),
        [r[6] or Band(BandKind.ABSOLUTE, 0.05) for r in rows],
    )
    planned = _counting_plan_sleeve(monkeypatch)
    got, failures = sma_book_arrays(ref, smas)
    assert planned == []  # the good rows by numpy; the bad ones fail their check first
    want, want_failures = book_arrays(
        Book(ref, tuple(smas.account(i) for i in range(len(rows)))), vectorized=False
    )
    assert [f.account_id for f in failures] == [r[0] for r in rows[1:-1]]
    assert failures == want_failures
    assert got.account_ids == ["ok", "ok-too"]
    assert_same_arrays(got, want)
