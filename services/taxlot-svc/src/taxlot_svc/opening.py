"""Opening balances: check a request and turn it into the lots it opens. Pure, no I/O.

Every problem is collected (not just the first) and named by its path in the request,
e.g. ``positions[2].lots[0].cost_basis`` or, in a batch, ``accounts[7].cash``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from ballast_common.errors import FieldProblem

from taxlot_svc.schemas import ACCOUNT_ID_PATTERN, HoldingsIn, LotIn, PositionIn

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9.\-]{1,16}$")
_ACCOUNT_ID = re.compile(ACCOUNT_ID_PATTERN)
CENTS = 2
# A date may be one day ahead of UTC's today: the caller's local date east of Greenwich.
FUTURE_SLACK = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class _Lot:
    quantity: Decimal
    cost_basis: Decimal
    acquired_on: date
    sleeve: str
    path: str  # where the request states it (named by problems)


@dataclass(frozen=True, slots=True)
class PlannedLot:
    lot_id: str
    symbol: str
    quantity: Decimal
    cost_basis: Decimal
    acquired_on: date
    sleeve: str = ""  # '' = the account's own


def action_cutoff(effective_on: date, as_of: date) -> date | None:
    """The corporate-action rule of opening balances: an opening states holdings as of its
    date, after every action up to that date, so a recorded action dated on or before
    ``as_of`` would be applied a second time (by a replay) to the lots of its security
    acquired before it. Returns the date before which such lots are refused (None: the
    action comes after ``as_of`` and concerns no lot of this opening)."""
    return effective_on if effective_on <= as_of else None


def action_problem(action_id: str, kind: str, symbol: str, effective_on: date, as_of: date) -> str:
    """What is wrong with an opening lot :func:`action_cutoff` refuses."""
    return (
        f"corporate action {action_id} ({kind} of {symbol} on {effective_on}) falls between "
        f"a lot's acquisition and as_of {as_of}: state the opening balance as of a date "
        f"before {effective_on}"
    )


def decimals(value: Decimal) -> int:
    """How many digits ``value`` has after the decimal point (0 for integers)."""
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: NaN and infinities are refused upstream
    return max(0, -exponent)


def check_account_id(account_id: str, path: str) -> list[FieldProblem]:
    if _ACCOUNT_ID.match(account_id):
        return []
    return [FieldProblem(path, "must be 1-64 letters, digits, '_', '.' or '-'")]


def plan_opening(
    body: HoldingsIn, today: date, prefix: str = ""
) -> tuple[list[PlannedLot], list[FieldProblem]]:
    """The lots an opening balance creates, and every problem with it (empty when valid).

    Rules: cash is a non-negative amount in cents; each position has a valid symbol that
    appears once, and either ``quantity``/``cost_basis``/``acquired_on`` (one lot) or a
    non-empty ``lots`` list (whose sums must equal ``quantity``/``cost_basis`` when those
    are also given); quantities and bases are positive, bases in cents; no date is later
    than ``as_of``, and ``as_of`` is not in the future. Sleeves (a UMA's) are all or
    nothing: once a lot or ``sleeve_cash`` names a sleeve, every lot names its sleeve; each
    sleeve's cash is non-negative cents, stated once, and together at most ``cash``.
    """
    problems: list[FieldProblem] = []
    if body.as_of > today + FUTURE_SLACK:
        problems.append(FieldProblem(f"{prefix}as_of", f"{body.as_of} is in the future"))
    problems += _money(body.cash, f"{prefix}cash", allow_zero=True)
    problems += _sleeve_cash(body, prefix)
    planned: list[PlannedLot] = []
    stated: list[_Lot] = []
    seen: dict[str, int] = {}
    for j, position in enumerate(body.positions):
        path = f"{prefix}positions[{j}]"
        symbol = position.symbol
        if not SYMBOL_PATTERN.match(symbol):
            problems.append(FieldProblem(f"{path}.symbol", "must be 1-16 of A-Z, 0-9, '.' or '-'"))
        elif symbol in seen:
            problems.append(
                FieldProblem(
                    f"{path}.symbol", f"{symbol} already given at positions[{seen[symbol]}]"
                )
            )
        else:
            seen[symbol] = j
        lots, lot_problems = _position_lots(position, path, body.as_of)
        problems += lot_problems
        stated += lots
        for k, lot in enumerate(lots):
            planned.append(
                PlannedLot(
                    lot_id=f"opening-{symbol}-{k + 1}",
                    symbol=symbol,
                    quantity=lot.quantity,
                    cost_basis=lot.cost_basis,
                    acquired_on=lot.acquired_on,
                    sleeve=lot.sleeve,
                )
            )
    problems += _lots_without_sleeve(body, stated, prefix)
    return (planned if not problems else []), problems


def _sleeve_cash(body: HoldingsIn, prefix: str) -> list[FieldProblem]:
    """Each sleeve's cash: non-negative cents, one entry per sleeve, at most the cash."""
    problems: list[FieldProblem] = []
    first: dict[str, int] = {}
    for i, part in enumerate(body.sleeve_cash):
        path = f"{prefix}sleeve_cash[{i}]"
        problems += _money(part.amount, f"{path}.amount", allow_zero=True)
        if part.sleeve_id in first:
            problems.append(
                FieldProblem(
                    f"{path}.sleeve_id",
                    f"{part.sleeve_id} already given at sleeve_cash[{first[part.sleeve_id]}]",
                )
            )
        first.setdefault(part.sleeve_id, i)
    total = sum((part.amount for part in body.sleeve_cash), Decimal(0))
    if body.sleeve_cash and total > body.cash:
        problems.append(
            FieldProblem(
                f"{prefix}sleeve_cash",
                f"the sleeves' cash adds up to {total}, more than the account's cash {body.cash}",
            )
        )
    return problems


def _lots_without_sleeve(body: HoldingsIn, lots: Sequence[_Lot], prefix: str) -> list[FieldProblem]:
    """Sleeves are all or nothing: in an opening that puts a lot or cash in a sleeve (a
    UMA's), a lot without one is refused, named by its path."""
    named = next((lot for lot in lots if lot.sleeve), None)
    if named is not None:
        why = f"{named.path} is in sleeve {named.sleeve!r}"
    elif body.sleeve_cash:
        why = f"{prefix}sleeve_cash[0] is cash of sleeve {body.sleeve_cash[0].sleeve_id!r}"
    else:
        return []
    return [
        FieldProblem(
            f"{lot.path}.sleeve_id",
            f"required: this opening puts holdings in sleeves ({why}), so every lot names its "
            "sleeve",
        )
        for lot in lots
        if not lot.sleeve
    ]


def _position_lots(
    position: PositionIn, path: str, as_of: date
) -> tuple[list[_Lot], list[FieldProblem]]:
    problems: list[FieldProblem] = []
    if position.lots is None:
        missing = [
            name
            for name in ("quantity", "cost_basis", "acquired_on")
            if getattr(position, name) is None
        ]
        for name in missing:
            problems.append(FieldProblem(f"{path}.{name}", "required (or give lots)"))
        if missing:  # still report what is wrong with the fields that were given
            if position.quantity is not None:
                problems += _quantity(position.quantity, f"{path}.quantity")
            if position.cost_basis is not None:
                problems += _money(position.cost_basis, f"{path}.cost_basis", allow_zero=False)
            if position.acquired_on is not None and position.acquired_on > as_of:
                problems.append(_later(position.acquired_on, as_of, f"{path}.acquired_on"))
            return [], problems
        assert position.quantity is not None and position.cost_basis is not None
        assert position.acquired_on is not None
        lots: Sequence[LotIn | PositionIn] = [position]  # a simple position is its one lot
        paths = [path]
        sleeves = [position.sleeve_id or ""]
    else:
        if not position.lots:
            return [], [FieldProblem(f"{path}.lots", "must hold at least one lot")]
        if position.acquired_on is not None:
            problems.append(
                FieldProblem(f"{path}.acquired_on", "give acquired_on on each lot instead")
            )
        lots = position.lots
        paths = [f"{path}.lots[{k}]" for k in range(len(lots))]
        sleeves = [lot.sleeve_id or position.sleeve_id or "" for lot in position.lots]
    checked: list[_Lot] = []
    for lot, lot_path, sleeve in zip(lots, paths, sleeves, strict=True):
        assert lot.quantity is not None and lot.cost_basis is not None
        assert lot.acquired_on is not None
        checked.append(_Lot(lot.quantity, lot.cost_basis, lot.acquired_on, sleeve, lot_path))
        problems += _quantity(lot.quantity, f"{lot_path}.quantity")
        problems += _money(lot.cost_basis, f"{lot_path}.cost_basis", allow_zero=False)
        if lot.acquired_on > as_of:
            problems.append(_later(lot.acquired_on, as_of, f"{lot_path}.acquired_on"))
    if position.lots is not None:
        for name in ("quantity", "cost_basis"):
            given = getattr(position, name)
            total = sum((getattr(lot, name) for lot in checked), Decimal(0))
            if given is not None and given != total:
                problems.append(
                    FieldProblem(f"{path}.{name}", f"{given} differs from the lots' sum {total}")
                )
    return checked, problems


def _later(day: date, as_of: date, path: str) -> FieldProblem:
    return FieldProblem(path, f"{day} is later than as_of {as_of}")


def _quantity(value: Decimal, path: str) -> list[FieldProblem]:
    if value <= 0:
        return [FieldProblem(path, f"must be positive, got {value}")]
    return []


def _money(value: Decimal, path: str, *, allow_zero: bool) -> list[FieldProblem]:
    if value < 0 or (value == 0 and not allow_zero):
        need = "must not be negative" if allow_zero else "must be positive"
        return [FieldProblem(path, f"{need}, got {value}")]
    if decimals(value) > CENTS:
        return [FieldProblem(path, f"must be in cents (at most 2 decimals), got {value}")]
    return []
