"""Plain-English settings and the calibration table that turns them into solver settings.

Users answer plain questions; they never see a solver weight. The table (the same in
docs/optimizer.md) is the only place the weights live:

=====================  ============  ===================  =====================
tax sensitivity        tax weight    turnover penalty     what it means
=====================  ============  ===================  =====================
low                    0.25          0.0005 per $ traded  tracking first; tax counts a quarter
medium                 1.0           0.0010               a dollar of tax = a dollar of value
high                   3.0           0.0020               pay little tax, accept more drift
=====================  ============  ===================  =====================

Tracking tolerance ``τ`` ("stay within about 1% of the index": a yearly ex-ante tracking
error) scales the tracking weights and sets the bounds, with ``s = 0.01 / τ``:

* name (equivalence group) active weight: weight ``0.04 s`` per unit of |active|, bound
  ``±τ/2`` (±0.5 point at 1%);
* sector active weight against the index: weight ``0.25 s``, bound ``±2τ`` (±2 points);
* factor active exposure against index + tilt: weight ``0.05 s`` per unit, bound ``±10τ``
  (±0.1 at 1%).

A bound never forces a trade: where the sleeve starts outside it, the bound is where it
starts (a trade may not make it worse). Gain budget: net realized gains this year may not
pass ``gain_budget`` (realized to date counts; losses make room). Harvesting on: names with a
lot past the harvest thresholds may be sold for the loss (and are not bought this run).
Tilts: target active exposures per factor (``{"value": 0.1}``), reached as far as the factor
bound and the other costs allow.

The tracking terms are linear (L1), a proxy for the quadratic tracking error: when an
answer's ex-ante tracking error (factor model) ends more than 10% above the tolerance
("about 1%" accepts 1.1%) and above where the sleeve started, the three tracking weights are
multiplied by 4 and the LP solved again (at most twice); the explanation says so.

If the problem is infeasible, bounds give way in this order (``RELAXATION_ORDER``), each
named in the result's explanation: factor bounds, sector bounds, position bounds, the gain
budget, the cash reserve.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

import numpy as np

from ballast_engine.optimizer.problem import FloatArray, OptimizerInputError, SleeveProblem

Sensitivity = Literal["low", "medium", "high"]


@dataclass(frozen=True, slots=True)
class Calibration:
    tax_weight: float
    turnover_penalty: float


CALIBRATION: dict[str, Calibration] = {
    "low": Calibration(tax_weight=0.25, turnover_penalty=0.0005),
    "medium": Calibration(tax_weight=1.0, turnover_penalty=0.0010),
    "high": Calibration(tax_weight=3.0, turnover_penalty=0.0020),
}
NAME_WEIGHT, SECTOR_WEIGHT, FACTOR_WEIGHT = 0.04, 0.25, 0.05
NAME_BOUND, SECTOR_BOUND, FACTOR_BOUND = 0.5, 2.0, 10.0  # multiples of the tolerance
REFERENCE_TOLERANCE = 0.01
ABOUT = 1.1  # "within about 1%": a tracking error up to 10% above the tolerance is within it
RELAXATION_ORDER: tuple[str, ...] = ("factor", "sector", "position", "gain_budget", "reserve")
DEFAULT_TIME_LIMIT_S = 2.0


@dataclass(frozen=True)
class PlainSettings:
    """What the client or advisor chose, in their words.

    ``tracking_tolerance``: yearly tracking error they accept (0.01 = "about 1%").
    ``gain_budget``: dollars of net realized gains allowed this year (None: no limit).
    ``tilts``: factor name → target active exposure. ``sector_bound`` overrides the sector
    bound the tolerance implies (points of weight, 0.01 = ±1 point).
    """

    tax_sensitivity: Sensitivity = "medium"
    tracking_tolerance: float = 0.01
    gain_budget: Decimal | float | None = None
    harvesting: bool = True
    tilts: Mapping[str, float] = field(default_factory=dict)
    sector_bound: float | None = None
    time_limit_s: float = DEFAULT_TIME_LIMIT_S


@dataclass(frozen=True)
class SolverSettings:
    """The weights and bounds the calibration table gives (fractions of the sleeve)."""

    tax_weight: float
    turnover_penalty: float
    name_weight: float
    sector_weight: float
    factor_weight: float
    position_bound: float
    sector_bound: float
    factor_bound: float
    gain_room: float | None  # dollars of net gains this proposal may realize
    harvesting: bool
    tilts: FloatArray  # (K,)
    time_limit_s: float


def solver_settings(plain: PlainSettings, problem: SleeveProblem) -> SolverSettings:
    """Map plain settings to solver weights and bounds through the calibration table."""
    if plain.tax_sensitivity not in CALIBRATION:
        raise problem.error(f"must be one of {', '.join(CALIBRATION)}", "tax_sensitivity")
    tol = plain.tracking_tolerance
    if not np.isfinite(tol) or not 0.0005 <= tol <= 0.2:
        raise problem.error(
            "must be a yearly tracking error between 0.05% and 20%", "tracking_tolerance"
        )
    tilts = np.zeros(len(problem.factor_names))
    for name, value in plain.tilts.items():
        if name not in problem.factor_names:
            raise OptimizerInputError(
                f"names factor {name!r}, which the risk model does not have "
                f"({', '.join(problem.factor_names) or 'no factors'})",
                account=problem.account_id or None,
                sleeve=problem.sleeve_id,
                field="tilts",
            )
        if not np.isfinite(value) or abs(value) > 2:
            raise problem.error(f"tilt {name!r} must be an exposure between -2 and 2", "tilts")
        tilts[problem.factor_names.index(name)] = value
    room: float | None = None
    if plain.gain_budget is not None:
        budget = float(plain.gain_budget)
        if not np.isfinite(budget) or budget < 0:
            raise problem.error("must be a dollar amount, not negative", "gain_budget")
        room = max(budget - problem.realized_to_date, 0.0)
    if plain.sector_bound is not None and not 0 <= plain.sector_bound <= 1:
        raise problem.error("must be a weight between 0 and 1", "sector_bound")
    if not plain.time_limit_s > 0:
        raise problem.error("must be positive", "time_limit_s")
    cal = CALIBRATION[plain.tax_sensitivity]
    scale = REFERENCE_TOLERANCE / tol
    return SolverSettings(
        tax_weight=cal.tax_weight,
        turnover_penalty=cal.turnover_penalty,
        name_weight=NAME_WEIGHT * scale,
        sector_weight=SECTOR_WEIGHT * scale,
        factor_weight=FACTOR_WEIGHT * scale,
        position_bound=NAME_BOUND * tol,
        sector_bound=SECTOR_BOUND * tol if plain.sector_bound is None else plain.sector_bound,
        factor_bound=FACTOR_BOUND * tol,
        gain_room=room,
        harvesting=plain.harvesting,
        tilts=tilts,
        time_limit_s=plain.time_limit_s,
    )
