"""A custodian's day into the ledger, before it is compared with it (docs/custodian-files.md,
*What ingest does with each file*), in the apply of the day (all or nothing):

- prices.csv: the day's closes become each symbol's last price (as a book load's do);
- corporate_actions.csv: an action effective on or before the business date is applied
  once by its id, through the corporate-action path (`POST /corporate-actions`); one
  announced for a later date waits for a day on or after it;
- transactions.csv, each row once by (custodian, transaction id, lot id): dividends, fees,
  deposits and withdrawals are cash entries of the account (its own cash); lots
  transferred in are opening lots with the basis and date of their lots.csv row (the
  household replayed); buys and sells Ballast ordered (its fills opened or relieved the
  named lot by the same quantity) change nothing; others (client-directed trades) are
  applied as fills are, through the fill path.

Each account the transactions changed gets one holdings-reconciled (cause `custodian-day`).
After the comparison, a lot break in a security of one of the day's corporate actions
suspends its account with the action named (the action's data is not in sync).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from ballast_common.book_loads import LoadProblem, StagedLoad
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.errors import (
    Conflict,
    FieldProblem,
    InvalidInput,
    NotFound,
    PermanentMessageError,
)
from ballast_common.uow import Cause, UnitOfWork
from ballast_engine.tax import TaxError
from pydantic import TypeAdapter, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import actions, book, service
from taxlot_svc import custodian_ingest_repository as ingest_repo
from taxlot_svc import repository as repo
from taxlot_svc.replays import facts_of, members_of, rebuild, request_restated
from taxlot_svc.schemas import CorporateActionIn

CAUSE = ingest_repo.CAUSE
TRADE_PAGE = 1000  # client-directed trades per batch of the fill path
REPLAY_PAGE = 200  # households per replay of transferred lots
REFUSED_SHOWN = 20
CLOSE_UTC = time(21, 0)  # a trade date's fills are dated at the US close (16:00 New York)
_CENT = Decimal("0.01")
_PRICE = Decimal("0.000001")
_ACTION = TypeAdapter(CorporateActionIn)
AWAITING_THE_PLATFORM = "awaiting the platform"


@dataclass
class DayActions:
    """What the day's corporate actions came to; `notes`: symbol -> the action in words, for
    the securities whose breaks suspend their accounts."""

    applied: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    not_held: list[str] = field(default_factory=list)
    awaiting_the_platform: list[str] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "repeated": self.repeated,
            "announced": self.announced,
            "not_held": self.not_held,
            "awaiting_the_platform": self.awaiting_the_platform,
            "refused": self.refused,
        }


async def ingest(
    uow: UnitOfWork, staged: StagedLoad, custodian: str, *, platform_data: bool
) -> tuple[dict[str, Any], DayActions]:
    """Prices, corporate actions and transactions of the day into the ledger (under the
    exclusive write lock: no fill changes a book meanwhile); returns the summary and the
    day's actions (their notes are for :func:`hold_unsynced_actions`). Without
    `platform_data` (`Settings.custodian_files_set_platform_data`) the day's prices are not
    kept and its corporate actions are not applied, only recognised."""
    session = uow.session
    await repo.lock_writes(session, exclusive=True)
    keep_prices = platform_data and staged.has("prices.csv")
    prices = await repo.load_prices(session, staged) if keep_prices else 0
    day_actions = await apply_corporate_actions(uow, staged, apply=platform_data)
    transactions = await apply_transactions(uow, staged, custodian)
    return {
        "prices": prices,
        "corporate_actions": day_actions.summary(),
        "transactions": transactions,
    }, day_actions


async def problems(session: AsyncSession, staged: StagedLoad, limit: int) -> list[LoadProblem]:
    """Transaction rows without a column their type needs (the ingest could not apply them)."""
    found = await ingest_repo.transaction_problems(session, staged, limit)
    return [
        LoadProblem("transactions.csv", line, column, f"a {kind} needs {column}")
        for line, column, kind in found
    ]


async def hold_unsynced_actions(
    uow: UnitOfWork, staged: StagedLoad, actions_of_day: DayActions
) -> int:
    """After the comparison: lot breaks in a security of a corporate action of the day
    suspend their accounts, the action named (its data is not in sync)."""
    return await ingest_repo.suspend_unsynced_breaks(
        uow.session, staged.tenant, staged.load_id, actions_of_day.notes
    )


# --- corporate actions ----------------------------------------------------------------------


def action_terms(row: dict[str, Any]) -> dict[str, Any]:
    """A row of corporate_actions.csv as the terms of `POST /corporate-actions`."""
    kind = row["type"]
    terms: dict[str, Any] = {
        "type": kind,
        "action_id": row["action_id"],
        "symbol": row["symbol"],
        "on": row["effective_date"],
    }
    if kind in ("split", "reverse-split"):
        terms |= {"numerator": row["numerator"], "denominator": row["denominator"]}
    elif kind == "symbol-change":
        terms["new_symbol"] = row["new_symbol"]
    elif kind == "cash-merger":
        terms["cash_per_share"] = row["cash_per_share"]
    elif kind == "stock-merger":
        terms |= {"new_symbol": row["new_symbol"], "ratio": row["ratio"]}
    elif kind == "spin-off":
        terms |= {
            "new_symbol": row["new_symbol"],
            "ratio": row["ratio"],
            "basis_percent": row["basis_percent"],
        }
    elif kind == "cash-dividend":
        terms["per_share"] = row["cash_per_share"]
    return {
        k: (int(v) if k in ("numerator", "denominator") and v is not None else v)
        for k, v in terms.items()
    }


def describe_action(row: dict[str, Any]) -> str:
    """`corporate action CA3 (symbol-change of S030 into S030N, effective 2026-12-04)`."""
    into = f" into {row['new_symbol']}" if row.get("new_symbol") else ""
    return (
        f"corporate action {row['action_id']} ({row['type']} of {row['symbol']}{into},"
        f" effective {row['effective_date']})"
    )


async def apply_corporate_actions(
    uow: UnitOfWork, staged: StagedLoad, *, apply: bool = True
) -> DayActions:
    """Each action of the file effective by the business date applied once (each in a
    savepoint: one the corporate-action path refuses is reported, the others stand); without
    `apply`, one the platform has not applied yet is reported as awaiting it. The
    securities of an action applied, applied before, refused or awaited get its note: their
    breaks mean the action is not in sync (one nobody holds here has nothing to be in sync)."""
    out = DayActions()
    for row in await ingest_repo.corporate_action_rows(uow.session, staged):
        action_id = row["action_id"]
        if row["effective_date"] > staged.as_of:
            out.announced.append(action_id)
            continue
        if apply:
            outcome = await _apply_action(uow, staged, row)
        elif await repo.get_corporate_action(uow.session, action_id) is not None:
            outcome = "repeated"
        else:
            outcome = AWAITING_THE_PLATFORM
        if outcome == "not-held":
            out.not_held.append(action_id)
            continue
        if outcome in ("applied", "repeated"):
            (out.applied if outcome == "applied" else out.repeated).append(action_id)
        elif outcome == AWAITING_THE_PLATFORM:
            out.awaiting_the_platform.append(action_id)
        else:
            out.refused.append(
                {"action_id": action_id, "line": str(row["line"]), "reason": outcome}
            )
        for symbol in (row["symbol"], row["new_symbol"]):
            if symbol:
                out.notes.setdefault(symbol, describe_action(row))
    return out


async def _apply_action(uow: UnitOfWork, staged: StagedLoad, row: dict[str, Any]) -> str:
    """`applied`, `repeated`, `not-held`, or why the corporate-action path refused it."""
    try:
        body = _ACTION.validate_python(action_terms(row))
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
    savepoint = await uow.session.begin_nested()
    try:
        result = await actions.apply_corporate_action(uow, body, today=staged.as_of)
    except InvalidInput as exc:
        await savepoint.rollback()
        return "not-held" if any(p.field == "symbol" for p in exc.errors) else str(exc)
    except Conflict as exc:
        await savepoint.rollback()
        return str(exc)
    await savepoint.commit()
    return "repeated" if result.repeated else "applied"


# --- transactions ---------------------------------------------------------------------------


async def apply_transactions(uow: UnitOfWork, staged: StagedLoad, custodian: str) -> dict[str, Any]:
    """The day's transaction rows not taken before, applied (see the module doc); returns
    the rows by outcome and the first rows not applied, with why."""
    session = uow.session
    tenant, load_id = staged.tenant, staged.load_id
    if not staged.has("transactions.csv"):
        return {"new": 0, "outcomes": {}, "not_applied": []}
    new = await ingest_repo.take_transactions(session, staged, custodian)
    if new:
        await ingest_repo.mark_without_ledger(session, tenant, load_id)
        await ingest_repo.book_cash(session, tenant, load_id, staged.as_of)
        await ingest_repo.match_our_trades(session, tenant, load_id)
        await _apply_client_trades(uow, tenant, load_id)
        given = await ingest_repo.take_transfers_in(session, staged, load_id, book.OPENING)
        await _replay_transferred(uow, staged, given, "a lot transferred in")
        taken = await ingest_repo.take_transfers_out(session, tenant, load_id)
        await _replay_transferred(uow, staged, taken, "a lot transferred out")
        here = Cause.here()
        await ingest_repo.request_day_snapshots(
            session, tenant, load_id, here.traceparent, here.tracestate
        )
    return {
        "new": new,
        "outcomes": await ingest_repo.outcomes(session, tenant, load_id),
        "not_applied": await ingest_repo.first_refused(session, tenant, load_id, REFUSED_SHOWN),
    }


def trade_fill(row: dict[str, Any]) -> tuple[FillsReceivedV1, str | None]:
    """A client-directed trade as a fill (and the lot a buy opens, when its id is not
    `fill-<fill id>`): the price given, else the amount per share; the fees the difference
    between the amount and price x quantity (none when the amount is the smaller)."""
    quantity: Decimal = row["quantity"]
    amount: Decimal = row["amount"]
    price: Decimal = row["price"] or (amount / quantity).quantize(_PRICE)
    gross = (price * quantity).quantize(_CENT)
    fees = amount - gross if row["type"] == "buy" else gross - amount
    lot_id: str = row["lot_id"]
    key = f"{row['custodian']}:{row['transaction_id']}:{lot_id}"
    fill_id: str = key
    lot_name: str | None = lot_id
    if row["type"] == "buy" and lot_id.startswith("fill-"):
        fill_id, lot_name = lot_id.removeprefix("fill-"), None  # Ballast's own lot naming
    ids = uuid.uuid5(uuid.NAMESPACE_URL, f"custodian-transaction:{key}")
    fill = FillsReceivedV1(
        fill_id=fill_id,
        client_order_id=f"custodian:{row['transaction_id']}"[:200],
        trade_id=ids,
        proposal_id=ids,
        account_id=row["account_id"],
        symbol=row["symbol"],
        side=row["type"],
        quantity=quantity,
        price=price,
        executed_at=datetime.combine(row["trade_date"], CLOSE_UTC, UTC),
        fees=max(fees, Decimal(0)),
        lot_ids=[lot_id] if row["type"] == "sell" else [],
        sleeve_id=row["sleeve"] or None,
    )
    return fill, lot_name


async def _apply_client_trades(uow: UnitOfWork, tenant: str, load_id: str) -> None:
    """Buys and sells Ballast did not order, through the fill path a page at a time; when a
    page is refused, its trades one at a time (each in a savepoint): a refused one is
    recorded with the fill path's reason and the comparison shows its lot."""
    session = uow.session
    after = 0
    while True:
        page = await ingest_repo.pending_trades(session, tenant, load_id, after, TRADE_PAGE)
        if not page:
            return
        after = page[-1]["line"]
        made: list[tuple[dict[str, Any], FillsReceivedV1, str | None]] = []
        refused: list[tuple[int, str]] = []
        for row in page:
            try:
                made.append((row, *trade_fill(row)))
            except (ValidationError, ArithmeticError) as exc:  # e.g. no price and no amount
                refused.append((row["line"], f"not a trade that can be applied: {exc}"[:1000]))
        if made and not await _try_fills(uow, made):
            for one in made:
                await _try_fills(uow, [one], refused)
        if refused:
            lines, reasons = zip(*refused, strict=True)
            await ingest_repo.set_outcomes(
                session, tenant, load_id, list(lines), "refused", list(reasons)
            )
        # (rows refused above are no longer pending: this marks only those applied)
        applied = [row["line"] for row, _, _ in made]
        await ingest_repo.set_outcomes_if_pending(session, tenant, load_id, applied, "trade")


async def _try_fills(
    uow: UnitOfWork,
    made: Sequence[tuple[dict[str, Any], FillsReceivedV1, str | None]],
    refused: list[tuple[int, str]] | None = None,
) -> bool:
    """Apply fills in a savepoint; False (nothing applied) when the fill path refuses one."""
    savepoint = await uow.session.begin_nested()
    names = {fill.fill_id: name for _, fill, name in made if name is not None}
    try:
        await service.apply_fills(uow, [(fill, None) for _, fill, _ in made], lot_names=names)
    except PermanentMessageError as exc:
        await savepoint.rollback()
        if refused is not None:
            refused.append((made[0][0]["line"], str(exc)[:1000]))
        return False
    await savepoint.commit()
    return True


async def _replay_transferred(
    uow: UnitOfWork, staged: StagedLoad, given: Sequence[dict[str, Any]], what: str
) -> None:
    """After lots moved in (opening inputs) or out (adjustments), their households are
    replayed (only the securities moved) and every lot the replay changed is journalled."""
    session = uow.session
    if not given:
        return
    accounts = sorted({r["account_id"] for r in given})
    symbols_of: dict[str, set[str]] = {}
    facts = await facts_of(session, accounts)
    for r in given:
        household = facts[r["account_id"]].household
        symbols_of.setdefault(household, set()).add(r["symbol"])
    households = sorted(symbols_of)
    for start in range(0, len(households), REPLAY_PAGE):
        page = households[start : start + REPLAY_PAGE]
        symbols = sorted({s for h in page for s in symbols_of[h]})
        members = await members_of(session, page)
        try:
            replayed = await rebuild(session, page, symbols, members=members)
        except TaxError as exc:
            raise InvalidInput(
                f"custodian day {staged.load_id}: {what} cannot be applied: {exc}",
                [FieldProblem("transactions.csv", str(exc))],
            ) from exc
        await repo.add_ledger_entries(session, replayed.restatements(CAUSE, None))
        transferred = set(accounts)
        others = [a for a in replayed.changed() if a not in transferred]
        if others:
            await request_restated(session, others, cause=CAUSE)


# --- original files kept for audit ----------------------------------------------------------

FILE_CHUNK = 1 << 20  # bytes per stored chunk


async def keep_file(
    session: AsyncSession,
    where: KeptFile,
    received_by: str,
    manifest_sha256: str | None,
    body: AsyncIterator[bytes],
) -> dict[str, Any]:
    """Keep a file of a custodian's day as delivered, streamed in chunks; returns its row
    (`repeated`: these bytes of this file were kept already, and are not kept twice)."""
    row = {**where.__dict__, "manifest_sha256": manifest_sha256, "received_by": received_by}
    file_id = await ingest_repo.add_file(session, row)
    digest, size, n, pending = hashlib.sha256(), 0, 0, bytearray()
    async for data in body:
        digest.update(data)
        size += len(data)
        pending += data
        while len(pending) >= FILE_CHUNK:
            await ingest_repo.add_chunk(session, file_id, n, bytes(pending[:FILE_CHUNK]))
            del pending[:FILE_CHUNK]
            n += 1
    if pending or n == 0:
        await ingest_repo.add_chunk(session, file_id, n, bytes(pending))
    sha256 = digest.hexdigest()
    first = await ingest_repo.finish_file(session, file_id, size, sha256)
    [kept] = [
        f
        for f in await ingest_repo.kept_files(
            session, where.tenant, where.custodian, where.business_date, where.name
        )
        if f["id"] == (first or file_id)
    ]
    return _described(kept) | {"repeated": first is not None}


@dataclass(frozen=True)
class KeptFile:
    tenant: str
    custodian: str
    business_date: date
    name: str


def _described(row: dict[str, Any]) -> dict[str, Any]:
    matches = None if row["manifest_sha256"] is None else row["manifest_sha256"] == row["sha256"]
    return {**row, "matches_manifest": matches}


async def kept_files(
    session: AsyncSession, tenant: str, custodian: str, business_date: date
) -> dict[str, Any]:
    """Every kept version of every file of a custodian's day (404 when none was kept)."""
    found = await ingest_repo.kept_files(session, tenant, custodian, business_date, None)
    if not found:
        raise NotFound(f"no file of {custodian}'s day {business_date} was kept")
    return {"files": [_described(f) for f in found]}


async def kept_file(session: AsyncSession, where: KeptFile, sha256: str | None) -> dict[str, Any]:
    """The newest kept version of a file of a day (or the one with digest `sha256`)."""
    found = await ingest_repo.kept_files(
        session, where.tenant, where.custodian, where.business_date, where.name
    )
    if sha256 is not None:
        found = [f for f in found if f["sha256"] == sha256.lower()]
    if not found:
        which = f" with sha256 {sha256}" if sha256 else ""
        raise NotFound(
            f"{where.name}{which} of {where.custodian}'s day {where.business_date} was not kept"
        )
    return _described(found[0])
