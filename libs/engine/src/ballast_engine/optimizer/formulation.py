"""The sleeve's linear program, built as arrays (no loop per variable or per row).

Notation: N names, L lots, G tracking groups (an equivalence set is one group, every other
name its own), S sectors, K factors. V = cash + Σ shares × price. β_i = p_i / V.

Targets. The index weight w_i of an excluded name is 0 and goes to the others by the
client's rule (pro rata; within its sector; to its equivalence set), giving the personalized
index t; a cash reserve R scales it: target weight T_i = t_i (V − R) / V. Group g: current
weight C_g, target T_g, index weight W_g; current active a_g = C_g − T_g.

Variables (all ≥ 0):
  b_i   shares bought of name i       (0 when excluded, wash-sale blocked, or harvested)
  s_l   shares sold of lot l ≤ q_l     (= q_l for an excluded name; 0 for a loss lot a
                                        recent purchase would wash)
  dp_g, dn_g   post active weight of group g above / below its target
  sp_s, sn_s   post active weight of sector s above / below its personalized weight T_s
  fp_k, fn_k   post active exposure to factor k above / below index + tilt

Rows:
  group g:   Σ_{i∈g} β_i b_i − Σ_{l∈g} β_l s_l − dp_g + dn_g = −a_g
  sector s:  Σ_{g∈s} (dp_g − dn_g) − sp_s + sn_s = 0
  factor k:  Σ_g X_gk (dp_g − dn_g) − fp_k + fn_k = tilt_k − Σ_i X_ik (T_i − w_i)
  cash:      Σ_l p_l (1 − c) s_l − Σ_i p_i (1 + c) b_i ≥ R − cash       (÷ V)
  gains:     Σ_l g_l s_l ≤ budget room                                    (÷ V, if a budget)

Bounds (never forcing a trade: a bound is widened to where the sleeve starts):
  dp_g ≤ max(P, a_g⁺), dn_g ≤ max(P, a_g⁻); the factor bound F likewise for fp/fn.
  Sectors are tracked against the personalized index (an exclusion redistributed pro rata
  moves sector weight on purpose) but bounded against the index: sp_s − sn_s lies in
  [−B − (T_s − W_s), B − (T_s − W_s)] (widened to the current value), written as bounds on
  sp_s and sn_s (a positive lower bound on one, the other 0, when the interval excludes 0).

Objective (fractions of V), minimized:
  λ_n Σ (dp + dn) + λ_s Σ (sp + sn) + λ_f Σ (fp + fn)
  + κ Σ_l τ_l s_l / V + (c + θ) (Σ β_i b_i + Σ β_l s_l)

with τ_l the lot's tax per share (gain × the term's rate; a loss is negative, a benefit),
κ the tax weight, c the transaction cost rate and θ the turnover penalty (settings.py).

Wash sales. Names are gathered in wash groups (substantially identical sets). With
harvesting on, a wash group holding a lot past the harvest thresholds that is worth
harvesting is *harvested*: none of its names is bought this run, so selling its loss lots
never washes. Worth harvesting: κ × loss per share × the term's rate > price × (2(c + θ) +
λ_n when the group has no buyable equivalent), i.e. the tax saved pays for the sale, a buy
elsewhere and the hole in the name (a screen of what the LP would do; a name is never
blocked for a loss too small to pay for its trades). In a wash group that
may be bought, a loss lot counts no benefit (τ_l = 0, g_l = 0 in the budget): selling it and
buying back would wash the loss, and the objective must not pay for a loss that would be
disallowed. Group members share the group's factor exposures (index-weighted) and sector
(of the largest member): equivalents are substitutes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ballast_engine.optimizer.problem import BoolArray, FloatArray, IntArray, Prepared
from ballast_engine.optimizer.settings import SolverSettings

INF = np.inf


@dataclass(frozen=True, eq=False)
class Targets:
    weights: FloatArray  # (N,) personalized index t (sums to 1 unless everything excluded)
    whole_sectors_excluded: tuple[int, ...]  # sectors whose names are all excluded


@dataclass(eq=False)
class LinearProgram:
    """The LP in arrays (CSR rows) plus the facts needed to read its solution."""

    var_lb: FloatArray
    var_ub: FloatArray
    objective: FloatArray
    row_lb: FloatArray
    row_ub: FloatArray
    data: FloatArray
    indices: IntArray
    indptr: IntArray
    n: int
    n_lots: int
    n_groups: int
    n_sectors: int
    n_factors: int
    cash_row: int
    gain_row: int | None
    value: float
    target_weights: FloatArray  # (N,) T_i, weights of V
    personalized: Targets
    group_sector: IntArray  # (G,)
    group_exposure: FloatArray  # (G, K)
    harvested: BoolArray  # (N,) name in a harvested wash group
    buyable: BoolArray  # (N,)
    loss_counts: BoolArray  # (L,) the lot's loss is a real benefit if sold
    tax_coefficient: FloatArray  # (L,) tax per share the objective uses

    def block(self, name: str) -> slice:
        """The columns of a variable block: buy, sell, dp, dn, sp, sn, fp, fn."""
        n, lots, g, s, k = self.n, self.n_lots, self.n_groups, self.n_sectors, self.n_factors
        sizes = {"buy": n, "sell": lots, "dp": g, "dn": g, "sp": s, "sn": s, "fp": k, "fn": k}
        start = 0
        for key, size in sizes.items():
            if key == name:
                return slice(start, start + size)
            start += size
        raise KeyError(name)


def personalized_index(prep: Prepared) -> Targets:
    """Index weights with exclusions at zero, their weight redistributed by the client's rule."""
    p = prep.problem
    w = p.index_weights.astype(np.float64)
    keep = ~prep.excluded
    kept = np.where(keep, w, 0.0)
    if not prep.excluded.any():
        return Targets(w.copy(), ())
    n_sectors = len(p.sector_names)
    sector_total = np.bincount(p.sectors, weights=w, minlength=n_sectors)
    sector_kept = np.bincount(p.sectors, weights=kept, minlength=n_sectors)
    has_names = np.bincount(p.sectors, minlength=n_sectors) > 0
    emptied = tuple(
        int(s)
        for s in np.flatnonzero(
            has_names & (np.bincount(p.sectors, weights=keep, minlength=n_sectors) == 0)
        )
    )
    if p.redistribution == "sector":
        freed_in_sector = sector_total - sector_kept
        movable = sector_kept > 0
        share = np.divide(
            kept, sector_kept[p.sectors], out=np.zeros_like(kept), where=movable[p.sectors]
        )
        out = kept + share * freed_in_sector[p.sectors]
        rest = float(freed_in_sector[~movable].sum())
    elif p.redistribution == "equivalence":
        group = prep.equivalence
        in_set = (p.equivalence if p.equivalence is not None else np.full(len(w), -1)) >= 0
        g_total = np.bincount(group, weights=w)
        g_kept = np.bincount(group, weights=kept)
        movable = (g_kept > 0) & np.bincount(group, weights=in_set.astype(float)).astype(bool)
        share = np.divide(kept, g_kept[group], out=np.zeros_like(kept), where=movable[group])
        out = kept + share * (g_total - g_kept)[group]
        rest = float((g_total - g_kept)[~movable].sum())
    else:
        out, rest = kept, float(w.sum() - kept.sum())
    total = float(out.sum())
    if rest > 0 and total > 0:
        out = out + out / total * rest
    return Targets(out, emptied)


def formulate(prep: Prepared, settings: SolverSettings) -> LinearProgram:
    """The LP of one sleeve (see the module docstring)."""
    p = prep.problem
    n, n_lots, n_groups = p.n_names, len(prep.lot_price), prep.n_groups
    n_sectors, n_factors = len(p.sector_names), len(p.factor_names)
    lot_name = p.lots.name
    group = prep.equivalence
    lot_group = group[lot_name]

    value = float(p.cash + prep.shares @ p.prices)
    if value <= 0:
        raise p.error("the sleeve has no value (no cash, no holdings)", "cash")
    beta = p.prices / value
    personal = personalized_index(prep)
    invest = max(value - p.cash_reserve, 0.0) / value
    target = personal.weights * invest
    current = prep.shares * beta
    group_target = np.bincount(group, weights=target, minlength=n_groups)
    group_index = np.bincount(group, weights=p.index_weights, minlength=n_groups)
    group_current = np.bincount(group, weights=current, minlength=n_groups)
    active = group_current - group_target

    # a group's sector: its largest member's; its exposures: index-weighted (else equal)
    order = np.lexsort((-p.index_weights, group))
    first = order[np.r_[0, np.flatnonzero(np.diff(group[order])) + 1]]
    group_sector = p.sectors[first]
    members = np.bincount(group, minlength=n_groups).astype(np.float64)
    mix = np.where(
        group_index[group] > 0,
        p.index_weights / np.where(group_index[group] > 0, group_index[group], 1.0),
        1.0 / members[group],
    )
    group_exposure = np.zeros((n_groups, n_factors))
    np.add.at(group_exposure, group, p.exposures * mix[:, None])

    # wash groups: harvested (no buys), buyable (a loss lot there counts no benefit)
    wash = prep.identical_group
    _, wash_id = np.unique(wash, return_inverse=True)
    lot_loss = prep.gain_per_share < 0
    # a lot is worth harvesting when the tax it saves (at the tax weight) pays for selling it,
    # buying something else and, without a buyable equivalent, the name's tracking
    open_names = ~(prep.excluded | prep.buy_blocked)
    # a group has a buyable equivalent when its open names span two wash groups
    n_wash = int(wash_id.max()) + 1
    pairs = np.unique(group[open_names] * n_wash + wash_id[open_names])
    has_equivalent = np.bincount(pairs // n_wash, minlength=n_groups) >= 2
    trade_cost = p.cost_rate + settings.turnover_penalty
    hole = np.where(has_equivalent[lot_group], 0.0, settings.name_weight)
    worth = settings.tax_weight * -prep.tax_per_share > prep.lot_price * (2 * trade_cost + hole)
    harvest_lot = prep.harvestable & worth & ~prep.sell_blocked & ~prep.excluded[lot_name]
    harvested_wash = np.zeros(n_wash, dtype=bool)
    if settings.harvesting and harvest_lot.any():
        harvested_wash[wash_id[lot_name[harvest_lot]]] = True
    harvested = harvested_wash[wash_id]
    buyable = ~(prep.excluded | prep.buy_blocked | harvested)
    wash_buyable = np.zeros_like(harvested_wash)
    wash_buyable[wash_id[buyable]] = True
    loss_counts = ~wash_buyable[wash_id[lot_name]]
    counted = ~lot_loss | loss_counts
    tax_coefficient = np.where(counted, prep.tax_per_share, 0.0)
    gain_coefficient = np.where(counted, prep.gain_per_share, 0.0)

    # variable bounds and objective, block by block
    forced = prep.excluded[lot_name]
    sell_ub = np.where(prep.sell_blocked & lot_loss & ~forced, 0.0, p.lots.quantity)
    sell_lb = np.where(forced, p.lots.quantity, 0.0)
    pos = settings.position_bound
    sector_index = np.bincount(p.sectors, weights=p.index_weights, minlength=n_sectors)
    sector_target = np.bincount(group_sector, weights=group_target, minlength=n_sectors)
    # sector active against the personalized weights; allowed interval from the index bound
    sector_now = np.bincount(group_sector, weights=active, minlength=n_sectors)
    shift = sector_target - sector_index
    sector_lo = np.minimum(-settings.sector_bound - shift, sector_now)
    sector_hi = np.maximum(settings.sector_bound - shift, sector_now)
    tilt_offset = p.exposures.T @ (target - p.index_weights)
    factor_active = p.exposures.T @ (current - p.index_weights) - settings.tilts
    fb = settings.factor_bound
    var_lb = np.concatenate(
        [
            np.zeros(n),
            sell_lb,
            np.zeros(2 * n_groups),
            np.maximum(sector_lo, 0.0),
            np.maximum(-sector_hi, 0.0),
            np.zeros(2 * n_factors),
        ]
    )
    var_ub = np.concatenate(
        [
            np.where(buyable, INF, 0.0),
            sell_ub,
            np.maximum(pos, np.maximum(active, 0.0)),
            np.maximum(pos, np.maximum(-active, 0.0)),
            np.maximum(sector_hi, 0.0),
            np.maximum(-sector_lo, 0.0),
            np.maximum(fb, np.maximum(factor_active, 0.0)),
            np.maximum(fb, np.maximum(-factor_active, 0.0)),
        ]
    )
    objective = np.concatenate(
        [
            trade_cost * beta,
            trade_cost * beta[lot_name] + settings.tax_weight * tax_coefficient / value,
            np.full(2 * n_groups, settings.name_weight),
            np.full(2 * n_sectors, settings.sector_weight),
            np.full(2 * n_factors, settings.factor_weight),
        ]
    )

    # rows as coordinates (row, column, value), then CSR
    col_buy, col_sell = 0, n
    col_dp = n + n_lots
    col_dn = col_dp + n_groups
    col_sp = col_dn + n_groups
    col_sn = col_sp + n_sectors
    col_fp = col_sn + n_sectors
    col_fn = col_fp + n_factors
    r_sector, r_factor = n_groups, n_groups + n_sectors
    cash_row = r_factor + n_factors
    gain_row = cash_row + 1 if settings.gain_room is not None else None
    n_rows = cash_row + 1 + (gain_row is not None)
    g_idx, s_idx, k_idx = np.arange(n_groups), np.arange(n_sectors), np.arange(n_factors)
    lot_idx, name_idx = np.arange(n_lots), np.arange(n)
    fg = np.repeat(r_factor + k_idx, n_groups)  # factor rows, group-major inside each
    fcols = np.tile(g_idx, n_factors)
    fvals = group_exposure.T.ravel()
    parts_r = [
        group, lot_group, g_idx, g_idx,
        r_sector + group_sector, r_sector + group_sector, r_sector + s_idx, r_sector + s_idx,
        fg, fg, r_factor + k_idx, r_factor + k_idx,
        np.full(n_lots, cash_row), np.full(n, cash_row),
    ]  # fmt: skip
    parts_c = [
        col_buy + name_idx, col_sell + lot_idx, col_dp + g_idx, col_dn + g_idx,
        col_dp + g_idx, col_dn + g_idx, col_sp + s_idx, col_sn + s_idx,
        col_dp + fcols, col_dn + fcols, col_fp + k_idx, col_fn + k_idx,
        col_sell + lot_idx, col_buy + name_idx,
    ]  # fmt: skip
    parts_v = [
        beta, -beta[lot_name], -np.ones(n_groups), np.ones(n_groups),
        np.ones(n_groups), -np.ones(n_groups), -np.ones(n_sectors), np.ones(n_sectors),
        fvals, -fvals, -np.ones(n_factors), np.ones(n_factors),
        beta[lot_name] * (1 - p.cost_rate), -beta * (1 + p.cost_rate),
    ]  # fmt: skip
    if gain_row is not None:
        parts_r.append(np.full(n_lots, gain_row))
        parts_c.append(col_sell + lot_idx)
        parts_v.append(gain_coefficient / value)
    rows = np.concatenate(parts_r)
    cols = np.concatenate(parts_c)
    vals = np.concatenate(parts_v)
    keep = vals != 0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    order = np.argsort(rows * len(var_lb) + cols)  # row-major; each (row, column) once
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])

    sector_rhs = np.zeros(n_sectors)
    factor_rhs = settings.tilts - tilt_offset
    row_lb = np.concatenate([-active, sector_rhs, factor_rhs, [(p.cash_reserve - p.cash) / value]])
    row_ub = np.concatenate([-active, sector_rhs, factor_rhs, [INF]])
    if gain_row is not None:
        row_lb = np.append(row_lb, -INF)
        row_ub = np.append(row_ub, float(settings.gain_room or 0.0) / value)
    return LinearProgram(
        var_lb=var_lb,
        var_ub=var_ub,
        objective=objective,
        row_lb=row_lb,
        row_ub=row_ub,
        data=vals[order],
        indices=cols[order].astype(np.int64),
        indptr=indptr,
        n=n,
        n_lots=n_lots,
        n_groups=n_groups,
        n_sectors=n_sectors,
        n_factors=n_factors,
        cash_row=cash_row,
        gain_row=gain_row,
        value=value,
        target_weights=target,
        personalized=personal,
        group_sector=group_sector,
        group_exposure=group_exposure,
        harvested=harvested,
        buyable=buyable,
        loss_counts=loss_counts,
        tax_coefficient=tax_coefficient,
    )


def complete(lp: LinearProgram, prep: Prepared, buys: FloatArray, sells: FloatArray) -> FloatArray:
    """The full variable vector of a trade list: deviations computed from the positions."""
    p = prep.problem
    beta = p.prices / lp.value
    post = prep.shares + buys - np.bincount(p.lots.name, weights=sells, minlength=lp.n)
    group = prep.equivalence
    active = np.bincount(group, weights=post * beta - lp.target_weights, minlength=lp.n_groups)
    sector_active = np.bincount(lp.group_sector, weights=active, minlength=lp.n_sectors)
    tilt_offset = p.exposures.T @ (lp.target_weights - p.index_weights)
    tilts = lp.row_lb[lp.n_groups + lp.n_sectors : lp.cash_row] + tilt_offset
    factor = lp.group_exposure.T @ active + tilt_offset - tilts
    return np.concatenate(
        [
            buys,
            sells,
            np.maximum(active, 0),
            np.maximum(-active, 0),
            np.maximum(sector_active, 0),
            np.maximum(-sector_active, 0),
            np.maximum(factor, 0),
            np.maximum(-factor, 0),
        ]
    )


def objective_of(lp: LinearProgram, prep: Prepared, buys: FloatArray, sells: FloatArray) -> float:
    """The LP objective of a (rounded) trade list."""
    return float(lp.objective @ complete(lp, prep, buys, sells))
