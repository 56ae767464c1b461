"""Strategic (multi-model) cash allocation across the sleeves of a UMA.

The steps follow docs/domain.md (Rebalancing):

1. every model outside its band goes to its rebalance point;
2. cash left over (or still owed) goes to / comes from models that are inside their band but
   beyond their rebalance point in the needed direction, highest dollar drift first;
3. while cash remains, the rebalance point moves 1% (of the band's half-width) closer to the
   target at a time, and the cash goes to the model with the highest dollar drift from target;
4. if every model is at target and cash still remains, it is spread by target weight.

A "rebalance point" is ``target ± pct × half-width`` on the side the model drifted to, with
``pct`` = 0 for a *target* range, 100 for *band* and ``interior_pct`` for *interior*.
A model never gives more than it can raise (cash above its reserve plus holdings that are
not do-not-sell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ballast_engine.model import RebalanceRange, Strategy

CENT_TOL = 0.05  # a model less than 5 cents outside its band is not out of band


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


@dataclass(slots=True)
class Allocation:
    deltas: dict[str, float]
    unallocated_after: float  # account cash left (negative: withdrawal not fully funded)
    total_after: float  # account value after the withdrawal / deposit
    states: list[SleeveState]
    steps: list[str]


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
    steps: list[str] = []
    total = sum(s.value for s in states) + pool
    total_pos = total if total > 0 else 1.0

    def cur(s: SleeveState) -> float:
        return s.value + s.delta

    def point(s: SleeveState, pct: float) -> float:
        t = s.target * total_pos
        if cur(s) < t:
            return t - pct / 100.0 * (t - s.lo * total_pos)
        return t + pct / 100.0 * (min(s.hi, 1.0) * total_pos - t)

    def room_give(s: SleeveState) -> float:
        return max(s.capacity + s.delta, 0.0) if s.delta <= 0 else s.capacity + s.delta

    def move(s: SleeveState, amount: float) -> float:
        """Move ``amount`` (signed) into ``s`` within the pool and the sleeve's capacity."""
        nonlocal pool
        if amount > 0:
            if not allow_receive:
                return 0.0
            amount = min(amount, max(pool, 0.0))
        else:
            if not allow_give:
                return 0.0
            limit = room_give(s) if allow_receive else min(room_give(s), max(-pool, 0.0))
            amount = -min(-amount, limit)
        s.delta += amount
        pool -= amount
        return amount

    pct0 = rebalance_range.start_pct()
    if move_models:
        # step 1: out-of-band models to their rebalance point (givers first, so receivers
        # can be funded by them)
        outs = [
            s
            for s in states
            if cur(s) < s.lo * total_pos - CENT_TOL or cur(s) > s.hi * total_pos + CENT_TOL
        ]
        outs.sort(key=lambda s: (cur(s) < s.target * total_pos, s.sleeve_id))
        for s in outs:
            pt = point(s, pct0)
            if cur(s) > pt:
                got = move(s, pt - cur(s))
            else:
                got = pt - cur(s)  # receivers are funded below, once givers have given
                continue
            if got:
                steps.append(f"step 1: {s.sleeve_id} out of band, moves {got:+,.2f}")
        for s in outs:
            pt = point(s, pct0)
            if cur(s) < pt:
                need = pt - cur(s)
                if pool < need and allow_give:
                    _draw(states, outs, need - max(pool, 0.0), pct0, point, cur, move, total_pos)
                got = move(s, need)
                if got:
                    steps.append(f"step 1: {s.sleeve_id} out of band, moves {got:+,.2f}")
        # step 2: in-band models beyond their rebalance point in the needed direction
        _serve(states, pct0, point, cur, move, lambda: pool, total_pos, steps, "step 2")
        # step 3: the rebalance point moves 1% closer to target at a time
        pct = math.ceil(pct0) - 1
        while pct >= 0 and abs(pool) > CENT_TOL:
            _serve(states, float(pct), point, cur, move, lambda: pool, total_pos, steps, "step 3")
            pct -= 1
    # step 4: everyone is at target (or the pool is tactical): spread by target weight
    for _ in range(3):
        if abs(pool) <= CENT_TOL:
            break
        if pool > 0 and allow_receive:
            tw = sum(s.target for s in states) or 1.0
            amt = pool
            for s in states:
                move(s, amt * s.target / tw)
            steps.append(f"step 4: {amt:,.2f} spread by target weight")
        elif pool < 0 and allow_give:
            givers = [s for s in states if room_give(s) > 0.005]
            tw = sum(s.target for s in givers) or float(len(givers)) or 1.0
            amt = -pool
            for s in givers:
                share = s.target / tw if sum(x.target for x in givers) > 0 else 1.0 / len(givers)
                move(s, -amt * share)
            steps.append(f"step 4: {amt:,.2f} taken by target weight")
        else:
            break
    # round to cents
    deltas: dict[str, float] = {}
    for s in states:
        deltas[s.sleeve_id] = round(s.delta, 2)
        s.delta = deltas[s.sleeve_id]
    unalloc = round(total - sum(s.value + s.delta for s in states), 2)
    return Allocation(deltas, unalloc, total, states, steps)


def _serve(states, pct, point, cur, move, pool_fn, total_pos, steps, label) -> None:
    """Move models beyond their point (at ``pct``) toward it, highest dollar drift first."""
    for _ in range(len(states) + 1):
        pool = pool_fn()
        if abs(pool) <= CENT_TOL:
            return
        if pool > 0:
            cands = [s for s in states if cur(s) < point(s, pct) - 1e-9]
            drift = {s.sleeve_id: s.target * total_pos - cur(s) for s in cands}
        else:
            cands = [s for s in states if cur(s) > point(s, pct) + 1e-9]
            drift = {s.sleeve_id: cur(s) - s.target * total_pos for s in cands}
        cands = [s for s in cands if drift[s.sleeve_id] > 1e-9]
        if not cands:
            return
        s = max(cands, key=lambda s: (drift[s.sleeve_id], s.sleeve_id))
        got = move(s, point(s, pct) - cur(s))
        if not got:
            return
        steps.append(f"{label} (point {pct:g}%): {s.sleeve_id} moves {got:+,.2f}")


def _draw(states, outs, need, pct0, point, cur, move, total_pos) -> None:
    """Fund out-of-band receivers from in-band models above their point, highest drift first,
    then from models above target (point moving toward target), as step 2/3 would."""
    del outs
    pct = pct0
    while need > CENT_TOL and pct >= 0:
        cands = [s for s in states if cur(s) > point(s, pct) + 1e-9]
        cands.sort(key=lambda s: (-(cur(s) - s.target * total_pos), s.sleeve_id))
        for s in cands:
            if need <= CENT_TOL:
                break
            got = -move(s, -min(need, cur(s) - point(s, pct)))
            need -= got
        pct = math.ceil(pct) - 1 if pct == pct0 else pct - 1
