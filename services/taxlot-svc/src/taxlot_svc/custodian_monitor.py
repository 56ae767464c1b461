"""Transfer monitoring of the custodians' daily file sets (docs/custodian-files.md, *Transfer
monitoring*).

A custodian that taxlot-svc monitors (`custodian_monitoring`) is expected to send a set every
business day after its first reconciled day (`custodian_calendar`); a set not reconciled by
its deadline is a `missing` exception, a set the inbox watcher refuses is an `empty`,
`truncated` or `invalid` one, and a set that arrives after its deadline leaves a `late` one
(resolved by its arrival). While a custodian has an open exception other than `late`, its
accounts (those of its most recent reconciled day) are held from trading with
`trading-hold-changed`; when its last one is resolved (the day's set arrives, or a person
resolves it) those accounts that nothing else holds are released.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ballast_common.app import Runtime
from ballast_common.book_loads import StagedLoad
from ballast_common.contracts.events import TradingHoldChangedV1
from ballast_common.errors import Conflict, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import repository as repo
from taxlot_svc.repository import ExceptionFilter
from taxlot_svc.settings import Settings

log = logging.getLogger(__name__)

REJECTED_KINDS = ("empty", "truncated", "invalid")
EXCEPTION_KINDS = ("missing", "late", *REJECTED_KINDS)
ACCOUNTS_PAGE = 5000  # accounts held or released per page of events
MAX_PROBLEMS = 50


def _deadline_text(settings: Settings, custodian: str, moment: datetime) -> str:
    """A moment in the custodian's deadline time zone, for people."""
    rule = settings.deadline_rule(custodian)
    local = moment.astimezone(ZoneInfo(rule.timezone))
    return f"{local:%Y-%m-%d %H:%M} {rule.timezone}"


async def open_overdue(uow: UnitOfWork, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """A `missing` exception for every monitored custodian's business day whose set is past
    its deadline at `now` and not reconciled; the custodians newly held publish holds."""
    session = uow.session
    await repo.lock_transfer_exceptions(session)
    due = []
    for tenant, custodian, first in await repo.monitored_custodians(session):
        if not settings.monitors(custodian):
            continue
        rule = settings.deadline_rule(custodian)
        for day in rule.due_days(first, now, settings.custodian_monitor_lookback_days):
            due.append((tenant, custodian, day, rule.deadline_of(day)))
    if not due:
        return []
    held_before = await repo.held_custodians(session)
    opened = await repo.open_missing_exceptions(session, due)
    first_of: dict[tuple[str, str], tuple[date, datetime]] = {}
    for tenant, custodian, day, deadline in opened:
        first_of.setdefault((tenant, custodian), (day, deadline))
    for (tenant, custodian), (day, deadline) in first_of.items():
        if (tenant, custodian) in held_before:
            continue
        reason = (
            f"{custodian}'s file set of {day} is missing (due "
            f"{_deadline_text(settings, custodian, deadline)})"
        )
        await hold_custodian_accounts(uow, tenant, custodian, day, reason)
    return [
        {"tenant": t, "custodian": c, "business_date": d, "deadline": dl} for t, c, d, dl in opened
    ]


async def report_rejected(
    uow: UnitOfWork,
    settings: Settings,
    tenant: str,
    custodian: str,
    business_date: date,
    kind: str,
    detail: str,
    problems: Sequence[str],
) -> dict[str, Any]:
    """A set refused by the inbox watcher kept as an open exception of its kind (the open one
    refreshed if there is one); the custodian's accounts held from trading."""
    session = uow.session
    await repo.lock_transfer_exceptions(session)
    held_before = (tenant, custodian) in await repo.held_custodians(session, tenant)
    rule = settings.deadline_rule(custodian)
    deadline = rule.deadline_of(business_date) if rule.is_business_day(business_date) else None
    found = await repo.upsert_open_exception(
        session,
        tenant,
        custodian,
        business_date,
        kind,
        detail,
        list(problems)[:MAX_PROBLEMS],
        deadline,
    )
    if not held_before:
        reason = f"{custodian}'s file set of {business_date} was refused ({kind}): {detail}"
        await hold_custodian_accounts(uow, tenant, custodian, business_date, reason)
    return found


async def resolve(
    uow: UnitOfWork, tenant: str, exception_id: int, by: str, resolution: str
) -> dict[str, Any]:
    """A person resolves an open exception; when it was the custodian's last, its accounts
    that nothing else holds are released."""
    session = uow.session
    await repo.lock_transfer_exceptions(session)
    found = await repo.resolve_exception(session, tenant, exception_id, by, resolution)
    if found is None:
        existing = await repo.transfer_exception(session, tenant, exception_id)
        if existing is None:
            raise NotFound(f"transfer exception {exception_id} not found")
        raise Conflict(
            f"transfer exception {exception_id} was resolved already "
            f"({existing['resolved_at']:%Y-%m-%d %H:%M} UTC by {existing['resolved_by']})"
        )
    custodian, day = found.pop("custodian"), found["business_date"]
    found.pop("tenant")
    if (tenant, custodian) not in await repo.held_custodians(session, tenant):
        await release_custodian_accounts(uow, tenant, custodian, day)
    return {"custodian": custodian, **found}


async def day_arrived(
    uow: UnitOfWork, settings: Settings, staged: StagedLoad, custodian: str, now: datetime
) -> bool:
    """The custodian's set of the staged day arrived (it is being reconciled): the day's open
    exceptions are resolved, a `late` one is kept if it came after its deadline. Returns
    whether this lifted the custodian's last holding exception."""
    session = uow.session
    await repo.lock_transfer_exceptions(session)
    day, tenant = staged.as_of, staged.tenant
    resolved = await repo.resolve_day_exceptions(
        session, tenant, custodian, day, f"the file set arrived (load {staged.load_id})"
    )
    rule = settings.deadline_rule(custodian)
    if settings.monitors(custodian) and rule.is_business_day(day):
        deadline = rule.deadline_of(day)
        if now > deadline:
            detail = (
                f"arrived {_deadline_text(settings, custodian, now)}, due "
                f"{_deadline_text(settings, custodian, deadline)}"
            )
            await repo.record_late_arrival(session, tenant, custodian, day, deadline, detail)
    return resolved > 0 and (tenant, custodian) not in await repo.held_custodians(session, tenant)


async def hold_custodian_accounts(
    uow: UnitOfWork, tenant: str, custodian: str, business_date: date, reason: str
) -> int:
    """Hold every account of the custodian from trading; returns how many."""
    after, count = "", 0
    while page := await repo.custodian_accounts_page(
        uow.session, tenant, custodian, after, ACCOUNTS_PAGE
    ):
        for account_id in page:
            hold = TradingHoldChangedV1(
                account_id=account_id,
                held=True,
                reason=reason[:500],
                custodian=custodian,
                business_date=business_date,
            )
            uow.publish(hold, key=account_id, tenant=tenant)
        await uow.flush_events()
        after, count = page[-1], count + len(page)
    return count


async def release_custodian_accounts(
    uow: UnitOfWork,
    tenant: str,
    custodian: str,
    business_date: date,
    skip: Collection[str] = (),
) -> int:
    """Release every account of the custodian that no break and no other custodian's
    exception holds (but those in `skip`, released already); returns how many."""
    after, count = "", 0
    while page := await repo.releasable_accounts_page(
        uow.session, tenant, custodian, after, ACCOUNTS_PAGE
    ):
        for account_id in page:
            if account_id in skip:
                continue
            release = TradingHoldChangedV1(
                account_id=account_id, held=False, custodian=custodian, business_date=business_date
            )
            uow.publish(release, key=account_id, tenant=tenant)
        await uow.flush_events()
        after, count = page[-1], count + len(set(page) - set(skip))
    return count


# --- reads ------------------------------------------------------------------------------------


async def exceptions(
    session: AsyncSession, tenant: str, where: ExceptionFilter, after: int, limit: int
) -> dict[str, Any]:
    """A page of the tenant's transfer exceptions and the cursor of the next (None: last)."""
    rows = await repo.transfer_exceptions_page(session, tenant, where, after, limit + 1)
    more = len(rows) > limit
    page = rows[:limit]
    return {"exceptions": page, "next_after": page[-1]["id"] if more else None}


# --- the background task ----------------------------------------------------------------------


async def monitor_loop(runtime: Runtime) -> None:
    """Look for overdue file sets every `custodian_monitor_interval_s` (a background task)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    while True:
        if settings.custodian_monitoring:
            async with runtime.uow() as uow:
                opened = await open_overdue(uow, settings, datetime.now(UTC))
            for found in opened:
                log.warning("custodian file set missing after its deadline", extra=found)
        await asyncio.sleep(settings.custodian_monitor_interval_s)
