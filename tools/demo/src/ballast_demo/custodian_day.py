"""The custodian's day at the end of the demo: the simulator's files for the day, reconciled
lot by lot at taxlot-svc (`ballast custodian reconcile`'s client), as figures for the
terminal summary and the JSON result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from ballast_cli.book import Outcome
from ballast_cli.custodian import TAXLOT

LOT_KINDS = ("missing", "extra", "quantity", "basis", "date")
SIDE_FIELD = {"cash": "cash", "basis": "cost_basis", "date": "acquired_on"}  # else quantity


@dataclass(frozen=True)
class DayClosed:
    """A custodian's day reconciled with the book of record."""

    custodian: str
    business_date: date
    folder: str
    accounts: int
    lots_compared: int
    matched: int
    breaks: dict[str, int]
    accounts_with_breaks: int
    accounts_held: int
    accounts_released: int
    elapsed_s: float
    repeated: bool = False
    allocations_refused: int = 0  # by the custodian: its book then differs from ours
    first_breaks: list[str] = field(default_factory=list)

    @property
    def lot_breaks(self) -> int:
        return sum(self.breaks.get(kind, 0) for kind in LOT_KINDS)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "business_date": self.business_date.isoformat()}


def break_in_words(found: dict[str, Any]) -> str:
    """`quantity break of lot L1 (AAA) in ACC-1: here 12, at the custodian 10 (suspend)`."""
    kind = found["kind"]
    what = f" of lot {found['lot_id']}" if found.get("lot_id") else ""
    if found.get("symbol"):
        what += f" ({found['symbol']})"
    side = SIDE_FIELD.get(kind, "quantity")
    here = (found.get("ours") or {}).get(side, "nothing")
    there = (found.get("theirs") or {}).get(side, "nothing")
    return (
        f"{kind} break{what} in {found['account_id']}: here {here}, at the custodian {there} "
        f"({found['policy']})"
    )


def day_closed(
    outcome: Outcome,
    first: list[dict[str, Any]],
    folder: str,
    elapsed_s: float,
    allocations_refused: int = 0,
) -> DayClosed:
    """The figures of a day `reconcile_day` reconciled; the breaks that hold an account
    (policy suspend) come first among those put in words."""
    result = outcome.applied[TAXLOT]
    ordered = sorted(first, key=lambda b: b["policy"] != "suspend")
    return DayClosed(
        custodian=result["custodian"],
        business_date=date.fromisoformat(str(result["business_date"])),
        folder=folder,
        accounts=int(result["accounts"]),
        lots_compared=int(result["lots_compared"]),
        matched=int(result["matched"]),
        breaks={kind: int(n) for kind, n in result["breaks"].items()},
        accounts_with_breaks=int(result["accounts_with_breaks"]),
        accounts_held=int(result.get("accounts_held", 0)),
        accounts_released=int(result.get("accounts_released", 0)),
        elapsed_s=round(elapsed_s, 3),
        repeated=bool(result.get("repeated")),
        allocations_refused=allocations_refused,
        first_breaks=[break_in_words(b) for b in ordered[:3]],
    )


def day_rows(day: DayClosed) -> list[tuple[str, str]]:
    """The terminal summary's rows for the day."""
    found = ", ".join(f"{kind} {n:,}" for kind, n in day.breaks.items() if n) or "none"
    rows = [
        ("Custodian's files", f"{day.custodian} {day.business_date.isoformat()}"),
        ("  accounts reconciled", f"{day.accounts:,}"),
        ("  lots compared", f"{day.lots_compared:,}"),
        ("  lots matched", f"{day.matched:,}"),
        ("  lot breaks", f"{day.lot_breaks:,}"),
        ("  breaks by kind", found),
        ("  accounts with breaks", f"{day.accounts_with_breaks:,}"),
        ("  accounts held from trading", f"{day.accounts_held:,}"),
    ]
    if day.accounts_released:
        rows.append(("  accounts released", f"{day.accounts_released:,}"))
    if day.first_breaks:
        rows.append(("  first break", day.first_breaks[0]))
    if day.allocations_refused:
        rows.append(("  allocations the custodian refused", f"{day.allocations_refused:,}"))
    if day.repeated:
        rows.append(("  (reconciled before: not applied again)", ""))
    rows.append(("Elapsed: files asked for to day reconciled", f"{day.elapsed_s:.1f} s"))
    return rows
