"""Securities the security master does not know, found in a custodian's files
(docs/custodian-files.md, *Unknown securities*).

When a custodian's day is applied, every symbol of its positions, lots, transactions and
prices that taxlot-svc does not know from `securities-changed` (nor from a loaded book)
becomes an exception for the security master: one open per custodian and symbol, with the
cusip and name the prices file gave, where it was first seen and in how many rows. A
position in such a security cannot be valued or traded, so **the accounts holding it are held
from trading** (`trading-hold-changed`) until the exception is resolved: by
`securities-changed` bringing the symbol, or by a person. Then each of them is released
unless a break, a transfer exception or another unknown security still holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ballast_common.book_loads import StagedLoad
from ballast_common.contracts.events import TradingHoldChangedV1
from ballast_common.errors import Conflict, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import reconciliation_repository as rrepo
from taxlot_svc.reconciliation_repository import UnknownFilter

KIND = "unknown-security"


@dataclass(frozen=True)
class DayUnknowns:
    """What a custodian's day found: how many unknown symbols, the accounts an unknown
    security held before the day, and (account, first unknown symbol) of those it holds now."""

    symbols: int = 0
    held_before: set[str] = field(default_factory=set)
    holders: list[tuple[str, str]] = field(default_factory=list)


def hold_reason(symbol: str) -> str:
    """Why an account holding an unknown security is held, in words."""
    return (
        f"position in {symbol}, a security the security master does not know: it cannot be "
        "valued or traded until the security master adds it"
    )


async def record_day(uow: UnitOfWork, staged: StagedLoad, custodian: str) -> DayUnknowns:
    """The day's unknown securities kept as exceptions, and the accounts holding one of them
    at the custodian (replacing what earlier days said of these accounts)."""
    session = uow.session
    symbols = await rrepo.record_unknown_securities(session, staged, custodian)
    before, holders = await rrepo.replace_unknown_holders(session, staged, custodian)
    return DayUnknowns(symbols, before, holders)


async def securities_changed(uow: UnitOfWork, symbols: Sequence[str]) -> int:
    """The security master knows these symbols now: their open exceptions (every tenant's)
    are resolved and the accounts nothing else holds are released. Returns how many
    exceptions were resolved."""
    resolved = await rrepo.resolve_known_symbols(uow.session, symbols)
    await _release(uow, [(t, c, s) for t, c, s, _ in resolved])
    return len(resolved)


async def resolve(
    uow: UnitOfWork, tenant: str, exception_id: int, by: str, resolution: str
) -> dict[str, Any]:
    """A person resolves an open unknown security; the accounts it held that nothing else
    holds are released."""
    found = await rrepo.resolve_unknown_security(uow.session, tenant, exception_id, by, resolution)
    if found is None:
        existing = await rrepo.unknown_security(uow.session, tenant, exception_id)
        if existing is None:
            raise NotFound(f"unknown-security exception {exception_id} not found")
        raise Conflict(
            f"unknown-security exception {exception_id} was resolved already "
            f"({existing['resolved_at']:%Y-%m-%d %H:%M} UTC by {existing['resolved_by']})"
        )
    found.pop("tenant")
    released = await _release(uow, [(tenant, found["custodian"], found["symbol"])])
    return _out({**found, "accounts_held": 0}) | {"accounts_released": released}


async def _release(uow: UnitOfWork, resolved: Sequence[tuple[str, str, str]]) -> int:
    """Release the accounts these (tenant, custodian, symbol) held that nothing holds now."""
    rows = await rrepo.releasable_unknown_holders(uow.session, resolved)
    for tenant, account_id, custodian, business_date in rows:
        release = TradingHoldChangedV1(
            account_id=account_id, held=False, custodian=custodian, business_date=business_date
        )
        uow.publish(release, key=account_id, tenant=tenant)
    return len(rows)


def _out(row: dict[str, Any]) -> dict[str, Any]:
    """A stored unknown security in the shape of the exceptions' routes."""
    where = f"{row['first_file']} line {row['first_line']}"
    described = ", ".join(str(v) for v in (row.get("cusip"), row.get("name")) if v)
    detail = (
        f"{row['symbol']}{f' ({described})' if described else ''} is not in the security "
        f"master: first seen in {where}, {row['rows']} row(s)"
    )
    return {**row, "kind": KIND, "detail": detail, "problems": [], "deadline": None}


async def page(
    session: AsyncSession, tenant: str, where: UnknownFilter, after: int, limit: int
) -> dict[str, Any]:
    """A page of the tenant's unknown securities and the cursor of the next (None: last)."""
    rows = await rrepo.unknown_securities_page(session, tenant, where, after, limit + 1)
    more = len(rows) > limit
    found = [_out(r) for r in rows[:limit]]
    return {"exceptions": found, "next_after": found[-1]["id"] if more else None}
