"""Whole-book drift scan: many accounts at once as numpy arrays.

``BookArrays`` is a padded, column-per-slot layout: account ``i`` has up to ``P`` position
slots (a model security with its equivalents, or a held security outside the model) spread
over up to ``S`` sleeves. ``book_arrays`` builds it from a ``Book`` with exactly the targets
and bands ``measure_drift`` uses, so the scan and the per-account report agree;
``scan_drift`` then flags, per account, the levels out of tolerance and by how much.

Most accounts of a book are plain SMAs: one sleeve, no restriction, a model without "hold"
entries, whose targets are the model's weights applied to the sleeve's value. Those are laid
out with numpy over the whole book at once, repeating ``plan_sleeve``'s arithmetic step for
step (same floats: a property test holds the two layouts equal); every other account goes
through ``plan_sleeve``. ``SmaArrays`` (``sma_book_arrays``) brings plain SMAs in as flat
arrays, without an engine ``Account`` per account.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ballast_engine.account_drift import (
    SleeveTargets,
    asset_class_targets,
    sleeve_targets,
    sleeve_weights,
)
from ballast_engine.errors import EngineInputError
from ballast_engine.model import (
    DRIFT_EPS,
    Account,
    AccountFailure,
    Band,
    BandKind,
    Book,
    DriftLevel,
    Holding,
    Reference,
    Settings,
    Sleeve,
)
from ballast_engine.tactical import SleevePlan, model_weights, plan_sleeve
from ballast_engine.validate import RefIndex, check_account, check_model, check_settings, ref_index

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

LEVELS = (DriftLevel.SECURITY, DriftLevel.SLEEVE, DriftLevel.ASSET_CLASS, DriftLevel.CASH)


@dataclass
class BookArrays:
    """A book as arrays (N accounts, P position slots, S sleeve slots, K asset classes).

    Attributes:
        account_ids: N account ids.
        value: (N, P) market value of each slot; 0 for an empty slot. ``with_values``
            computes it from quantities, security indexes and a price vector.
        slot_sleeve: (N, P) sleeve slot of each position slot (-1 for an empty slot).
        slot_target, slot_lo, slot_hi: (N, P) target weight and band bounds within the sleeve.
        slot_class: (N, P) asset class code (index into ``class_names``).
        sleeve_cash: (N, S) sleeve cash; sleeve_cash_target/lo/hi: (N, S) weights in sleeve.
        sleeve_valid: (N, S) whether the sleeve slot is used.
        sleeve_target/lo/hi: (N, S) strategy weight and band (NaN when there is no strategy).
        account_cash: (N,) unallocated cash (target 0, band ``class_band``).
        class_target: (N, K) account-level asset-class targets.
        class_band_kind: (N,) 0 absolute, 1 relative; class_band_width: (N,) the account's
            asset-class band (also bounds unallocated cash, whose target is 0).
        slot_keys: optional (N, P) labels for reports (security symbol of the slot).
    """

    account_ids: list[str]
    value: F64
    slot_sleeve: I64
    slot_target: F64
    slot_lo: F64
    slot_hi: F64
    slot_class: I64
    sleeve_cash: F64
    sleeve_cash_target: F64
    sleeve_cash_lo: F64
    sleeve_cash_hi: F64
    sleeve_valid: npt.NDArray[np.bool_]
    sleeve_target: F64
    sleeve_lo: F64
    sleeve_hi: F64
    account_cash: F64
    class_target: F64
    class_band_kind: I64
    class_band_width: F64
    class_names: list[str]
    slot_keys: list[list[str]] | None = None

    @staticmethod
    def values_from(quantity: F64, security: I64, prices: F64) -> F64:
        """Slot values from quantities, security indexes (-1 = empty) and prices."""
        v = quantity * prices[np.maximum(security, 0)]
        v[security < 0] = 0.0
        return v


@dataclass
class DriftScan:
    """Result of ``scan_drift``: per account and level (security, sleeve, asset_class, cash).

    Attributes:
        account_ids: N ids.
        flags: (N, 4) bool, out of tolerance at that level.
        max_abs_drift: (N, 4) largest |weight − target| at that level.
        max_breach: (N, 4) largest distance outside the band (0 when inside).
        worst_slot: (N,) position slot with the largest security-level breach (-1 if none).
    """

    account_ids: list[str]
    flags: npt.NDArray[np.bool_]
    max_abs_drift: F64
    max_breach: F64
    worst_slot: I64
    slot_keys: list[list[str]] | None = None
    failures: tuple[AccountFailure, ...] = ()

    @property
    def out_of_tolerance(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.flags.any(axis=1), dtype=bool)

    def records(self, only_out: bool = True) -> list[dict[str, Any]]:
        rows = np.nonzero(self.out_of_tolerance)[0] if only_out else range(len(self.account_ids))
        out = []
        for i in rows:
            rec: dict[str, Any] = {
                "account_id": self.account_ids[i],
                "out_of_tolerance": bool(self.flags[i].any()),
                "levels": [lv.value for j, lv in enumerate(LEVELS) if self.flags[i, j]],
                "max_abs_drift": {
                    lv.value: round(float(self.max_abs_drift[i, j]), 6)
                    for j, lv in enumerate(LEVELS)
                },
                "max_breach": {
                    lv.value: round(float(self.max_breach[i, j]), 6) for j, lv in enumerate(LEVELS)
                },
            }
            ws = int(self.worst_slot[i])
            if self.slot_keys is not None and ws >= 0:
                rec["worst_security"] = self.slot_keys[i][ws]
            out.append(rec)
        return out


def _segment_sum(values: F64, index: I64, n_rows: int, n_cols: int) -> F64:
    """Sum ``values`` (N, P) into (N, n_cols) by column index (negative indexes skipped)."""
    rows = np.broadcast_to(np.arange(n_rows)[:, None], index.shape)
    valid = index >= 0
    flat = (rows * n_cols + np.where(valid, index, 0)).ravel()
    w = np.where(valid, values, 0.0).ravel()
    out = np.bincount(flat, weights=w, minlength=n_rows * n_cols).astype(np.float64)
    return out.reshape(n_rows, n_cols)


def scan_drift(b: BookArrays) -> DriftScan:
    """Vectorized drift scan of a whole book (see ``BookArrays``)."""
    n, _p = b.value.shape
    s = b.sleeve_cash.shape[1]
    k = max(len(b.class_names), 1)
    eps = DRIFT_EPS
    sleeve_sec = _segment_sum(b.value, b.slot_sleeve, n, s)
    sleeve_val = sleeve_sec + b.sleeve_cash
    acct = sleeve_val.sum(axis=1) + b.account_cash
    acct_pos = np.where(acct > 0, acct, 1.0)
    sv_pos = np.where(sleeve_val > 0, sleeve_val, 1.0)

    flags = np.zeros((n, 4), dtype=bool)
    max_abs = np.zeros((n, 4))
    max_breach = np.zeros((n, 4))

    # security level: weight within its sleeve
    valid = b.slot_sleeve >= 0
    denom = np.take_along_axis(sv_pos, np.maximum(b.slot_sleeve, 0), axis=1)
    w = b.value / denom
    d = np.where(valid, np.abs(w - b.slot_target), 0.0)
    br = np.where(valid, np.maximum(np.maximum(b.slot_lo - w, w - b.slot_hi), 0.0), 0.0)
    max_abs[:, 0] = d.max(axis=1, initial=0.0)
    max_breach[:, 0] = br.max(axis=1, initial=0.0)
    flags[:, 0] = (br > eps).any(axis=1)
    worst = np.where(max_breach[:, 0] > 0, br.argmax(axis=1), -1)

    # cash level: sleeve cash within its sleeve, and unallocated cash in the account
    cw = b.sleeve_cash / sv_pos
    cd = np.where(b.sleeve_valid, np.abs(cw - b.sleeve_cash_target), 0.0)
    cb = np.where(
        b.sleeve_valid,
        np.maximum(np.maximum(b.sleeve_cash_lo - cw, cw - b.sleeve_cash_hi), 0.0),
        0.0,
    )
    uw = b.account_cash / acct_pos
    # unallocated cash: target 0, upper bound = the asset-class band around 0
    u_hi = np.where(b.class_band_kind == 0, b.class_band_width, 0.0)
    ub = np.where(np.abs(b.account_cash) > 0.005, np.maximum(np.maximum(-uw, uw - u_hi), 0.0), 0)
    ud = np.where(np.abs(b.account_cash) > 0.005, np.abs(uw), 0.0)
    max_abs[:, 3] = np.maximum(cd.max(axis=1, initial=0.0), ud)
    max_breach[:, 3] = np.maximum(cb.max(axis=1, initial=0.0), ub)
    flags[:, 3] = max_breach[:, 3] > eps

    # sleeve level: sleeve weight in the account against the strategy
    has = ~np.isnan(b.sleeve_target) & b.sleeve_valid
    sw = sleeve_val / acct_pos[:, None]
    sd = np.where(has, np.abs(sw - np.nan_to_num(b.sleeve_target)), 0.0)
    sb = np.where(
        has,
        np.maximum(
            np.maximum(np.nan_to_num(b.sleeve_lo) - sw, sw - np.nan_to_num(b.sleeve_hi)), 0.0
        ),
        0.0,
    )
    max_abs[:, 1] = sd.max(axis=1, initial=0.0)
    max_breach[:, 1] = sb.max(axis=1, initial=0.0)
    flags[:, 1] = max_breach[:, 1] > eps

    # asset-class level: account-level weights
    cls_val = _segment_sum(b.value, np.where(valid, b.slot_class, -1), n, k)
    aw = cls_val / acct_pos[:, None]
    t = b.class_target
    width = b.class_band_width[:, None]
    half = np.where(b.class_band_kind[:, None] == 0, width, width * t)
    lo = np.maximum(t - half, 0.0)
    hi = t + half
    present = (cls_val > 0) | (t > 0)
    ad = np.where(present, np.abs(aw - t), 0.0)
    ab = np.where(present, np.maximum(np.maximum(lo - aw, aw - hi), 0.0), 0.0)
    max_abs[:, 2] = ad.max(axis=1, initial=0.0)
    max_breach[:, 2] = ab.max(axis=1, initial=0.0)
    flags[:, 2] = max_breach[:, 2] > eps
    return DriftScan(list(b.account_ids), flags, max_abs, max_breach, worst, b.slot_keys)


# --------------------------------------------------------------------------------------------
# Laying a book out: plain SMAs with numpy over the whole book, other accounts by plan_sleeve


@dataclass
class SmaArrays:
    """Single-sleeve accounts without restrictions as flat arrays: what ``sma_book_arrays``
    lays out with numpy, without an engine ``Account`` per account.

    Attributes:
        account_ids, sleeve_ids, model_ids: N each.
        cash: (N,) the sleeve's cash.
        settings: N sleeve settings (accounts with the same settings may share one object).
        holding_row: (H,) the account row of each holding; an account's holdings keep their
            order in this array (the order its sleeve lists them: it decides the order of
            the slots of securities outside the model and the order of sums).
        holding_symbol: H symbols; holding_quantity: (H,) shares.
        account_cash: (N,) unallocated account cash (``None``: none).
        asset_class_bands: N asset-class bands (``None``: the ``Account`` default).
    """

    account_ids: list[str]
    sleeve_ids: list[str]
    model_ids: list[str]
    cash: F64
    settings: list[Settings]
    holding_row: I64
    holding_symbol: list[str]
    holding_quantity: F64
    account_cash: F64 | None = None
    asset_class_bands: list[Band] | None = None

    @staticmethod
    def from_accounts(accounts: Sequence[Account]) -> SmaArrays:
        """Accounts that ``plain_sma`` accepts, as arrays."""
        rows: list[int] = []
        symbols: list[str] = []
        quantities: list[float] = []
        for i, acct in enumerate(accounts):
            for h in acct.sleeves[0].holdings:
                rows.append(i)
                symbols.append(h.symbol)
                quantities.append(h.quantity)
        sleeves = [a.sleeves[0] for a in accounts]
        return SmaArrays(
            [a.account_id for a in accounts],
            [s.sleeve_id for s in sleeves],
            [s.model_id for s in sleeves],
            np.array([s.cash for s in sleeves], dtype=np.float64),
            [s.settings for s in sleeves],
            np.array(rows, dtype=np.int64),
            symbols,
            np.array(quantities, dtype=np.float64),
            np.array([a.cash for a in accounts], dtype=np.float64),
            [a.asset_class_band for a in accounts],
        )

    def unallocated(self) -> F64:
        """(N,) unallocated account cash."""
        if self.account_cash is None:
            return np.zeros(len(self.account_ids))
        return np.asarray(self.account_cash, dtype=np.float64)

    def class_band(self, i: int) -> Band:
        """Row ``i``'s asset-class band."""
        return _DEFAULT_CLASS_BAND if self.asset_class_bands is None else self.asset_class_bands[i]

    def account(self, i: int) -> Account:
        """Row ``i`` as an engine ``Account`` (for a row the layout leaves to ``plan_sleeve``)."""
        held = np.nonzero(np.asarray(self.holding_row) == i)[0].tolist()
        sleeve = Sleeve(
            self.sleeve_ids[i],
            self.model_ids[i],
            float(self.cash[i]),
            tuple(Holding(self.holding_symbol[j], float(self.holding_quantity[j])) for j in held),
            self.settings[i],
        )
        return Account(
            self.account_ids[i],
            (sleeve,),
            cash=float(self.unallocated()[i]),
            asset_class_band=self.class_band(i),
        )


_DEFAULT_CLASS_BAND = Account("", ()).asset_class_band


def plain_sma(account: Account) -> bool:
    """Whether ``book_arrays`` lays ``account`` out with numpy: one sleeve, no strategy, no
    restriction and no tax lots (its model and data are checked there)."""
    if len(account.sleeves) != 1 or account.strategy_id is not None or account.restrictions:
        return False
    sleeve = account.sleeves[0]
    return not sleeve.restrictions and not any(h.lots for h in sleeve.holdings)


def book_arrays(
    book: Book, *, vectorized: bool = True
) -> tuple[BookArrays, tuple[AccountFailure, ...]]:
    """Lay a book out as ``BookArrays``; invalid accounts are left out and reported.

    Plain SMAs (``plain_sma``) whose model has no "hold" entry are laid out with numpy over
    the whole book, with the targets ``plan_sleeve`` gives them (the model's weights applied
    to the sleeve's value, grouped by equivalence set); every other account goes through
    ``plan_sleeve``. ``vectorized=False`` sends every account through ``plan_sleeve``.
    Rows keep the book's order; asset-class codes follow the class names' order.
    """
    accounts = book.accounts
    plain = [i for i, a in enumerate(accounts) if vectorized and plain_sma(a)]
    smas = SmaArrays.from_accounts([accounts[i] for i in plain])
    row_of = {position: row for row, position in enumerate(plain)}
    items = [row_of.get(i, a) for i, a in enumerate(accounts)]
    return _assemble(book.reference, smas, items, lambda row: accounts[plain[row]])


def sma_book_arrays(
    ref: Reference, smas: SmaArrays, others: Sequence[Account] = ()
) -> tuple[BookArrays, tuple[AccountFailure, ...]]:
    """``book_arrays`` of the accounts of ``smas`` (in their order) then ``others``: a row
    of ``smas`` the layout cannot take (a "hold" in its model, bad data) goes through
    ``plan_sleeve`` as ``smas.account(row)``, and is reported if invalid."""
    items: list[int | Account] = [*range(len(smas.account_ids)), *others]
    return _assemble(ref, smas, items, smas.account)


def scan_book(book: Book) -> DriftScan:
    """Convenience: ``book_arrays`` then ``scan_drift``, with the failures attached."""
    arrays, failures = book_arrays(book)
    res = scan_drift(arrays)
    res.failures = failures
    return res


def _assemble(
    ref: Reference,
    smas: SmaArrays,
    items: Sequence[int | Account],
    account_of: Callable[[int], Account],
) -> tuple[BookArrays, tuple[AccountFailure, ...]]:
    """The rows of ``items`` in order: an int is a row of ``smas`` (laid out with numpy when
    the layout can take it, else ``account_of(row)`` goes through ``plan_sleeve``), an
    ``Account`` goes through ``plan_sleeve``."""
    secs = _securities(ref)
    fit = _fitting_rows(ref, smas, secs)
    resolved = [account_of(x) if isinstance(x, int) and not fit.ok[x] else x for x in items]
    planned, failures, classes = _planned_accounts(
        ref, [x for x in resolved if not isinstance(x, int)]
    )
    fast_rows: list[int] = []
    fast_out: list[int] = []
    slow: list[tuple[int, _PlannedAccount]] = []
    ids: list[str] = []
    plans = iter(planned)
    for x in resolved:
        if isinstance(x, int):
            fast_rows.append(x)
            fast_out.append(len(ids))
            ids.append(smas.account_ids[x])
        elif (row := next(plans)) is not None:
            slow.append((len(ids), row))
            ids.append(x.account_id)
    lay = _lay_out_smas(smas, np.array(fast_rows, dtype=np.int64), secs, fit)
    names = sorted(classes | {secs.class_names[c] for c in lay.classes})
    width = max([sum(len(p.groups) for p in r.plans) for _, r in slow] + [lay.width, 1])
    sleeves = max([len(r.plans) for _, r in slow] + [1])
    arrays = _empty_arrays(ids, width, sleeves, names)
    code = {c: i for i, c in enumerate(names)}
    for i, row in slow:
        _fill_row(arrays, i, row, code, width)
    _fill_smas(arrays, np.array(fast_out, dtype=np.int64), lay, secs, code)
    return arrays, failures


def _empty_arrays(ids: list[str], width: int, sleeves: int, classes: list[str]) -> BookArrays:
    n = len(ids)
    return BookArrays(
        ids,
        np.zeros((n, width)),
        np.full((n, width), -1, dtype=np.int64),
        np.zeros((n, width)),
        np.zeros((n, width)),
        np.zeros((n, width)),
        np.zeros((n, width), dtype=np.int64),
        np.zeros((n, sleeves)),
        np.zeros((n, sleeves)),
        np.zeros((n, sleeves)),
        np.zeros((n, sleeves)),
        np.zeros((n, sleeves), dtype=bool),
        np.full((n, sleeves), np.nan),
        np.full((n, sleeves), np.nan),
        np.full((n, sleeves), np.nan),
        np.zeros(n),
        np.zeros((n, max(len(classes), 1))),
        np.zeros(n, dtype=np.int64),
        np.zeros(n),
        list(classes),
        [[] for _ in range(n)],
    )


# --- through plan_sleeve ----------------------------------------------------------------------


@dataclass(slots=True)
class _PlannedAccount:
    """One valid account of a book with what its row of ``BookArrays`` is made from."""

    account: Account
    plans: list[SleevePlan]
    sleeve_targets: SleeveTargets | None
    class_targets: dict[str, float]


def _planned_accounts(
    ref: Reference, accounts: Sequence[Account]
) -> tuple[list[_PlannedAccount | None], tuple[AccountFailure, ...], set[str]]:
    """Each account planned (``None`` for an invalid one, reported as a failure), and the
    asset classes of their groups."""
    rows: list[_PlannedAccount | None] = []
    failures: list[AccountFailure] = []
    classes: set[str] = set()
    for acct in accounts:
        try:
            check_account(ref, acct)
        except EngineInputError as exc:
            failures.append(
                AccountFailure(acct.account_id, exc.one_line(), exc.code, exc.to_dict())
            )
            rows.append(None)
            continue
        plans = [plan_sleeve(acct, sl, ref) for sl in acct.sleeves]
        st = sleeve_targets(acct, ref)
        ct = asset_class_targets(plans, sleeve_weights(plans, st, acct.cash))
        classes.update(g.asset_class for p in plans for g in p.groups)
        rows.append(_PlannedAccount(acct, plans, st, ct))
    return rows, tuple(failures), classes


def _fill_row(
    b: BookArrays, i: int, row: _PlannedAccount, classes: dict[str, int], p_max: int
) -> None:
    """Write one account's slots, sleeves, cash and asset-class targets into row ``i``."""
    j = 0
    row_keys = [""] * p_max
    for si, plan in enumerate(row.plans):
        tot = plan.total if plan.total > 0 else 1.0
        for g in plan.groups:
            if g.value <= 0 and g.target <= 0:
                continue
            b.value[i, j] = g.value
            b.slot_sleeve[i, j] = si
            b.slot_target[i, j] = g.target / tot
            b.slot_lo[i, j] = g.lo / tot
            b.slot_hi[i, j] = g.hi / tot
            b.slot_class[i, j] = classes[g.asset_class]
            row_keys[j] = g.key
            j += 1
        b.sleeve_cash[i, si] = plan.cash_before
        b.sleeve_cash_target[i, si] = plan.cash_target / tot
        b.sleeve_cash_lo[i, si] = plan.cash_lo / tot
        b.sleeve_cash_hi[i, si] = plan.cash_hi / tot
        b.sleeve_valid[i, si] = True
        if row.sleeve_targets is not None:
            t, lo, hi = row.sleeve_targets[plan.sleeve.sleeve_id]
            b.sleeve_target[i, si], b.sleeve_lo[i, si], b.sleeve_hi[i, si] = t, lo, hi
    acct = row.account
    b.account_cash[i] = acct.cash
    for c, t in row.class_targets.items():
        b.class_target[i, classes[c]] = t
    b.class_band_kind[i] = _band_kind(acct.asset_class_band)
    b.class_band_width[i] = acct.asset_class_band.width
    assert b.slot_keys is not None
    b.slot_keys[i] = row_keys


# --- with numpy: plain SMAs -------------------------------------------------------------------
# Every step repeats plan_sleeve's arithmetic for a sleeve without restrictions, floors or
# flows, in the same order (sums in member order, Python's max and min), so the two give the
# same floats; a property test holds them to it.


def _band_kind(band: Band) -> int:
    """0 absolute, 1 relative (tested by identity, as ``Band.bounds`` does)."""
    return 0 if band.kind is BandKind.ABSOLUTE else 1


def _py_max(a: Any, b: Any) -> F64:
    """Python's ``max(a, b)`` elementwise (``a`` unless ``b > a``)."""
    return np.where(b > a, b, a)


def _py_min(a: Any, b: Any) -> F64:
    """Python's ``min(a, b)`` elementwise (``a`` unless ``b < a``)."""
    return np.where(b < a, b, a)


def _sums(index: I64, weights: F64, count: int) -> F64:
    """``weights`` summed by ``index`` into ``count`` bins, in array order: each bin adds its
    values left to right from 0.0, as ``plan_sleeve``'s loops do."""
    return np.bincount(index, weights=weights, minlength=count).astype(np.float64, copy=False)


def _bounds(kind: I64, width: F64, target: F64) -> tuple[F64, F64]:
    """``Band.bounds`` elementwise."""
    absolute = kind == 0
    lo = np.where(absolute, target - width, target * (1.0 - width))
    hi = np.where(absolute, target + width, target * (1.0 + width))
    return lo, hi


@dataclass(slots=True)
class _Securities:
    """The reference's securities by code: symbol, usable price (NaN when it has none) and
    asset-class code (each array one longer: see ``_securities``)."""

    code: dict[str, int]
    symbols: npt.NDArray[np.object_]
    price: F64
    class_code: I64
    class_names: list[str]


def _securities(ref: Reference) -> _Securities:
    """Codes 0..V-1 in the reference's order; code -1 (an unknown symbol) reads the last
    entry of each array: no price, no symbol."""
    code: dict[str, int] = {}
    names: dict[str, int] = {}
    symbols = [*ref.securities, ""]
    price = np.full(len(symbols), np.nan)
    class_code = np.zeros(len(symbols), dtype=np.int64)
    for i, symbol in enumerate(symbols[:-1]):
        sec = ref.securities[symbol]
        code[symbol] = i
        p = sec.price
        if p is not None and math.isfinite(p) and p > 0:
            price[i] = float(p)
        class_code[i] = names.setdefault(sec.asset_class, len(names))
    return _Securities(code, np.array(symbols, dtype=object), price, class_code, list(names))


@dataclass(slots=True)
class _ModelLayout:
    """A model's groups as ``plan_sleeve`` forms them: one per model security, the model
    securities of one equivalence set sharing the group of the first."""

    entry_group: list[int]  # group of each entry
    entry_weight: list[float]
    entry_code: list[int]  # security code of each entry
    group_key: list[int]  # security code of each group's first entry (its key)
    group_band_kind: list[int]  # -1: the sleeve's security band
    group_band_width: list[float]
    joiners: dict[int, int]  # security code -> group, for members of a group's equivalence set
    model_cash: float
    wsum: float


def _model_layout(
    ref: Reference, idx: RefIndex, model_id: str, secs: _Securities
) -> _ModelLayout | None:
    """How ``plan_sleeve`` groups the model, or ``None`` when its targets are more than its
    weights times the sleeve's value ("hold" entries) or it fails its checks (then
    ``plan_sleeve``'s account check reports it)."""
    model = ref.models.get(model_id)
    if model is None or any(e.hold or e.replacement is not None for e in model.entries):
        return None
    try:
        check_model(ref, model, account=None, sleeve=None)
    except EngineInputError:
        return None
    if any(math.isnan(secs.price[secs.code[e.symbol]]) for e in model.entries):
        return None
    weights, model_cash = model_weights(model, ref)
    by_eq: dict[int, int] = {}
    lay = _ModelLayout([], [], [], [], [], [], {}, model_cash, sum(weights.values()))
    for e in model.entries:
        eqi = idx.eq_of.get(e.symbol)
        g = by_eq.get(eqi, -1) if eqi is not None else -1
        if g < 0:
            g = len(lay.group_key)
            lay.group_key.append(secs.code[e.symbol])
            lay.group_band_kind.append(-1 if e.band is None else _band_kind(e.band))
            lay.group_band_width.append(0.0 if e.band is None else e.band.width)
            if eqi is not None:
                by_eq[eqi] = g
        lay.entry_group.append(g)
        lay.entry_weight.append(weights[e.symbol])
        lay.entry_code.append(secs.code[e.symbol])
    lay.joiners = {secs.code[s]: g for eqi, g in by_eq.items() for s in idx.eq_members[eqi]}
    return lay


@dataclass(slots=True)
class _SettingsColumns:
    """The sleeve settings the layout reads, one value per account row."""

    valid: npt.NDArray[np.bool_]
    cash_target: F64
    cash_reserve: F64
    cash_band_kind: I64
    cash_band_width: F64
    security_band_kind: I64
    security_band_width: F64


def _settings_columns(settings: Sequence[Settings]) -> _SettingsColumns:
    """Each distinct settings checked and read once, then spread over the rows."""
    by_id: dict[int, int] = {}  # the objects live as long as `settings`: ids are stable
    by_value: dict[Settings, int] = {}
    table: list[tuple[bool, float, float, int, float, int, float]] = []
    rows = np.zeros(len(settings), dtype=np.int64)
    for i, s in enumerate(settings):
        k = by_id.get(id(s))
        if k is None:
            try:
                k = by_value.setdefault(s, len(table))
            except TypeError:  # an unhashable field (an odd caller): by identity only
                k = len(table)
            if k == len(table):
                table.append(_settings_row(s))
            by_id[id(s)] = k
        rows[i] = k
    if not table:
        table.append((False, 0.0, 0.0, 0, 0.0, 0, 0.0))
    valid, target, reserve, ck, cw, sk, sw = (np.array(col) for col in zip(*table, strict=True))
    return _SettingsColumns(
        valid.astype(bool)[rows],
        target.astype(np.float64)[rows],
        reserve.astype(np.float64)[rows],
        ck.astype(np.int64)[rows],
        cw.astype(np.float64)[rows],
        sk.astype(np.int64)[rows],
        sw.astype(np.float64)[rows],
    )


def _settings_row(s: Settings) -> tuple[bool, float, float, int, float, int, float]:
    try:
        check_settings(s, account="", sleeve="")
    except EngineInputError:
        return (False, 0.0, 0.0, 0, 0.0, 0, 0.0)
    return (
        True,
        float(s.cash_target),
        float(s.cash_reserve),
        _band_kind(s.cash_band),
        float(s.cash_band.width),
        _band_kind(s.security_band),
        float(s.security_band.width),
    )


@dataclass(slots=True)
class _Fit:
    """Which rows of an ``SmaArrays`` the layout takes, and what it read to decide."""

    ok: npt.NDArray[np.bool_]
    layouts: dict[str, _ModelLayout]
    settings: _SettingsColumns
    holding_code: I64  # security code of each holding (-1: unknown)
    class_band_kind: I64
    class_band_width: F64


def _fitting_rows(ref: Reference, smas: SmaArrays, secs: _Securities) -> _Fit:
    """The rows the layout takes: a model it can lay out, valid settings and cash, holdings
    of known and priced securities, each once, with a finite number of shares ≥ 0. Any
    other row goes through ``plan_sleeve``, whose checks name its problem."""
    n = len(smas.account_ids)
    bands = [smas.class_band(i) for i in range(n)]
    width = np.array([b.width for b in bands], dtype=np.float64)
    found: list[int | None] = list(map(secs.code.get, smas.holding_symbol))
    if None in found:
        found = [-1 if c is None else c for c in found]
    codes = np.array(found, dtype=np.int64)
    fit = _Fit(
        np.zeros(n, dtype=bool),
        {},
        _settings_columns(smas.settings),
        codes,
        np.array([_band_kind(b) for b in bands], dtype=np.int64),
        width,
    )
    try:
        idx = ref_index(ref)
    except EngineInputError:  # a bad equivalence set: every account reports it
        return fit
    for model_id in dict.fromkeys(smas.model_ids):
        layout = _model_layout(ref, idx, model_id, secs)
        if layout is not None:
            fit.layouts[model_id] = layout
    ok = np.fromiter((m in fit.layouts for m in smas.model_ids), dtype=bool, count=n)
    ok &= fit.settings.valid & np.isfinite(smas.cash) & np.isfinite(smas.unallocated())
    ok &= np.isfinite(width) & (width >= 0)
    rows = np.asarray(smas.holding_row, dtype=np.int64)
    shares = np.asarray(smas.holding_quantity, dtype=np.float64)
    bad = (codes < 0) | np.isnan(secs.price[codes]) | ~np.isfinite(shares) | (shares < 0)
    pair = rows * (len(secs.code) + 1) + codes
    known = np.nonzero(codes >= 0)[0]
    ordered = known[np.argsort(pair[known], kind="stable")]
    bad[ordered[1:][pair[ordered[1:]] == pair[ordered[:-1]]]] = True  # held twice
    ok[rows[bad]] = False
    fit.ok = ok
    return fit


@dataclass(slots=True)
class _ModelTables:
    """The layouts of the models in use, stacked (M models; entries and groups padded)."""

    groups: I64  # (M,) groups of each model
    entries: I64  # (M,)
    entry_group: I64  # (M, E)
    entry_weight: F64  # (M, E)
    group_key: I64  # (M, G)
    group_band_kind: I64  # (M, G) -1: the sleeve's security band
    group_band_width: F64  # (M, G)
    entry_of: I64  # (M, codes + 1) each security's entry in the model (-1: none)
    joiner_of: I64  # (M, codes + 1) the group an equivalent security joins (-1: none)
    model_cash: F64  # (M,)
    wsum: F64  # (M,)


def _model_tables(layouts: list[_ModelLayout], codes: int) -> _ModelTables:
    m = len(layouts)
    e = max([len(lay.entry_group) for lay in layouts] + [1])
    g = max([len(lay.group_key) for lay in layouts] + [1])
    t = _ModelTables(
        np.array([len(lay.group_key) for lay in layouts], dtype=np.int64),
        np.array([len(lay.entry_group) for lay in layouts], dtype=np.int64),
        np.zeros((m, e), dtype=np.int64),
        np.zeros((m, e)),
        np.zeros((m, g), dtype=np.int64),
        np.zeros((m, g), dtype=np.int64),
        np.zeros((m, g)),
        np.full((m, codes + 1), -1, dtype=np.int64),
        np.full((m, codes + 1), -1, dtype=np.int64),
        np.array([lay.model_cash for lay in layouts], dtype=np.float64),
        np.array([lay.wsum for lay in layouts], dtype=np.float64),
    )
    for k, lay in enumerate(layouts):
        ne, ng = len(lay.entry_group), len(lay.group_key)
        t.entry_group[k, :ne] = lay.entry_group
        t.entry_weight[k, :ne] = lay.entry_weight
        t.group_key[k, :ng] = lay.group_key
        t.group_band_kind[k, :ng] = lay.group_band_kind
        t.group_band_width[k, :ng] = lay.group_band_width
        t.entry_of[k, lay.entry_code] = np.arange(ne)
        if lay.joiners:
            t.joiner_of[k, list(lay.joiners)] = list(lay.joiners.values())
    return t


@dataclass(slots=True)
class _RowFigures:
    """Per row what ``plan_sleeve`` works out before its groups (no flows: the total is the
    sleeve's value), and the sleeve's weight in the account (``sleeve_weights``)."""

    total_pos: F64  # the sleeve's total, 1 where it is not positive
    scale: F64  # dollars of target per unit of model weight
    cash_target: F64  # dollars, and the band around it
    cash_lo: F64
    cash_hi: F64
    weight: F64


def _row_figures(
    value: F64, model_cash: F64, wsum: F64, cols: _SettingsColumns, rows: I64, unallocated: F64
) -> _RowFigures:
    total = value
    tot_pos = np.where(total > 0, total, 1.0)
    cash_frac = _py_max(cols.cash_target[rows], model_cash)
    cash_target = _py_max(cash_frac * total, cols.cash_reserve[rows])
    investable = _py_max(total - cash_target, 0.0)
    positive = wsum > 0
    scale = np.where(positive, investable / np.where(positive, wsum, 1.0), 0.0)
    cw = cash_target / tot_pos
    clo, chi = _bounds(cols.cash_band_kind[rows], cols.cash_band_width[rows], cw)
    cash_lo = _py_min(_py_max(clo, 0.0) * tot_pos, cash_target)
    cash_hi = _py_max(chi * tot_pos, cash_target)
    account = value + unallocated
    has = account > 0
    weight = np.where(has, value / np.where(has, account, 1.0), 0.0)
    return _RowFigures(tot_pos, scale, cash_target, cash_lo, cash_hi, weight)


@dataclass(slots=True)
class _Candidates:
    """Every group of every row: the model's groups, row by row in group order (the first
    ``in_model``), then the groups of held securities outside the model. A group with a
    value or a target becomes a slot."""

    row: I64
    ordinal: I64  # place among the row's groups
    key: I64  # security code of the group's key
    band_kind: I64
    band_width: F64
    value: F64
    target: F64
    in_model: int


def _candidates(
    held: tuple[I64, I64, F64],
    row_model: I64,
    tabs: _ModelTables,
    scale: F64,
    band: tuple[I64, F64],
) -> _Candidates:
    """The groups of the rows with their values and targets (``plan_sleeve``'s sums: a
    group's target adds its entries' weight × scale in entry order; its value adds its
    members' values: model securities in entry order, then the equivalents held)."""
    n = len(row_model)
    per_row = tabs.groups[row_model]
    base = np.cumsum(per_row) - per_row
    n_model = int(per_row.sum())
    mrow = np.repeat(np.arange(n), per_row)
    mord = np.arange(n_model) - base[mrow]
    mm = row_model[mrow]
    gk = tabs.group_band_kind[mm, mord]
    per_row_e = tabs.entries[row_model]
    erow = np.repeat(np.arange(n), per_row_e)
    eord = np.arange(int(per_row_e.sum())) - (np.cumsum(per_row_e) - per_row_e)[erow]
    em = row_model[erow]
    own_row, own_ord, own_key, value = _holding_groups(held, row_model, tabs, base, n_model)
    count = n_model + len(own_row)
    target = _sums(
        base[erow] + tabs.entry_group[em, eord], tabs.entry_weight[em, eord] * scale[erow], count
    )
    kind, width = band
    return _Candidates(
        np.concatenate((mrow, own_row)),
        np.concatenate((mord, own_ord)),
        np.concatenate((tabs.group_key[mm, mord], own_key)),
        np.concatenate((np.where(gk >= 0, gk, kind[mrow]), kind[own_row])),
        np.concatenate(
            (np.where(gk >= 0, tabs.group_band_width[mm, mord], width[mrow]), width[own_row])
        ),
        value,
        target,
        n_model,
    )


def _holding_groups(
    held: tuple[I64, I64, F64], row_model: I64, tabs: _ModelTables, base: I64, n_model: int
) -> tuple[I64, I64, I64, F64]:
    """The groups of held securities outside the model (row, ordinal, key), and every
    group's value: a holding adds to its model security's group, to the group of the model
    security it is equivalent to, or to a group of its own (numbered after the model's)."""
    hrow, hcode, hval = held
    hm = row_model[hrow]
    entry = tabs.entry_of[hm, hcode]
    joins = tabs.joiner_of[hm, hcode]
    own = np.nonzero((entry < 0) & (joins < 0))[0]
    own_row = hrow[own]
    own_ord = tabs.groups[row_model[own_row]] + (
        np.arange(len(own)) - np.searchsorted(own_row, own_row, side="left")
    )
    group = np.where(entry >= 0, tabs.entry_group[hm, np.maximum(entry, 0)], joins)
    ids = base[hrow] + group
    ids[own] = n_model + np.arange(len(own))
    kind = np.where(entry >= 0, 0, np.where(joins >= 0, 1, 2))
    then = np.where(entry >= 0, entry, np.arange(len(hrow)))
    order = np.lexsort((then, kind, ids))
    value = _sums(ids[order], hval[order], n_model + len(own))
    return own_row, own_ord, hcode[own], value


@dataclass(slots=True)
class _SmaLayout:
    """Rows laid out with numpy: per row its sleeve's cash, cash target and band (weights
    of the sleeve) and asset-class targets (columns: the reference's class codes); per slot
    its row, position, key and figures; ``width`` the most groups of a row, ``classes``
    the class codes of every group (slot or not)."""

    n: int
    sleeve_cash: F64
    cash_target: F64
    cash_lo: F64
    cash_hi: F64
    account_cash: F64
    class_target: F64
    class_band_kind: I64
    class_band_width: F64
    slot_row: I64
    slot_pos: I64
    slot_key: I64
    value: F64
    target: F64
    lo: F64
    hi: F64
    width: int
    classes: list[int]


def _lay_out_smas(smas: SmaArrays, rows: I64, secs: _Securities, fit: _Fit) -> _SmaLayout:
    """The rows ``rows`` of ``smas`` (all fitting) laid out over the whole set at once."""
    n = len(rows)
    models = list(dict.fromkeys(smas.model_ids[r] for r in rows.tolist()))
    tabs = _model_tables([fit.layouts[m] for m in models], len(secs.code))
    place = {m: k for k, m in enumerate(models)}
    row_model = np.array([place[smas.model_ids[r]] for r in rows.tolist()], dtype=np.int64)
    local = np.full(len(smas.account_ids) + 1, -1, dtype=np.int64)
    local[rows] = np.arange(n)
    hlocal = local[np.asarray(smas.holding_row, dtype=np.int64)]
    take = np.nonzero(hlocal >= 0)[0]
    take = take[np.argsort(hlocal[take], kind="stable")]
    hrow, hcode = hlocal[take], fit.holding_code[take]
    hval = np.asarray(smas.holding_quantity, dtype=np.float64)[take] * secs.price[hcode]
    value = _sums(hrow, hval, n) + np.asarray(smas.cash)[rows]
    unallocated = smas.unallocated()[rows]
    figs = _row_figures(
        value, tabs.model_cash[row_model], tabs.wsum[row_model], fit.settings, rows, unallocated
    )
    cols = fit.settings
    c = _candidates(
        (hrow, hcode, hval),
        row_model,
        tabs,
        figs.scale,
        (cols.security_band_kind[rows], cols.security_band_width[rows]),
    )
    return _sma_slots(n, c, figs, secs, rows, fit, np.asarray(smas.cash)[rows], unallocated)


def _sma_slots(
    n: int,
    c: _Candidates,
    figs: _RowFigures,
    secs: _Securities,
    rows: I64,
    fit: _Fit,
    cash: F64,
    unallocated: F64,
) -> _SmaLayout:
    """The slots (groups with a value or a target, in group order), their weights in the
    sleeve and bands, and each row's asset-class targets (``asset_class_targets``)."""
    tp = figs.total_pos[c.row]
    weight = c.target / tp
    lo, hi = _bounds(c.band_kind, c.band_width, weight)
    lo = (np.where(lo >= 0.0, lo, 0.0) * tp) / tp
    hi = (hi * tp) / tp
    k = len(secs.class_names)
    mrow, mtarget = c.row[: c.in_model], c.target[: c.in_model]
    aims = np.nonzero(mtarget > 0)[0]
    class_target = _sums(
        mrow[aims] * k + secs.class_code[c.key[aims]],
        (figs.weight[mrow[aims]] * mtarget[aims]) / figs.total_pos[mrow[aims]],
        n * k,
    ).reshape(n, k)
    order = np.lexsort((c.ordinal, c.row))
    order = order[~((c.value[order] <= 0) & (c.target[order] <= 0))]
    slot_row = c.row[order]
    tot = figs.total_pos
    return _SmaLayout(
        n,
        cash,
        figs.cash_target / tot,
        figs.cash_lo / tot,
        figs.cash_hi / tot,
        unallocated,
        class_target,
        fit.class_band_kind[rows],
        fit.class_band_width[rows],
        slot_row,
        np.arange(len(order)) - np.searchsorted(slot_row, slot_row, side="left"),
        c.key[order],
        c.value[order],
        weight[order],
        lo[order],
        hi[order],
        int(np.bincount(c.row, minlength=1).max()) if n else 1,
        sorted(set(secs.class_code[c.key].tolist())),
    )


def _fill_smas(
    b: BookArrays, out: I64, lay: _SmaLayout, secs: _Securities, classes: dict[str, int]
) -> None:
    """Write the laid-out rows into rows ``out`` of ``b``."""
    if lay.n == 0:
        return
    column = np.array([classes.get(name, -1) for name in secs.class_names], dtype=np.int64)
    o, p = out[lay.slot_row], lay.slot_pos
    b.value[o, p] = lay.value
    b.slot_sleeve[o, p] = 0
    b.slot_target[o, p] = lay.target
    b.slot_lo[o, p] = lay.lo
    b.slot_hi[o, p] = lay.hi
    b.slot_class[o, p] = column[secs.class_code[lay.slot_key]]
    b.sleeve_cash[out, 0] = lay.sleeve_cash
    b.sleeve_cash_target[out, 0] = lay.cash_target
    b.sleeve_cash_lo[out, 0] = lay.cash_lo
    b.sleeve_cash_hi[out, 0] = lay.cash_hi
    b.sleeve_valid[out, 0] = True
    b.account_cash[out] = lay.account_cash
    used = np.nonzero(column >= 0)[0]
    b.class_target[np.ix_(out, column[used])] = lay.class_target[:, used]
    b.class_band_kind[out] = lay.class_band_kind
    b.class_band_width[out] = lay.class_band_width
    keys = np.full((lay.n, b.value.shape[1]), "", dtype=object)
    keys[lay.slot_row, p] = secs.symbols[lay.slot_key]
    assert b.slot_keys is not None
    for i, row_keys in zip(out.tolist(), keys.tolist(), strict=True):
        b.slot_keys[i] = row_keys
