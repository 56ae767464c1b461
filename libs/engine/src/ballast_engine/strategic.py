"""Strategic (multi-model) cash allocation across the sleeves of a UMA.

The steps follow docs/domain.md (Rebalancing) and the iterative approach of seed 003:

1. every model outside its band goes to its rebalance point;
2. cash left over (or still owed) goes to / comes from models that are inside their band but
   beyond their rebalance point in the needed direction, farthest from target first;
3. the cash still left goes in passes of one percentage point of the account value: each pass
   goes to the model farthest below its strategy target, measured in points of the account
   (target weight − current weight; not relative drift, not pro rata), and the choice is made
   again after every pass. A pass moves the smallest of 1% of the account, the cash left and
   the model's distance to its target, so no model passes its target here. Cash still owed
   (a withdrawal) is taken the same way from the model farthest above its target, as far as
   it can give;
4. if every model is at target and cash still remains, it is spread by target weight.

The seed also lets a model overshoot its target within its band when that serves the tax
objective or minimum trade sizes; that is not done here (the tactical and tax-aware layers
work inside each sleeve after this allocation).

A "rebalance point" is ``target ± pct × half-width`` on the side the model drifted to, with
``pct`` = 0 for a *target* range, 100 for *band* and ``interior_pct`` for *interior*.
A model never gives more than it can raise (cash above its reserve plus holdings that are
not do-not-sell). An out-of-band model that must receive more than the out-of-band givers
gave is funded by step 2's rule and then by passes of step 3 (farthest above target first).
Every move is recorded as an ``AllocationStep``.

"Farthest from target" is one rule wherever a step chooses (``farthest``): the largest
distance to target in dollars; distances within half a cent are equal, and among equals the
lowest sleeve id goes first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ballast_engine.model import RebalanceRange, Strategy

CENT_TOL = 0.05  # a model less than 5 cents outside its band is not out of band
TIE_TOL = 0.005  # distances to target closer than half a cent are equal
PASS_POINTS = 0.01  # one pass of step 3 moves at most 1% of the account value
_MAX_PASSES = 10_000  # a safety net: passes end long before (see _pass)


@dataclass(slots=True)
class SleeveState:
    sleeve_id: str
    model_id: str
    value: float  # current sleeve value (holdings + sleeve cash)
    capacity: float  # most it can give (cash above reserve + sellable holdings)
    target: float = 0.0  # strategy weight
    lo: float = 0.0
    hi: float = 1.0
    delta: float = 0.0  # cash received (+) or given (−)


@dataclass(frozen=True, slots=True)
class AllocationStep:
    """One move of the allocation: ``sleeve_id`` receives (+) or gives (−) ``amount``.

    ``step`` is the numbered step of the module docstring; ``gap`` is the sleeve's target
    weight minus its weight in the account just before the move (what a pass of
    step 3 chose it by) as a weight (0.015 = 1.5 points); ``point_pct`` the rebalance point
    of steps 1 and 2 (None otherwise).
    """

    step: int
    sleeve_id: str
    amount: float
    gap: float
    point_pct: float | None = None

    @property
    def text(self) -> str:
        where = "below" if self.gap >= 0 else "above"
        if self.step == 1:
            what = "out of band"
        elif self.step == 2:
            what = f"beyond its rebalance point ({self.point_pct:g}% of the way to the band)"
        elif self.step == 3:
            what = f"{abs(self.gap) * 100:.2f} points {where} its target, the farthest"
        else:
            what = "share by target weight"
        return f"step {self.step}: {self.sleeve_id} {what}, moves {self.amount:+,.2f}"


@dataclass(slots=True)
class Allocation:
    deltas: dict[str, float]
    unallocated_after: float  # account cash left (negative: withdrawal not fully funded)
    total_after: float  # account value after the withdrawal / deposit
    states: list[SleeveState]
    steps: list[AllocationStep]


def farthest(candidates: Iterable[tuple[float, SleeveState]]) -> tuple[float, SleeveState] | None:
    """The candidate (distance to target, sleeve) farthest from its target; distances within
    ``TIE_TOL`` are equal and the lowest sleeve id among equals wins. None when there is none."""
    ranked = list(candidates)
    if not ranked:
        return None
    top = max(d for d, _ in ranked)
    return min(((d, s) for d, s in ranked if d >= top - TIE_TOL), key=lambda c: c[1].sleeve_id)


def farthest_first(candidates: Iterable[tuple[float, SleeveState]]) -> list[SleeveState]:
    """The sleeves in the order ``farthest`` would choose them, one after another."""
    left = list(candidates)
    order: list[SleeveState] = []
    while (chosen := farthest(left)) is not None:
        order.append(chosen[1])
        left = [c for c in left if c[1] is not chosen[1]]
    return order


def implicit_strategy(states: list[SleeveState]) -> None:
    """Without a strategy (or in tactical scope) current sleeve weights are the targets."""
    tot = sum(max(s.value, 0.0) for s in states)
    n = len(states)
    for s in states:
        s.target = max(s.value, 0.0) / tot if tot > 0 else 1.0 / n
        s.lo, s.hi = 0.0, math.inf


def apply_strategy(states: list[SleeveState], strategy: Strategy) -> None:
    by_model = {e.model_id: e for e in strategy.entries}
    for s in states:
        e = by_model[s.model_id]
        s.target = e.weight
        s.lo, s.hi = e.band.bounds(e.weight)


def allocate(
    states: list[SleeveState],
    *,
    pool: float,
    rebalance_range: RebalanceRange,
    allow_give: bool = True,
    allow_receive: bool = True,
    move_models: bool = True,
) -> Allocation:
    """Decide the cash each sleeve receives or gives.

    Args:
        states: sleeves with value, capacity, target weight and band (``apply_strategy`` or
            ``implicit_strategy`` first).
        pool: unallocated account cash minus the withdrawal (negative: cash is owed).
        rebalance_range: where a moved model stops.
        allow_give / allow_receive: restrict the direction (raise cash gives only, invest
            cash receives only).
        move_models: False skips steps 1–3 (tactical scope: only the pool is spread).
    """
    a = _Allocator(states, pool, allow_give, allow_receive)
    if move_models:
        pct0 = rebalance_range.start_pct()
        a.out_of_band(pct0)
        a.serve_beyond_point(pct0)
        a.passes_to_farthest()
    a.spread_by_target_weight()
    return a.result()


class _Allocator:
    """The running state of one allocation: sleeves, the pool and the steps taken."""

    def __init__(
        self, states: list[SleeveState], pool: float, allow_give: bool, allow_receive: bool
    ) -> None:
        self.states = states
        self.pool = pool
        self.allow_give = allow_give
        self.allow_receive = allow_receive
        self.total = sum(s.value for s in states) + pool
        self.total_pos = self.total if self.total > 0 else 1.0
        # a pass is 1% of the account after the flows (of the sleeves when that is not positive)
        base = self.total if self.total > 0 else sum(max(s.value, 0.0) for s in states)
        self.pass_size = PASS_POINTS * base
        self.steps: list[AllocationStep] = []

    # -- measures ---------------------------------------------------------------------------

    def cur(self, s: SleeveState) -> float:
        return s.value + s.delta

    def gap(self, s: SleeveState) -> float:
        """Dollars the sleeve is below its target (negative: above)."""
        return s.target * self.total_pos - (s.value + s.delta)

    def point(self, s: SleeveState, pct: float) -> float:
        t = s.target * self.total_pos
        if self.cur(s) < t:
            return t - pct / 100.0 * (t - s.lo * self.total_pos)
        return t + pct / 100.0 * (min(s.hi, 1.0) * self.total_pos - t)

    def room_give(self, s: SleeveState) -> float:
        return max(s.capacity + s.delta, 0.0) if s.delta <= 0 else s.capacity + s.delta

    # -- moving cash ------------------------------------------------------------------------

    def move(self, s: SleeveState, amount: float) -> float:
        """Move ``amount`` (signed) into ``s`` within the pool and the sleeve's capacity."""
        if amount > 0:
            if not self.allow_receive:
                return 0.0
            amount = min(amount, max(self.pool, 0.0))
        else:
            if not self.allow_give:
                return 0.0
            limit = self.room_give(s)
            if not self.allow_receive:
                limit = min(limit, max(-self.pool, 0.0))
            amount = -min(-amount, limit)
        s.delta += amount
        self.pool -= amount
        return amount

    def record(
        self, step: int, s: SleeveState, amount: float, gap: float, pct: float | None = None
    ) -> None:
        self.steps.append(AllocationStep(step, s.sleeve_id, amount, gap / self.total_pos, pct))

    # -- step 1 -----------------------------------------------------------------------------

    def out_of_band(self, pct0: float) -> None:
        """Out-of-band models to their rebalance point: givers first, so receivers can be
        funded by them; a receiver still short draws on the in-band models (``_draw``)."""
        tot = self.total_pos
        outs = [
            s
            for s in self.states
            if self.cur(s) < s.lo * tot - CENT_TOL or self.cur(s) > s.hi * tot + CENT_TOL
        ]
        outs.sort(key=lambda s: (self.cur(s) < s.target * tot, s.sleeve_id))
        for s in outs:
            pt = self.point(s, pct0)
            if self.cur(s) > pt:
                gap = self.gap(s)
                got = self.move(s, pt - self.cur(s))
                if got:
                    self.record(1, s, got, gap, pct0)
        for s in outs:
            pt = self.point(s, pct0)
            if self.cur(s) < pt:
                need = pt - self.cur(s)
                if self.pool < need and self.allow_give:
                    self._draw(need - max(self.pool, 0.0), pct0)
                gap = self.gap(s)
                got = self.move(s, need)
                if got:
                    self.record(1, s, got, gap, pct0)

    def _draw(self, need: float, pct0: float) -> None:
        """Fund an out-of-band receiver: in-band models above their point give down to it,
        farthest above target first (step 2's rule), then passes take from the model farthest
        above its target (step 3's rule)."""
        above = [s for s in self.states if self.cur(s) > self.point(s, pct0) + 1e-9]
        for s in farthest_first((-self.gap(s), s) for s in above):
            if need <= CENT_TOL:
                return
            gap = self.gap(s)
            got = -self.move(s, -min(need, self.cur(s) - self.point(s, pct0)))
            if got:
                self.record(1, s, -got, gap, pct0)
            need -= got
        for _ in range(_MAX_PASSES):
            if need <= CENT_TOL:
                return
            got = -self._pass(-1.0, need, step=1)
            if got <= 0:
                return
            need -= got

    # -- step 2 -----------------------------------------------------------------------------

    def serve_beyond_point(self, pct: float) -> None:
        """Move models beyond their point (at ``pct``) toward it, farthest from target first."""
        for _ in range(len(self.states) + 1):
            pool = self.pool
            if abs(pool) <= CENT_TOL:
                return
            if pool > 0:
                beyond = [s for s in self.states if self.cur(s) < self.point(s, pct) - 1e-9]
            else:
                beyond = [s for s in self.states if self.cur(s) > self.point(s, pct) + 1e-9]
            direction = 1.0 if pool > 0 else -1.0
            chosen = farthest((d, s) for s in beyond if (d := direction * self.gap(s)) > 1e-9)
            if chosen is None:
                return
            s = chosen[1]
            gap = self.gap(s)
            got = self.move(s, self.point(s, pct) - self.cur(s))
            if not got:
                return
            self.record(2, s, got, gap, pct)

    # -- step 3 -----------------------------------------------------------------------------

    def passes_to_farthest(self) -> None:
        """Passes of 1% of the account to (or from) the model farthest from its target."""
        for _ in range(_MAX_PASSES):
            pool = self.pool
            if abs(pool) <= CENT_TOL:
                return
            if (pool > 0 and not self.allow_receive) or (pool < 0 and not self.allow_give):
                return
            if not self._pass(1.0 if pool > 0 else -1.0, abs(pool), step=3):
                return

    def _pass(self, direction: float, left: float, *, step: int) -> float:
        """One pass: ``direction`` +1 gives to the sleeve farthest below target, −1 takes from
        the one farthest above (as far as it can give); at most 1% of the account, ``left``
        and the distance to target. Returns the signed amount moved (0: no candidate).

        Passes end: each moves a whole 1%, or ends the cash left, or brings a sleeve to its
        target (or to the end of what it can give), after which it is never chosen again."""
        chosen = farthest(
            (dist, s)
            for s in self.states
            if (dist := direction * self.gap(s)) > TIE_TOL
            and (direction > 0 or self.room_give(s) > TIE_TOL)
        )
        if chosen is None:
            return 0.0
        best_gap, best = chosen
        gap = self.gap(best)
        amount = min(self.pass_size, left, best_gap)
        if direction < 0:
            amount = min(amount, self.room_give(best))
        got = self.move(best, direction * amount)
        if got:
            self.record(step, best, got, gap)
        return got

    # -- step 4 -----------------------------------------------------------------------------

    def spread_by_target_weight(self) -> None:
        """Everyone is at target (or the pool is tactical): spread the rest by target weight."""
        for _ in range(3):
            pool = self.pool
            if abs(pool) <= CENT_TOL:
                return
            if pool > 0 and self.allow_receive:
                tw = sum(s.target for s in self.states) or 1.0
                for s in self.states:
                    gap = self.gap(s)
                    got = self.move(s, pool * s.target / tw)
                    if got:
                        self.record(4, s, got, gap)
            elif pool < 0 and self.allow_give:
                givers = [s for s in self.states if self.room_give(s) > 0.005]
                tw = sum(s.target for s in givers) or float(len(givers)) or 1.0
                by_target = sum(x.target for x in givers) > 0
                for s in givers:
                    share = s.target / tw if by_target else 1.0 / len(givers)
                    gap = self.gap(s)
                    got = self.move(s, pool * share)
                    if got:
                        self.record(4, s, got, gap)
            else:
                return

    def result(self) -> Allocation:
        """Deltas rounded to cents, and what is left unallocated."""
        deltas: dict[str, float] = {}
        for s in self.states:
            deltas[s.sleeve_id] = round(s.delta, 2)
            s.delta = deltas[s.sleeve_id]
        unalloc = round(self.total - sum(s.value + s.delta for s in self.states), 2)
        return Allocation(deltas, unalloc, self.total, self.states, self.steps)
