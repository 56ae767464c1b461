"""Whole-book drift scan: many accounts at once as numpy arrays.

``BookArrays`` is a padded, column-per-slot layout: account ``i`` has up to ``P`` position
slots (a model security with its equivalents, or a held security outside the model) spread
over up to ``S`` sleeves. ``book_arrays`` builds it from a ``Book`` with exactly the targets
and bands ``measure_drift`` uses, so the scan and the per-account report agree;
``scan_drift`` then flags, per account, the levels out of tolerance and by how much.
"""

from __future__ import annotations

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
from ballast_engine.model import DRIFT_EPS, Account, AccountFailure, Book, DriftLevel
from ballast_engine.tactical import SleevePlan, plan_sleeve
from ballast_engine.validate import check_account

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


@dataclass(slots=True)
class _PlannedAccount:
    """One valid account of a book with what its row of ``BookArrays`` is made from."""

    account: Account
    plans: list[SleevePlan]
    sleeve_targets: SleeveTargets | None
    class_targets: dict[str, float]


def book_arrays(book: Book) -> tuple[BookArrays, tuple[AccountFailure, ...]]:
    """Lay a book out as ``BookArrays``; invalid accounts are left out and reported."""
    rows, failures, classes = _planned_accounts(book)
    n = len(rows)
    p_max = max((sum(len(p.groups) for p in r.plans) for r in rows), default=1) or 1
    s_max = max((len(r.plans) for r in rows), default=1) or 1
    arrays = BookArrays(
        [r.account.account_id for r in rows],
        np.zeros((n, p_max)),
        np.full((n, p_max), -1, dtype=np.int64),
        np.zeros((n, p_max)),
        np.zeros((n, p_max)),
        np.zeros((n, p_max)),
        np.zeros((n, p_max), dtype=np.int64),
        np.zeros((n, s_max)),
        np.zeros((n, s_max)),
        np.zeros((n, s_max)),
        np.zeros((n, s_max)),
        np.zeros((n, s_max), dtype=bool),
        np.full((n, s_max), np.nan),
        np.full((n, s_max), np.nan),
        np.full((n, s_max), np.nan),
        np.zeros(n),
        np.zeros((n, max(len(classes), 1))),
        np.zeros(n, dtype=np.int64),
        np.zeros(n),
        list(classes),
        [],
    )
    for i, row in enumerate(rows):
        _fill_row(arrays, i, row, classes, p_max)
    return arrays, tuple(failures)


def _planned_accounts(
    book: Book,
) -> tuple[list[_PlannedAccount], list[AccountFailure], dict[str, int]]:
    """The book's valid accounts planned, its invalid ones as failures, and a code for each
    asset class (in order of appearance)."""
    ref = book.reference
    rows: list[_PlannedAccount] = []
    failures: list[AccountFailure] = []
    classes: dict[str, int] = {}
    for acct in book.accounts:
        try:
            check_account(ref, acct)
        except EngineInputError as exc:
            failures.append(
                AccountFailure(acct.account_id, exc.one_line(), exc.code, exc.to_dict())
            )
            continue
        plans = [plan_sleeve(acct, sl, ref) for sl in acct.sleeves]
        st = sleeve_targets(acct, ref)
        ct = asset_class_targets(plans, sleeve_weights(plans, st, acct.cash))
        for p in plans:
            for g in p.groups:
                classes.setdefault(g.asset_class, len(classes))
        for c in ct:
            classes.setdefault(c, len(classes))
        rows.append(_PlannedAccount(acct, plans, st, ct))
    return rows, failures, classes


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
    b.class_band_kind[i] = 0 if acct.asset_class_band.kind.value == "absolute" else 1
    b.class_band_width[i] = acct.asset_class_band.width
    assert b.slot_keys is not None
    b.slot_keys.append(row_keys)


def scan_book(book: Book) -> DriftScan:
    """Convenience: ``book_arrays`` then ``scan_drift``, with the failures attached."""
    arrays, failures = book_arrays(book)
    res = scan_drift(arrays)
    res.failures = failures
    return res
