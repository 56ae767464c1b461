"""A custodian's day reconciled lot by lot against the ledger (docs/custodian-files.md,
*Reconciliation*).

The day's canonical files are uploaded under `/custodian-days/{load_id}` with the book-load
machinery (`ballast_common.book_loads`: staged with COPY, every row checked in SQL); applying
the load reconciles it: for the accounts of its `cash.csv`, the custodian's lots are compared
with the ledger's open lots (pieces `<lot>/<n>` summed back to their lot) and its cash with
the books', each difference kept as a break with the policy of its kind, and the day's
summary kept. The load id names the custodian and the date (`<custodian>-<date>-<digest>`):
a day is reconciled once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from ballast_common.audit import AuditEntry
from ballast_common.auth import Permission
from ballast_common.book_loads import BookLoadSpec, LoadProblem, StagedLoad
from ballast_common.contracts.custodian_files import CUSTODIAN_FILES
from ballast_common.contracts.events import TradingHoldChangedV1
from ballast_common.errors import Conflict, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import break_resolution, custodian_ingest, custodian_monitor, unknown_securities
from taxlot_svc import reconciliation_repository as rrepo
from taxlot_svc import repository as repo
from taxlot_svc.repository import BreakFilter
from taxlot_svc.schemas import AdjustmentOut, BreakResolutionIn, ResolutionOut, ResolvedBreakOut
from taxlot_svc.settings import BREAK_KINDS, Settings
from taxlot_svc.tables import custodian_day_loads

ROUTE = "/custodian-days"
RECONCILED_FILES = ("cash.csv", "positions.csv", "lots.csv")  # the others: custodian_ingest
TOLERANCE = Decimal("0.01")  # basis and cash differences up to this are not breaks
MAX_PROBLEMS = 1000
WORK_MEM_MB = 256
LOT_KINDS = ("missing", "extra", "quantity", "basis", "date")
_LOAD_ID = re.compile(
    r"^(?P<custodian>[A-Za-z0-9][A-Za-z0-9._-]*)-(?P<day>\d{4}-\d{2}-\d{2})-[0-9a-f]{6,}$"
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DayId:
    custodian: str
    business_date: date


def day_of(load_id: str) -> DayId | None:
    """The custodian and business date a load id names (`<custodian>-<date>-<digest>`)."""
    found = _LOAD_ID.match(load_id)
    if found is None:
        return None
    try:
        return DayId(found["custodian"], date.fromisoformat(found["day"]))
    except ValueError:
        return None


def _day_problem(staged: StagedLoad) -> LoadProblem | None:
    day = day_of(staged.load_id)
    if day is None:
        return LoadProblem(
            "load_id",
            0,
            "",
            f"{staged.load_id!r} must name the custodian and business date: "
            "<custodian>-<YYYY-MM-DD>-<hex digest>",
        )
    if day.business_date != staged.as_of:
        return LoadProblem(
            "load_id", 0, "", f"names {day.business_date}, but the load is as of {staged.as_of}"
        )
    return None


async def check(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    """The day's own checks (each file's rows are sound already): its id, its date, its accounts."""
    problem = _day_problem(staged)
    if problem is not None:
        return [problem]
    await repo.use_memory_for_sorts(session, WORK_MEM_MB)
    found = await repo.custodian_day_problems(session, staged, MAX_PROBLEMS)
    return found + await custodian_ingest.problems(session, staged, MAX_PROBLEMS - len(found))


def reconciler(settings: Settings, clock: Callable[[], datetime] = _utc_now) -> Any:
    """The apply step of a custodian day, with the break policies of `settings` (`clock`:
    when the set arrived, for its deadline)."""
    lot_policies = {kind: settings.policy_of(kind) for kind in LOT_KINDS}
    cash_policy = settings.policy_of("cash")

    async def reconcile(uow: UnitOfWork, staged: StagedLoad) -> dict[str, Any]:
        """Every break of the day stored with its policy, then the day's summary."""
        problem = _day_problem(staged)
        if problem is not None:
            raise InvalidInput(problem.message, [problem.as_field()])
        day = day_of(staged.load_id)
        assert day is not None
        session = uow.session
        earlier = await repo.reconciled_load(session, staged.tenant, day.custodian, staged.as_of)
        if earlier is not None:
            raise Conflict(
                f"{day.custodian}'s day {staged.as_of} was reconciled already (load {earlier});"
                " a day is reconciled once"
            )
        await repo.use_memory_for_sorts(session, WORK_MEM_MB)
        # symbols the security master does not know, before the day's prices are kept
        unknown = await unknown_securities.record_day(uow, staged, day.custodian)
        # the day's prices, corporate actions and transactions first: then compared
        ingested, day_actions = await custodian_ingest.ingest(
            uow, staged, day.custodian, platform_data=settings.custodian_files_set_platform_data
        )
        compared, matched = await repo.reconcile_lots(
            session, staged, day.custodian, lot_policies, TOLERANCE
        )
        await repo.reconcile_cash(session, staged, day.custodian, cash_policy, TOLERANCE)
        await custodian_ingest.hold_unsynced_actions(uow, staged, day_actions)
        summary = await repo.record_reconciliation(
            session, staged, day.custodian, compared, matched
        )
        accepted = await break_resolution.accept_by_policy(uow, staged, day.custodian)
        lifted = await custodian_monitor.day_arrived(uow, settings, staged, day.custodian, clock())
        held, released = await _publish_trading_holds(uow, staged, day.custodian, lifted, unknown)
        await repo.record_custodian_accounts(session, staged, day.custodian)
        return {
            "custodian": day.custodian,
            "business_date": staged.as_of.isoformat(),
            **summary,
            "breaks": {k: int(summary["breaks"].get(k, 0)) for k in BREAK_KINDS},
            "policies": {**lot_policies, "cash": cash_policy},
            "accounts_held": held,
            "accounts_released": released,
            "accepted": {k: int(accepted.get(k, 0)) for k in BREAK_KINDS},
            "unknown_securities": unknown.symbols,
            **ingested,
        }

    return reconcile


async def _publish_trading_holds(
    uow: UnitOfWork,
    staged: StagedLoad,
    custodian: str,
    transfer_lifted: bool,
    unknown: unknown_securities.DayUnknowns,
) -> tuple[int, int]:
    """Hold every account with a break that suspends it or a position in a security the
    security master does not know (trading-hold-changed), and release those an earlier day
    held that today's comparison no longer holds, unless an open transfer exception holds
    them; when the day's arrival lifted the custodian's last transfer exception
    (`transfer_lifted`), release its accounts that nothing holds. Returns (held, released)."""
    was_held = await repo.supersede_breaks(uow.session, staged, custodian) | unknown.held_before
    breaks = await repo.suspending_breaks(uow.session, staged.tenant, staged.load_id)
    for account_id, kind, symbol, lot_id, ours, theirs in breaks:
        hold = TradingHoldChangedV1(
            account_id=account_id,
            held=True,
            reason=hold_reason(kind, symbol, lot_id, ours, theirs),
            custodian=custodian,
            business_date=staged.as_of,
        )
        uow.publish(hold, key=account_id, tenant=staged.tenant)
    broken = {b[0] for b in breaks}
    for account_id, symbol in unknown.holders:
        if account_id in broken:
            continue
        hold = TradingHoldChangedV1(
            account_id=account_id,
            held=True,
            reason=unknown_securities.hold_reason(symbol),
            custodian=custodian,
            business_date=staged.as_of,
        )
        uow.publish(hold, key=account_id, tenant=staged.tenant)
    held = broken | {a for a, _ in unknown.holders}
    unbroken = was_held - held
    transfer_held = await repo.held_by_transfer_exceptions(uow.session, staged.tenant, unbroken)
    released = sorted(unbroken - transfer_held)
    for account_id in released:
        release = TradingHoldChangedV1(
            account_id=account_id, held=False, custodian=custodian, business_date=staged.as_of
        )
        uow.publish(release, key=account_id, tenant=staged.tenant)
    if not transfer_lifted:
        return len(held), len(released)
    # (the custodian's accounts as held: those of its last day before this one)
    lifted = await custodian_monitor.release_custodian_accounts(
        uow, staged.tenant, custodian, staged.as_of, skip=set(released)
    )
    return len(held), len(released) + lifted


def hold_reason(
    kind: str,
    symbol: str | None,
    lot_id: str | None,
    ours: dict[str, Any] | None,
    theirs: dict[str, Any] | None,
) -> str:
    """A break in words: `quantity break of lot AAA-1 (AAA): here 12, at the custodian 10`
    (prefixed with the corporate action not in sync, when one is named on the break)."""
    what = f" of lot {lot_id}" if lot_id else ""
    if symbol:
        what += f" ({symbol})"
    field = {"cash": "cash", "basis": "cost_basis", "date": "acquired_on"}.get(kind, "quantity")
    here = (ours or {}).get(field, "nothing")
    there = (theirs or {}).get(field, "nothing")
    action = (theirs or {}).get("corporate_action") or (ours or {}).get("corporate_action")
    prefix = f"{action} is not in sync: " if action else ""
    return f"{prefix}{kind} break{what}: here {here}, at the custodian {there}"[:500]


def spec(settings: Settings, clock: Callable[[], datetime] = _utc_now) -> BookLoadSpec:
    """taxlot-svc's `/custodian-days` loads: the custodian's canonical files, reconciled."""
    return BookLoadSpec(
        files=CUSTODIAN_FILES,
        table=custodian_day_loads,
        checks=check,
        apply=reconciler(settings, clock),
        required=RECONCILED_FILES,
        typed=True,
        permission=Permission.OPERATE,
        route=ROUTE,
        noun="custodian day",
    )


# --- reads ------------------------------------------------------------------------------------


async def reconciliation(
    session: AsyncSession, tenant: str, custodian: str, business_date: date
) -> dict[str, Any]:
    """The summary of a custodian's day (404 unless it was reconciled for `tenant`)."""
    found = await repo.reconciliation(session, tenant, custodian, business_date)
    if found is None:
        raise NotFound(f"{custodian}'s day {business_date} was not reconciled")
    found.pop("tenant")
    found["breaks"] = {k: int(found["breaks"].get(k, 0)) for k in BREAK_KINDS}
    return found


async def breaks(
    session: AsyncSession, tenant: str, where: BreakFilter, after: int, limit: int
) -> dict[str, Any]:
    """A page of the tenant's breaks and the cursor of the next (None on the last page)."""
    rows = await repo.breaks_page(session, tenant, where, after, limit + 1)
    more = len(rows) > limit
    page = [_with_resolution(r) for r in rows[:limit]]
    return {"breaks": page, "next_after": page[-1]["id"] if more else None}


def _with_resolution(row: dict[str, Any]) -> dict[str, Any]:
    """A stored break with its resolution as one object (None while it is not resolved)."""
    resolution, note = row.pop("resolution", None), row.pop("resolution_note", None)
    by, at = row.pop("resolved_by", None), row.pop("resolved_at", None)
    row["resolved"] = (
        {"resolution": resolution, "note": note or "", "resolved_by": by, "resolved_at": at}
        if resolution
        else None
    )
    return row


async def account_breaks(
    session: AsyncSession, tenant: str, where: BreakFilter, after: int, limit: int
) -> dict[str, Any]:
    """A page of an account's breaks (404 unless `tenant` has its ledger or a break of it)."""
    assert where.account_id is not None
    found = await breaks(session, tenant, where, after, limit)
    if not found["breaks"] and after == 0:
        book = await repo.get_book(session, where.account_id, tenant=tenant)
        if book is None:
            raise NotFound(f"account {where.account_id} has no ledger and no breaks")
    return found


# --- breaks resolved by a person ------------------------------------------------------------


# keep-ours: the ledger stands (the custodian is to correct its records); accept-custodian:
# the ledger is adjusted to the custodian's figure (taxlot_svc.break_resolution)
RESOLVED = "resolved"


async def resolve_break(
    uow: UnitOfWork, tenant: str, actor: str, break_id: int, body: BreakResolutionIn
) -> ResolvedBreakOut:
    """Resolve an open break (audited), adjusting the ledger when the custodian's figure is
    accepted; release the account when nothing holds it any more."""
    resolved = await repo.resolve_break(uow.session, tenant, break_id, RESOLVED)
    if resolved is None:
        raise NotFound(f"break {break_id} was not found")
    found, changed, still_suspending = resolved
    if not changed:
        raise Conflict(f"break {break_id} is {found['status']}: only an open break is resolved")
    adjustments: list[AdjustmentOut] = []
    if body.resolution == break_resolution.ACCEPT:
        adjustments = await _accept(uow, tenant, found)
    await rrepo.record_resolution(
        uow.session, tenant, [break_id], body.resolution, actor, body.note
    )
    resolution = ResolutionOut(
        resolution=body.resolution,
        note=body.note,
        resolved_by=actor,
        resolved_at=datetime.now(UTC),
    )
    before = {**found, "status": "open"}
    after = {**found, "resolution": resolution.model_dump(mode="json")}
    entry = AuditEntry(actor, "resolve", "reconciliation-break", str(break_id), before, after)
    await repo.append_audit(uow.session, tenant, [entry])
    account_id = found["account_id"]
    released = found["policy"] == "suspend" and still_suspending == 0
    if released and await repo.held_by_transfer_exceptions(uow.session, tenant, [account_id]):
        released = False  # a late or missing file of its custodian still holds it
    if released and await rrepo.held_by_unknown_securities(uow.session, tenant, [account_id]):
        released = False  # a position in a security the security master does not know
    if released:
        release = TradingHoldChangedV1(
            account_id=account_id,
            held=False,
            custodian=found["custodian"],
            business_date=found["business_date"],
        )
        uow.publish(release, key=account_id, tenant=tenant)
    return ResolvedBreakOut(
        **found,
        resolution=resolution,
        resolved=resolution,
        account_released=released,
        adjustments=adjustments,
    )


async def _accept(uow: UnitOfWork, tenant: str, found: dict[str, Any]) -> list[AdjustmentOut]:
    """The ledger adjusted to the custodian's figure of one break; 409 when it cannot be."""
    break_id = int(found["id"])
    applied = await break_resolution.accept(uow, tenant, [break_id])
    if break_id not in applied:
        raise Conflict(_not_adjusted(found))
    entries = await rrepo.ledger_of_breaks(uow.session, [break_id])
    return [AdjustmentOut(**e) for e in entries]


def _not_adjusted(found: dict[str, Any]) -> str:
    """Why a break's figure could not be accepted, in words."""
    what = f"lot {found['lot_id']} ({found['symbol']})" if found["lot_id"] else "cash"
    if found["ours"] is None and found["kind"] == "cash":
        why = "it has no ledger (load its opening balance first)"
    elif found["kind"] == "extra":
        why = (
            f"its ledger has a lot {found['lot_id']} already, {found['symbol']} is not in the "
            "security master, or it has no ledger"
        )
    else:
        why = f"the ledger's {what} changed since the break was found on {found['business_date']}"
    return (
        f"break {found['id']} of account {found['account_id']} cannot take the custodian's "
        f"figure: {why}; nothing was changed (resolve it with keep-ours, or wait for the next "
        "day's comparison)"
    )
