"""``optimize``: build the LP, solve it with GLOP, relax what must give way, round, explain.

The LP is loaded into OR-Tools in one call from CSR arrays
(``ModelBuilderHelper.fill_model_from_sparse_data``, with scipy's matrix type), never one call
per row or coefficient (that costs ~3 ms more per 500-name sleeve). Infeasible: bounds give
way in ``settings.RELAXATION_ORDER``, then the ones that were not needed are tightened again,
so the explanation names only bounds that had to give. A solver failure or time-out falls
back to the rule engine (``optimizer.fallback``), and the result says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from ortools.linear_solver.python import model_builder_helper as mbh
from scipy.sparse import csr_matrix

from ballast_engine.optimizer.fallback import rule_engine_result
from ballast_engine.optimizer.formulation import INF, LinearProgram, formulate
from ballast_engine.optimizer.problem import FloatArray, Prepared, SleeveProblem, prepare
from ballast_engine.optimizer.result import (
    OptimizedSleeve,
    Relaxation,
    finish,
    tracking_error,
)
from ballast_engine.optimizer.rounding import Rounded, cash_after, round_trades
from ballast_engine.optimizer.settings import (
    ABOUT,
    RELAXATION_ORDER,
    PlainSettings,
    SolverSettings,
    solver_settings,
)

TRACKING_RETRIES, TRACKING_STEP = 2, 4
# GLOP's dual simplex without its presolve: 10.4 ms median CPU on the 500-name bench LPs
# against 26.5 ms with the defaults (8 sleeves, best of 3; the presolve finds little to remove
# in bounded lot columns). On numerical trouble GLOP runs once more with its defaults.
GLOP_PARAMETERS = "use_preprocessing:false use_dual_simplex:true"


@dataclass(frozen=True, slots=True)
class LpOutcome:
    status: str  # optimal | infeasible | failed
    x: FloatArray
    detail: str


def load(lp: LinearProgram) -> mbh.ModelBuilderHelper:
    """The LP as an OR-Tools model, loaded in one call from its CSR arrays."""
    helper = mbh.ModelBuilderHelper()
    matrix = csr_matrix((lp.data, lp.indices, lp.indptr), shape=(len(lp.row_lb), len(lp.var_lb)))
    helper.fill_model_from_sparse_data(
        lp.var_lb, lp.var_ub, lp.objective, lp.row_lb, lp.row_ub, matrix
    )
    return helper


def solve_lp(lp: LinearProgram, time_limit_s: float) -> LpOutcome:
    """Solve the LP with GLOP (again with GLOP's defaults if the fast settings fail)."""
    model = load(lp)
    started = time.perf_counter()
    status = mbh.SolveStatus.NOT_SOLVED
    for parameters in (GLOP_PARAMETERS, ""):
        left = time_limit_s - (time.perf_counter() - started)
        if left <= 0:
            break
        solver = mbh.ModelSolverHelper("glop")
        solver.set_time_limit_in_seconds(left)
        solver.set_solver_specific_parameters(parameters)
        solver.solve(model)
        status = solver.status()
        if status == mbh.SolveStatus.OPTIMAL:
            return LpOutcome("optimal", np.asarray(solver.variable_values()), "")
        if status == mbh.SolveStatus.INFEASIBLE:
            return LpOutcome("infeasible", np.zeros(0), "")
    return LpOutcome("failed", np.zeros(0), f"GLOP stopped with {status.name}")


def _names(prep: Prepared, mask: np.ndarray, limit: int = 5) -> str:
    names = [str(s) for s in prep.problem.names[mask]]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _why_sector(
    prep: Prepared, lp: LinearProgram, plain: PlainSettings, solver: SolverSettings
) -> str:
    p = prep.problem
    beta = p.prices / lp.value
    sell = lp.block("sell")
    fixed = (lp.var_ub[sell] == 0) * p.lots.quantity
    unsellable = np.bincount(p.lots.name, weights=fixed, minlength=lp.n)
    kept = np.where(prep.excluded, 0.0, prep.shares)
    n_s = lp.n_sectors
    can_buy = np.bincount(p.sectors, weights=lp.buyable.astype(float), minlength=n_s) > 0
    most = np.where(can_buy, INF, np.bincount(p.sectors, weights=kept * beta, minlength=n_s))
    least = np.bincount(p.sectors, weights=unsellable * beta, minlength=n_s)
    index = np.bincount(p.sectors, weights=p.index_weights, minlength=n_s)
    now = np.bincount(p.sectors, weights=prep.shares * beta, minlength=n_s) - index
    bound = solver.sector_bound
    low, high = np.minimum(-bound, now), np.maximum(bound, now)
    source = (
        "set directly"
        if plain.sector_bound is not None
        else f"from the tracking tolerance of {plain.tracking_tolerance:.1%}"
    )
    setting = f"sector bound ±{_pt(bound)} points ({source})"
    parts = []
    for s in np.flatnonzero((most - index < low - 1e-9) | (least - index > high + 1e-9)):
        in_s = p.sectors == s
        causes = []
        excluded = prep.excluded & in_s
        if excluded.any():
            rule = p.redistribution.replace("_", " ")
            causes.append(
                f"the client excludes {_names(prep, excluded)} (weight redistributed {rule})"
            )
        blocked = prep.buy_blocked & in_s & ~prep.excluded
        if blocked.any():
            causes.append(f"the wash-sale rule blocks buying {_names(prep, blocked)}")
        harvested = lp.harvested & in_s & ~prep.excluded & ~prep.buy_blocked
        if harvested.any():
            causes.append(f"{_names(prep, harvested)} are being harvested")
        reach = (
            f"at most {_pct(most[s])}"
            if most[s] - index[s] < low[s]
            else f"at least {_pct(least[s])}"
        )
        parts.append(
            f"{p.sector_names[s]} (index weight {_pct(index[s])}) can hold {reach} because "
            + " and ".join(causes or ["of what may be bought and sold"])
        )
    if not parts:
        return f"the {setting} could not be met together with the other bounds"
    return "; ".join(parts) + f", which the {setting} does not allow: the sector bound gave way"


def _why_position(prep: Prepared, lp: LinearProgram, plain: PlainSettings) -> str:
    return (
        f"no trade list keeps every name within ±{_pt(lp.var_ub[lp.block('dp')].min())} points "
        f"of its target (from the tracking tolerance of {plain.tracking_tolerance:.1%}) while "
        "meeting the other bounds: the position bounds gave way"
    )


def _why_gain(prep: Prepared, lp: LinearProgram, solver: SolverSettings) -> str:
    p = prep.problem
    forced = prep.excluded[p.lots.name]
    forced_gain = float((prep.gain_per_share * p.lots.quantity)[forced].sum())
    room = solver.gain_room or 0.0
    if forced_gain > room:
        return (
            f"selling the excluded names {_names(prep, prep.excluded)} realizes "
            f"${forced_gain:,.2f} of gains, more than the ${room:,.2f} left in this year's gain "
            "budget: the gain budget gave way for them"
        )
    return (
        f"the trades the other bounds need realize more than the ${room:,.2f} left in the gain "
        "budget: the gain budget gave way"
    )


def _why_reserve(prep: Prepared) -> str:
    p = prep.problem
    return (
        f"cash of ${p.cash:,.2f} is below the reserve of ${p.cash_reserve:,.2f} and the sales "
        "allowed cannot fund it: the reserve gave way (cash is never spent below zero)"
    )


def _why_factor(prep: Prepared, lp: LinearProgram, plain: PlainSettings) -> str:
    tilts = ", ".join(f"{k} {v:+.2f}" for k, v in plain.tilts.items()) or "no tilt"
    return (
        f"the factor exposures ({tilts}) cannot all stay within "
        f"±{lp.var_ub[lp.block('fp')].min():.3f} of index + tilt with the names that may be "
        "traded: the factor bounds gave way"
    )


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _pt(x: float) -> str:
    return f"{x * 100:.2f}"


def _set(
    lp: LinearProgram, kind: str, prep: Prepared, relax: bool, original: LinearProgram
) -> None:
    blocks = {"factor": ("fp", "fn"), "sector": ("sp", "sn"), "position": ("dp", "dn")}
    if kind in blocks:
        for b in blocks[kind]:
            lp.var_ub[lp.block(b)] = INF if relax else original.var_ub[lp.block(b)]
            lp.var_lb[lp.block(b)] = 0.0 if relax else original.var_lb[lp.block(b)]
    elif kind == "gain_budget" and lp.gain_row is not None:
        lp.row_ub[lp.gain_row] = INF if relax else original.row_ub[lp.gain_row]
    elif kind == "reserve":
        p = prep.problem
        lp.row_lb[lp.cash_row] = -p.cash / lp.value if relax else original.row_lb[lp.cash_row]


def _copy(lp: LinearProgram) -> LinearProgram:
    return replace(
        lp,
        var_lb=lp.var_lb.copy(),
        var_ub=lp.var_ub.copy(),
        row_lb=lp.row_lb.copy(),
        row_ub=lp.row_ub.copy(),
    )


def _solve_relaxing(
    prep: Prepared, lp: LinearProgram, plain: PlainSettings, solver: SolverSettings
) -> tuple[LpOutcome, list[Relaxation]]:
    """Solve; when infeasible, open bounds in the documented order, then close again those
    that were not needed; return the outcome and the bounds that gave way, with reasons."""
    outcome = solve_lp(lp, solver.time_limit_s)
    if outcome.status != "infeasible":
        return outcome, []
    original, work = lp, _copy(lp)
    opened: list[str] = []
    for kind in RELAXATION_ORDER:
        _set(work, kind, prep, True, original)
        opened.append(kind)
        outcome = solve_lp(work, solver.time_limit_s)
        if outcome.status != "infeasible":
            break
    if outcome.status != "optimal":
        return outcome, []
    for kind in opened[:-1]:  # the last one was needed; try closing the others
        _set(work, kind, prep, False, original)
        trial = solve_lp(work, solver.time_limit_s)
        if trial.status == "optimal":
            outcome = trial
            opened.remove(kind)
        else:
            _set(work, kind, prep, True, original)
    why = {
        "factor": lambda: _why_factor(prep, original, plain),
        "sector": lambda: _why_sector(prep, original, plain, solver),
        "position": lambda: _why_position(prep, original, plain),
        "gain_budget": lambda: _why_gain(prep, original, solver),
        "reserve": lambda: _why_reserve(prep),
    }
    return outcome, [Relaxation(kind, why[kind]()) for kind in opened]


@dataclass(frozen=True, eq=False)
class Candidate:
    """A rounded answer before its trades are written (a retry may replace it)."""

    lp: LinearProgram
    rounded: Rounded
    relaxations: tuple[Relaxation, ...]
    tracking_error_after: float
    timings: dict[str, float]


def optimize(problem: SleeveProblem, settings: PlainSettings) -> OptimizedSleeve:
    """Trades for one direct-indexed sleeve: tracking, tax, costs and turnover traded off."""
    prep = prepare(problem)
    solver = solver_settings(settings, problem)
    before = tracking_error(prep, prep.shares, problem.cash)
    limit = max(settings.tracking_tolerance * ABOUT, before)
    lead = ""
    spent = 0.0
    for attempt in range(TRACKING_RETRIES + 1):
        found = _attempt(prep, settings, solver, lead)
        if isinstance(found, OptimizedSleeve):
            return found
        # the LP's L1 tracking is a proxy: if the ex-ante tracking error ends above about
        # the tolerance (and above where it started), tracking weighs more and the LP runs again
        if found.tracking_error_after <= limit or attempt == TRACKING_RETRIES:
            break
        spent += sum(found.timings.values())
        lead = (
            f"Tracking weighed {TRACKING_STEP ** (attempt + 1)}x more: a first answer's tracking "
            f"error ({found.tracking_error_after:.2%}) was above the tolerance of "
            f"{settings.tracking_tolerance:.2%}."
        )
        solver = replace(
            solver,
            name_weight=solver.name_weight * TRACKING_STEP,
            sector_weight=solver.sector_weight * TRACKING_STEP,
            factor_weight=solver.factor_weight * TRACKING_STEP,
        )
    relaxed = ", ".join(r.bound for r in found.relaxations)
    timings = dict(found.timings)
    if spent:
        timings["previous"] = spent
    started = time.perf_counter()
    result = finish(
        prep,
        found.lp,
        found.rounded.buys,
        found.rounded.sells,
        solver_name="glop",
        status=f"optimal after relaxing {relaxed}" if found.relaxations else "optimal",
        relaxations=found.relaxations,
        notices=found.rounded.notices,
        lead=lead,
        timings=timings,
        tracking=(before, found.tracking_error_after),
    )
    result.timings_ms["result"] = (time.perf_counter() - started) * 1e3
    return result


def _attempt(
    prep: Prepared, settings: PlainSettings, solver: SolverSettings, lead: str
) -> Candidate | OptimizedSleeve:
    started = time.perf_counter()
    lp = formulate(prep, solver)
    built = time.perf_counter()
    outcome, relaxations = _solve_relaxing(prep, lp, settings, solver)
    solved = time.perf_counter()
    if outcome.status != "optimal":
        reason = (
            "no trade list meets even the relaxed bounds"
            if outcome.status == "infeasible"
            else outcome.detail
        )
        return rule_engine_result(
            prep,
            lp,
            settings,
            f"{lead} The optimizer could not answer ({reason}); "
            "the rule engine proposed these trades instead.".strip(),
        )
    gain_open = any(r.bound == "gain_budget" for r in relaxations)
    reserve_open = any(r.bound == "reserve" for r in relaxations)
    rounded = round_trades(
        prep,
        lp,
        outcome.x[lp.block("buy")],
        outcome.x[lp.block("sell")],
        gain_room=None if gain_open else solver.gain_room,
        reserve=0.0 if reserve_open else prep.problem.cash_reserve,
    )
    rounded_at = time.perf_counter()
    post = (
        prep.shares
        + rounded.buys
        - np.bincount(prep.problem.lots.name, weights=rounded.sells, minlength=lp.n)
    )
    return Candidate(
        lp=lp,
        rounded=rounded,
        relaxations=tuple(relaxations),
        tracking_error_after=tracking_error(
            prep, post, cash_after(prep, rounded.buys, rounded.sells)
        ),
        timings={
            "build": (built - started) * 1e3,
            "solve": (solved - built) * 1e3,
            "round": (rounded_at - solved) * 1e3,
        },
    )
