"""Cash requests: withdrawals and deposits per account, raised (sells) or invested (buys) by
the engine in runs of their own (trigger `cash`), each request following its run's outcome
for its account. Requests due later wait; a periodic sweep starts them on their day."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import RebalanceChunkRequestedV1, RunTrigger
from ballast_common.errors import FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import Book, RebalanceResult, Request, RequestKind, Scope
from ballast_engine.rebalance import rebalance_book
from ballast_engine.scenario import (
    SCENARIO_FORMAT,
    account_to_dict,
    reference_to_dict,
    request_to_dict,
)
from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc import cash_repository as cash_repo
from rebalance_svc import repository as repo
from rebalance_svc import service
from rebalance_svc.cash_repository import AccountFacts, CashAsk, Outcome
from rebalance_svc.cash_schemas import CashRequestIn, CashRequestOut, CashStatus
from rebalance_svc.preparation import prepare
from rebalance_svc.settings import Settings
from rebalance_svc.tables import CashRequest, Run

log = logging.getLogger(__name__)

CASH_TRIGGER = "cash"  # the trigger GET /runs shows for a run of cash requests
# What the chunk events of such a run say: the contract's RunTrigger has no "cash". A chunk
# is told to be one by kind "rebalance" over every model ("*"), which a model change never is.
CHUNK_TRIGGER: RunTrigger = "manual"
CENT = Decimal("0.01")
SHORTFALLS = frozenset({"cash_shortfall", "withdrawal_shortfall"})  # the engine's notices


def today_utc() -> date:
    return datetime.now(UTC).date()


# --------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class Accepted:
    """What POST /cash-requests did: the run of those due today, and every request (as rows
    of `cash_requests`: plain dicts, no ORM object per request)."""

    run: Run | None
    requests: list[dict[str, Any]]


async def request_cash(
    uow: UnitOfWork,
    settings: Settings,
    asked: Sequence[CashRequestIn],
    *,
    tenant: str,
    requested_by: str,
    today: date | None = None,
) -> Accepted:
    """Check the requests (all or none: 422 naming each bad one), keep them, and start one run
    over those due today; the others wait for their day (or, for a busy account: a cash
    request in progress, trades in flight, until it is free)."""
    today = today or today_utc()
    facts = await cash_repo.account_facts(uow.session, tenant, [r.account_id for r in asked])
    problems = refusals(asked, facts, today)
    if problems:
        first = problems[0]
        raise InvalidInput(
            f"{len(problems)} problem(s) with the cash requests, the first: {first.field}: "
            f"{first.message}",
            problems,
        )
    now = datetime.now(UTC)
    rows = [
        {
            "request_id": uuid.uuid4(),
            "tenant": tenant,
            "account_id": r.account_id,
            "kind": r.kind,
            "amount": r.amount.quantize(CENT),
            "due_on": r.on or today,
            "sleeve_id": r.sleeve_id,
            "note": r.note,
            "status": "waiting",
            "run_id": None,
            "proposal_id": None,
            "reason": None,
            "requested_by": requested_by,
            "requested_at": now,
            "updated_at": now,
        }
        for r in asked
    ]
    due = [row for row in rows if row["due_on"] <= today and not facts[row["account_id"]].busy]
    run = None
    if due:
        run_id = uuid.uuid4()
        for row in due:
            row["status"], row["run_id"] = "started", run_id
        accounts = [row["account_id"] for row in due]
        run = await service.start_run(
            uow, settings, _plan(str(run_id), tenant, accounts, requested_by)
        )
    await cash_repo.add_requests(uow.session, rows)
    return Accepted(run, rows)


def refusals(
    asked: Sequence[CashRequestIn], facts: Mapping[str, AccountFacts], today: date
) -> list[FieldProblem]:
    """Each problem of the requests, naming its field: an account twice, a day past, an
    account unknown to the tenant, a sleeve the account does not have, a withdrawal more than
    the account is worth."""
    problems: list[FieldProblem] = []
    first: dict[str, int] = {}
    for i, r in enumerate(asked):
        at = f"requests[{i}]"
        if r.account_id in first:
            problems.append(
                FieldProblem(
                    f"{at}.account_id",
                    f"account {r.account_id} is asked twice (also requests[{first[r.account_id]}])"
                    ": one request per account in a body",
                )
            )
            continue
        first[r.account_id] = i
        if r.on is not None and r.on < today:
            problems.append(FieldProblem(f"{at}.on", f"{r.on} is past (today is {today}, UTC)"))
        fact = facts.get(r.account_id)
        if fact is None:
            problems.append(FieldProblem(f"{at}.account_id", f"unknown account {r.account_id}"))
            continue
        if r.sleeve_id is not None and r.sleeve_id not in fact.sleeves:
            has = (
                f"its sleeves: {', '.join(fact.sleeves)}"
                if fact.sleeves
                else "it has none: not a UMA"
            )
            problems.append(
                FieldProblem(
                    f"{at}.sleeve_id", f"account {r.account_id} has no sleeve {r.sleeve_id} ({has})"
                )
            )
        if r.kind != "withdrawal":
            continue
        if fact.value is None:
            problems.append(
                FieldProblem(
                    f"{at}.amount",
                    f"account {r.account_id} has no holdings reconciled yet: nothing to withdraw "
                    f"{_money(r.amount)} from",
                )
            )
        elif r.amount > fact.value:
            problems.append(
                FieldProblem(
                    f"{at}.amount",
                    f"a withdrawal of {_money(r.amount)} is more than account {r.account_id} is "
                    f"worth ({_money(fact.value)}: cash and holdings at their last prices)",
                )
            )
    return problems


def _money(amount: object) -> str:
    return f"${amount:,.2f}"


async def start_due(uow: UnitOfWork, settings: Settings, today: date | None = None) -> list[Run]:
    """Start the waiting requests due by `today`: one run per tenant. Each request is started
    once, whichever instance sweeps (one at a time); a busy account (a cash request in
    progress, trades in flight) keeps its next one waiting until it is free."""
    claimed = await cash_repo.claim_due(uow.session, today or today_utc())
    by_tenant: dict[str, list[tuple[uuid.UUID, str]]] = defaultdict(list)
    for request_id, tenant, account_id in claimed:
        by_tenant[tenant].append((request_id, account_id))
    runs = []
    for tenant, requests in by_tenant.items():
        run_id = str(uuid.uuid4())
        await cash_repo.set_run(uow.session, [r for r, _ in requests], run_id)
        plan = _plan(run_id, tenant, [a for _, a in requests], None)
        runs.append(await service.start_run(uow, settings, plan))
    return runs


def _plan(
    run_id: str, tenant: str, account_ids: Sequence[str], started_by: str | None
) -> service.RunPlan:
    """A run of cash requests (kind rebalance over every model, recorded as trigger cash)."""
    return service.RunPlan(
        run_id,
        tenant,
        "rebalance",
        CHUNK_TRIGGER,
        account_ids=tuple(sorted(account_ids)),
        started_by=started_by,
        recorded_trigger=CASH_TRIGGER,
    )


# --------------------------------------------------------------------------------------------
# A chunk of a cash run


def is_cash_chunk(request: RebalanceChunkRequestedV1) -> bool:
    return request.kind == "rebalance" and request.model_id == service.ALL_MODELS


async def process_chunk(
    uow: UnitOfWork, envelope: Envelope, request: RebalanceChunkRequestedV1, settings: Settings
) -> service.Tally | None:
    """Raise (withdrawal) or invest (deposit) each account's amount, once per chunk as
    service.process_chunk does; each request gets its outcome: proposed, done, or failed
    with the reason. Returns None for a chunk done before."""
    session = uow.session
    run_id = str(request.run_id)
    if not await repo.claim_chunk(session, run_id, request.chunk, len(request.account_ids)):
        log.info("chunk already processed", extra={"run_id": run_id, "chunk": request.chunk})
        return None
    accounts = await repo.accounts_by_ids(session, request.account_ids)
    asks = await cash_repo.asks_of_run(session, run_id, request.account_ids)
    tally = service.Tally()
    known = {a.account_id for a in accounts}
    for account_id in request.account_ids:
        if account_id not in known:
            tally.skipped[account_id] = "account no longer known to rebalance-svc"
    prepared = await prepare(session, accounts, settings, [])
    tally.skipped.update(prepared.skipped)
    outcomes: list[Outcome] = []
    scenarios: dict[str, str] = {}
    for account_id, account in prepared.accounts.items():
        ask = asks.get(account_id)
        if ask is None:
            tally.skipped[account_id] = "no cash request of the account is started in this run"
            continue
        given = engine_account_for(account, ask.sleeve_id)
        if given is None:
            tally.skipped[account_id] = f"sleeve {ask.sleeve_id} is no longer in the strategy"
            continue
        engine_request = engine_request_for(ask)
        book = rebalance_book(Book(prepared.reference, (given,), engine_request))
        for failure in book.failures:
            tally.skipped[failure.account_id] = failure.error
        for result in book.results:
            tally.accounts_evaluated += 1
            row = prepared.rows[account_id]
            label = prepared.labels[account_id]
            # the account as prepared (all its sleeves) says whether trades name a sleeve
            service.record_proposal(uow, request.run_id, tally, prepared, label, result, row.tenant)
            # record_proposal put the proposal's trades in flight: the last one names it
            proposal = tally.in_flight[-1].proposal_id if result.trades else None
            outcomes.append(outcome_of(result, proposal))
            scenarios[account_id] = _scenario_json(given, engine_request)
    outcomes += [Outcome(a, "failed", None, why) for a, why in tally.skipped.items() if a in asks]
    await cash_repo.record_outcomes(session, run_id, outcomes)
    if scenarios:
        reference = reference_to_dict(prepared.reference)
        await repo.add_scenarios(session, run_id, request.chunk, reference, scenarios)
    await service.finish_chunk(uow, request, tally, "completed", None, envelope.tenant)
    return tally


async def chunk_failed(
    uow: UnitOfWork, envelope: Envelope, request: RebalanceChunkRequestedV1, reason: str
) -> None:
    """A chunk dead-lettered after its attempts: counted in its run as failed, and its
    accounts' requests failed with the reason."""
    await service.chunk_failed(uow, envelope, request, reason)
    await cash_repo.fail_started(
        uow.session,
        str(request.run_id),
        request.account_ids,
        f"chunk {request.chunk} of run {request.run_id} failed: {reason}",
    )


def engine_account_for(account: EngineAccount, sleeve_id: str | None) -> EngineAccount | None:
    """The account as the engine gets it: whole, or (a sleeve named) that sleeve alone with
    the account's own cash, so only it sells or buys (None: the account has no such
    sleeve)."""
    if sleeve_id is None:
        return account
    sleeves = tuple(s for s in account.sleeves if s.sleeve_id == sleeve_id)
    return replace(account, sleeves=sleeves, strategy_id=None) if sleeves else None


def engine_request_for(ask: CashAsk) -> Request:
    kind = RequestKind.RAISE_CASH if ask.kind == "withdrawal" else RequestKind.INVEST_CASH
    return Request(kind, float(ask.amount), Scope.AUTO)


def outcome_of(result: RebalanceResult, proposal_id: str | None) -> Outcome:
    """A request's outcome from the engine's result: trades proposed (with any shortfall
    noted); no trades but a shortfall (e.g. every holding restricted): failed; else done,
    nothing needed trading."""
    short = "; ".join(n.message for n in result.notices if n.code in SHORTFALLS) or None
    if result.trades:
        return Outcome(result.account_id, "proposed", proposal_id, short)
    if short is not None:
        return Outcome(result.account_id, "failed", None, short)
    noted = "; ".join(n.message for n in result.notices)
    return Outcome(
        result.account_id,
        "done",
        None,
        "no trade was needed" + (f" ({noted})" if noted else ": the cash is already there"),
    )


def _scenario_json(account: EngineAccount, request: Request) -> str:
    return to_json(
        {
            "format": SCENARIO_FORMAT,
            "account": account_to_dict(account),
            "request": request_to_dict(request),
        }
    ).decode()


# --------------------------------------------------------------------------------------------
# After the proposal: its trades settle (done), are rejected, or the proposal is declined


async def follow_settlements(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Proposed requests of these accounts whose trades all settled are done."""
    await cash_repo.finish_settled(uow.session, [d.payload.account_id for d in deliveries])


async def follow_rejected_orders(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """A request whose proposal's order the custodian rejected failed."""
    await cash_repo.fail_proposed(
        uow.session,
        {
            d.payload.proposal_id: f"the custodian rejected the {d.payload.side} of "
            f"{d.payload.symbol}: {d.payload.reason}"
            for d in deliveries
        },
    )


async def follow_declined(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """A request whose proposal a person rejected failed."""
    await cash_repo.fail_proposed(
        uow.session,
        {
            d.payload.proposal_id: f"its proposal was rejected by {d.payload.rejected_by}: "
            f"{d.payload.reason}"
            for d in deliveries
        },
    )


# --------------------------------------------------------------------------------------------
# Views


def view(row: CashRequest | Mapping[str, Any]) -> CashRequestOut:
    """A request as the API shows it (`on`: the day it is due)."""
    fields = row.model_dump() if isinstance(row, CashRequest) else row
    return CashRequestOut.model_validate({**fields, "on": fields["due_on"]})


async def list_views(
    session: AsyncSession,
    tenant: str,
    *,
    account_id: str | None,
    status: CashStatus | None,
    run_id: uuid.UUID | None,
    limit: int,
    offset: int,
) -> list[CashRequestOut]:
    """The tenant's requests, newest first (`limit` of them from `offset`)."""
    rows = await cash_repo.list_requests(
        session,
        tenant,
        account_id=account_id,
        status=status,
        run_id=run_id,
        limit=limit,
        offset=offset,
    )
    return [view(r) for r in rows]


async def get_view(session: AsyncSession, tenant: str, request_id: uuid.UUID) -> CashRequestOut:
    """One of the tenant's requests (404 otherwise)."""
    row = await cash_repo.get_request(session, tenant, request_id)
    if row is None:
        raise NotFound(f"no cash request {request_id}")
    return view(row)
