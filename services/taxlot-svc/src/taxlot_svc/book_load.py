"""Loading the book of record from files (``ballast book load``, docs/book-files.md): the
checks of taxlot-svc's files and the set-based apply.

taxlot-svc loads prices.csv, accounts.csv, cash.csv, positions.csv and lots.csv. The apply
gives what opening balances over REST give (:func:`taxlot_svc.service.open_accounts`):
account books, opening inputs, the ledger's journal, lots, household states, the accounts'
household and type, prices, and one ``holdings-reconciled`` (cause ``opening-balance``) per
account. It writes with INSERT ... SELECT from the staging tables: a household without
history needs no replay (its inputs are buys: no wash sale can arise among them), so its
lots are written directly, as the engine's replay would leave them; households with
history (or that a recorded corporate action concerns) are replayed as REST does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from ballast_common.book_loads import BookLoadSpec, LoadProblem, StagedLoad
from ballast_common.contracts.book_files import files_of
from ballast_common.contracts.events import HoldingsReconciledV2
from ballast_common.errors import Conflict, FieldProblem, InvalidInput
from ballast_common.uow import UnitOfWork
from ballast_engine.tax import TaxError
from sqlmodel.ext.asyncio.session import AsyncSession

from taxlot_svc import book
from taxlot_svc import repository as repo
from taxlot_svc.opening import FUTURE_SLACK, SYMBOL_PATTERN, action_cutoff, action_problem
from taxlot_svc.replays import members_of, rebuild, request_restated
from taxlot_svc.schemas import ACCOUNT_ID_PATTERN
from taxlot_svc.snapshots import Snapshot, realized_year, sleeve_cash_v1
from taxlot_svc.tables import book_loads

OPENING = "opening-balance"
PAGE = 500  # accounts per page of holdings-reconciled (memory stays flat)
REPLAY_PAGE = 200  # households per replay, when some need one
MAX_PROBLEMS = 1000
WORK_MEM_MB = 256  # per sort or hash of the load's statements
RESERVED_LOT_CHARS = "/;"


def _rules(actions: Sequence[Any], as_of: date) -> repo.LoadRules:
    refusing = []
    for action in actions:
        cutoff = action_cutoff(action.effective_on, as_of)
        if cutoff is not None:
            message = action_problem(
                action.action_id, action.kind, action.symbol, action.effective_on, as_of
            )
            refusing.append((action.symbol, cutoff, message))
    return repo.LoadRules(
        account_pattern=ACCOUNT_ID_PATTERN,
        account_message="account_id must be 1-64 letters, digits, '_', '.' or '-'",
        symbol_pattern=SYMBOL_PATTERN.pattern,
        symbol_message="symbol must be 1-16 of A-Z, 0-9, '.' or '-'",
        reserved_lot_chars=RESERVED_LOT_CHARS,
        reserved_lot_message=(
            "lot_id must not contain '/' or ';' (the book names split lots <lot>/<n> and "
            "separates named lots with ';')"
        ),
        refusing_actions=refusing,
    )


async def check(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    """taxlot-svc's checks of a load's files (the generic row checks passed already)."""
    if staged.as_of > datetime.now(UTC).date() + FUTURE_SLACK:  # as a REST opening
        return [LoadProblem("accounts.csv", 0, "as_of", f"{staged.as_of} is in the future")]
    await repo.use_memory_for_sorts(session, WORK_MEM_MB)
    actions = await repo.corporate_actions(session)
    return await repo.book_load_problems(
        session, staged, _rules(actions, staged.as_of), MAX_PROBLEMS
    )


async def apply(uow: UnitOfWork, staged: StagedLoad) -> dict[str, Any]:
    """Open every account of the load: books, inputs, journal, lots, household states,
    account facts and prices in set-based statements; households with history replayed;
    then one holdings-reconciled per account, page by page. Returns the counts."""
    session = uow.session
    # As a REST opening: the exclusive write lock first (no consumer changes a household
    # meanwhile). What could have changed since the checks ran is checked again under it.
    await repo.lock_writes(session, exclusive=True)
    await repo.use_memory_for_sorts(session, WORK_MEM_MB)
    actions = await repo.corporate_actions(session)
    refused = await repo.lots_refused_by_actions(
        session, staged, _rules(actions, staged.as_of).refusing_actions, MAX_PROBLEMS
    )
    if refused:
        raise InvalidInput(
            f"book load {staged.load_id}: lots.csv:{refused[0].line} {refused[0].message}",
            [p.as_field() for p in refused],
        )
    prices = await repo.load_prices(session, staged)
    await repo.load_account_facts(session, staged)
    accounts = await repo.load_books(session, staged)
    wanted = staged.rows.get("accounts.csv", 0)
    if accounts != wanted:
        raise Conflict(
            f"book load {staged.load_id}: {wanted - accounts} account(s) of accounts.csv got a "
            "ledger since the files were checked; nothing was applied"
        )
    await repo.load_sleeve_cash(session, staged)
    await repo.load_typed_lots(session, staged)
    replay = await repo.load_households_to_replay(
        session, staged, [(a.symbol, a.effective_on) for a in actions]
    )
    lots = await repo.load_tax_inputs(session, staged, book.OPENING)
    entries = await repo.load_ledger_entries(session, staged, OPENING)
    await repo.load_lots(session, staged, OPENING, f"{book.OPENING}:", replay)
    households = await repo.load_household_states(session, staged, replay)
    restated = await _replay(uow, staged, replay)
    await repo.analyze_loaded_tables(session)
    events = await _publish(uow, staged)
    return {
        "accounts": accounts,
        "positions": staged.rows.get("positions.csv", 0),
        "lots": lots,
        "prices": prices,
        "ledger_entries": entries,
        "households": households + len(replay),
        "households_replayed": len(replay),
        "accounts_restated": restated,
        "holdings_reconciled": events,
    }


async def _replay(uow: UnitOfWork, staged: StagedLoad, households: Sequence[str]) -> int:
    """Households with history, replayed from their stored inputs (the load's included) as a
    REST opening does; other accounts whose lots changed are journalled and restated."""
    session = uow.session
    restated = 0
    for start in range(0, len(households), REPLAY_PAGE):
        page = list(households[start : start + REPLAY_PAGE])
        members = await members_of(session, page)
        try:
            replayed = await rebuild(session, page, members=members)
        except TaxError as exc:
            raise InvalidInput(
                f"book load {staged.load_id}: {exc}", [FieldProblem("lots.csv", str(exc))]
            ) from exc
        opened = await repo.loaded_among(session, staged, replayed.accounts)
        others = [a for a in replayed.changed() if a not in opened]
        if others:
            await repo.add_ledger_entries(
                session, replayed.restatements(OPENING, None, exclude=opened)
            )
            restated += len(await request_restated(session, others, cause="household-change"))
    return restated


async def _publish(uow: UnitOfWork, staged: StagedLoad) -> int:
    """One holdings-reconciled per loaded account (as a REST opening publishes it), a page
    of accounts at a time, each page written to the outbox before the next is read."""
    session = uow.session
    after, published = 0, 0
    while True:
        page = await repo.loaded_books_page(session, staged, after, PAGE)
        if not page:
            return published
        documents = await repo.position_documents(session, [r.account_id for r in page])
        sleeve_cash = await repo.sleeve_cash_of(session, [r.account_id for r in page])
        for r in page:
            event = HoldingsReconciledV2(
                account_id=r.account_id,
                household_id=r.household_id,
                as_of=r.as_of,
                cash=r.cash,
                positions=[],  # spliced in as the database wrote them
                cause=OPENING,
                realized_this_year=realized_year(r.as_of.year, []),
                sleeve_cash=sleeve_cash_v1(r.cash, sleeve_cash.get(r.account_id, {})),
            )
            Snapshot(event, documents.get(r.account_id), r.tenant).publish(uow)
        await uow.flush_events()
        published += len(page)
        after = page[-1].line


SPEC = BookLoadSpec(
    files=files_of("taxlot-svc"),
    table=book_loads,
    checks=check,
    apply=apply,
    typed=True,
)
