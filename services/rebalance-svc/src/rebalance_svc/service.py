"""rebalance-svc's rules: keep the read model current, rebalance on a model change, and scan
the whole book for drift."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from hashlib import sha1
from typing import Any

from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    DriftDetectedV1,
    EquivalenceSetChangedV1,
    ModelChangedV1,
    ModelTargetV1,
    RebalanceChunkCompletedV1,
    RebalanceChunkRequestedV1,
    RunKind,
    RunTrigger,
    SecuritiesChangedV1,
    TradesProposedV1,
    TradingHoldChangedV1,
)
from ballast_common.errors import FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from ballast_engine.harvesting import harvest_book
from ballast_engine.model import (
    Book,
    RebalanceResult,
    Request,
    RequestKind,
    Trade,
)
from ballast_engine.rebalance import rebalance_book
from ballast_engine.scenario import (
    SCENARIO_FORMAT,
    account_to_dict,
    reference_to_dict,
    request_to_dict,
)
from pydantic_core import to_json
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc import repository as repo
from rebalance_svc import scan
from rebalance_svc.direct_index import direct_index_doc, optimize_account
from rebalance_svc.engine_input import (
    DriftVerdict,
    ProposalExtras,
    drift_event_json,
    proposal_json,
    rebalanced_verdict,
)
from rebalance_svc.preparation import Prepared, prepare
from rebalance_svc.schemas import RunOut
from rebalance_svc.settings import Settings
from rebalance_svc.tables import Account, EquivalenceSet, Model, Run, Sleeve

log = logging.getLogger(__name__)
IDS = uuid.UUID("5d0c2b7e-4a1f-4c1e-9f0a-ba11a57ba11a")  # namespace of derived ids
ALL_MODELS = "*"  # the model id of a scan's run: every account, whatever it follows


# --------------------------------------------------------------------------------------------
# Read model


async def record_securities(uow: UnitOfWork, event: SecuritiesChangedV1) -> None:
    await repo.upsert_securities(
        uow.session,
        [
            {
                "symbol": s.symbol,
                "asset_class": s.asset_class,
                "sector": s.sector,
                "price": s.price,
                "fractional_eligible": s.fractional_eligible,
            }
            for s in event.securities
        ],
    )


async def record_equivalence_set(
    uow: UnitOfWork, event: EquivalenceSetChangedV1, changed_at: datetime
) -> bool:
    """Keep the set's newest version (a removed set stays as a tombstone); an older version
    arriving late changes nothing. Returns whether the read model changed."""
    stored = await repo.upsert_equivalence_set(
        uow.session,
        EquivalenceSet(
            set_id=event.set_id,
            name=event.name,
            members=[] if event.removed else sorted(set(event.members)),
            identical=event.identical,
            removed=event.removed,
            version=event.version,
            changed_at=changed_at,
        ),
    )
    if not stored:
        log.info(
            "ignoring stale equivalence set version",
            extra={"set_id": event.set_id, "version": event.version},
        )
    return stored


async def record_accounts(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Keep each account's whole state as its last account-changed of the batch says it:
    model or sleeves, settings, restrictions, tax settings. A named list a restriction refers
    to is kept with the members the last event naming it carries."""
    last: dict[str, Account] = {}
    sleeves: dict[str, list[Sleeve]] = {}
    lists: dict[str, list[str]] = {}
    for d in deliveries:
        event: AccountChangedV1 = d.payload
        last[event.account_id] = _account_row(event, d.envelope.tenant)
        strategy = event.strategy
        sleeves[event.account_id] = [
            Sleeve(
                account_id=event.account_id,
                sleeve_id=s.sleeve_id,
                position=i,
                model_id=s.model_id,
                weight=s.weight,
                band_kind=s.band.kind,
                band_width=s.band.width,
            )
            for i, s in enumerate(strategy.sleeves if strategy else [])
        ]
        lists.update(
            {r.value: sorted(set(r.symbols)) for r in event.restrictions if r.scope == "list"}
        )
    await repo.upsert_accounts(uow.session, list(last.values()))
    await repo.replace_sleeves(
        uow.session, list(sleeves), [s for each in sleeves.values() for s in each]
    )
    await repo.upsert_security_lists(uow.session, lists)


def _account_row(event: AccountChangedV1, tenant: str) -> Account:
    strategy = event.strategy
    return Account(
        account_id=event.account_id,
        tenant=tenant,
        model_id=event.model_id if strategy is None else None,
        status=event.status,
        household_id=event.household_id,
        account_type=event.account_type,
        rebalance_settings=(
            event.rebalance_settings.model_dump(mode="json", exclude_none=True)
            if event.rebalance_settings is not None
            else {}
        ),
        restrictions=[r.model_dump(mode="json", exclude={"symbols"}) for r in event.restrictions],
        tax_settings=(event.tax_settings.model_dump(mode="json") if event.tax_settings else None),
        rebalance_range=strategy.rebalance_range if strategy else None,
        interior_pct=strategy.interior_pct if strategy else None,
    )


async def record_trading_holds(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Hold or release each account of the batch as its last trading-hold-changed says."""
    last: dict[str, TradingHoldChangedV1] = {}
    for d in deliveries:
        last[d.payload.account_id] = d.payload
    held = [
        (e.account_id, e.reason or "held by the book of record", e.custodian, e.business_date)
        for e in last.values()
        if e.held
    ]
    released = [e.account_id for e in last.values() if not e.held]
    await repo.set_trading_holds(uow.session, held, released)


async def record_holdings(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Positions (with their lots under v2), cash (a UMA's per sleeve, when sent), household
    and recent loss sales of each account of the batch (its last snapshot in the batch: one
    account's events keep their order); the fills they reflect settle the trades that were
    waiting for them. The payloads are ``handlers.HoldingsView``s (v1 or v2)."""
    last: dict[str, Any] = {}
    for d in deliveries:
        last[d.payload.account_id] = d.payload
    books: list[repo.AccountBook] = []
    for event in last.values():
        year = event.realized_this_year
        books.append(
            repo.AccountBook(
                event.account_id,
                event.cash,
                [
                    _held(p["symbol"], quantity, p.get("lots", ()))
                    for p in event.positions
                    if (quantity := Decimal(p["quantity"])) != 0
                ],
                event.household_id,
                [s.model_dump() for s in event.recent_loss_sales],
                (year.year, year.short_term, year.long_term) if year else None,
                [part.model_dump(mode="json") for part in event.sleeve_cash] or None,
            )
        )
    await repo.replace_books(uow.session, books)
    fills = [f for d in deliveries for f in d.payload.fill_ids]
    if fills:
        await repo.mark_fills_reconciled(uow.session, fills)


def _held(
    symbol: str, quantity: Decimal, lots: Sequence[dict[str, Any]]
) -> tuple[str, Decimal, str, date | None]:
    """A position as the read model stores it, with the latest start of a holding period
    among its lots."""
    return symbol, quantity, _lots_json(lots), max((lot["acquired"] for lot in lots), default=None)


def _lots_json(lots: Sequence[dict[str, Any]]) -> str:
    """A position's lots as the read model stores them (``LotV1`` as JSON, every field)."""
    return to_json(
        [
            {
                "lot_id": lot["lot_id"],
                "quantity": lot["quantity"],
                "acquired": lot["acquired"],
                "cost_basis": lot["cost_basis"],
                "wash_adjustment": lot.get("wash_adjustment", "0"),
                "sleeve_id": lot.get("sleeve_id"),
            }
            for lot in lots
        ]
    ).decode()


# --------------------------------------------------------------------------------------------
# Trades in flight: an account is not rebalanced again before its last trades are settled


async def record_fills(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Fills of our trades; a fill counts once the book of record reflected it too."""
    await repo.mark_fills_received(
        uow.session,
        [(d.payload.fill_id, d.payload.trade_id, d.payload.account_id, d.payload.quantity)
         for d in deliveries],
    )  # fmt: skip


async def record_rejections(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """What the custodian rejected of our trades is settled (it will not be traded)."""
    await repo.settle_rejected(
        uow.session, [(d.payload.trade_id, d.payload.quantity) for d in deliveries]
    )


async def record_approvals(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """What a person approved is what stays in flight: trades removed before approval are
    dropped, and edited quantities replace the proposed ones."""
    await repo.align_in_flight(
        uow.session,
        [d.payload.proposal_id for d in deliveries],
        [(t.trade_id, t.quantity) for d in deliveries for t in d.payload.trades],
    )


async def record_declined(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """A proposal a person rejected leaves nothing in flight."""
    await repo.drop_proposals(uow.session, [d.payload.proposal_id for d in deliveries])


# --------------------------------------------------------------------------------------------
# Runs: planned in chunks, each chunk processed by any instance in its own transaction


async def apply_model_change(
    uow: UnitOfWork,
    envelope: Envelope,
    event: ModelChangedV1,
    settings: Settings,
) -> Run | None:
    """Store the new model version and start a run over every account on it (SMAs that
    follow it, UMAs with a sleeve on it)."""
    model = await repo.get_model(uow.session, event.model_id)
    if model is not None and model.version >= event.version:
        log.info(
            "ignoring stale model version",
            extra={
                "model_id": event.model_id,
                "version": event.version,
                "stored_version": model.version,
            },
        )
        return None
    targets = {t.symbol: str(t.weight) for t in event.targets}
    if model is None:
        model = Model(
            model_id=event.model_id, name=event.name, version=event.version, targets=targets
        )
    model.name, model.version, model.tenant = event.name, event.version, envelope.tenant
    model.targets = targets
    model.kind, model.swap_back = event.kind, event.swap_back
    model.target_settings = target_settings(event)
    model.parent = event.parent.model_dump(mode="json") if event.parent else None
    model.direct_index = direct_index_doc(event)
    await repo.save(uow.session, model)
    return await start_run(
        uow,
        settings,
        RunPlan(
            run_id=_run_id(str(envelope.id)),
            tenant=envelope.tenant,
            kind="rebalance",
            trigger="model-change",
            model_id=model.model_id,
            model_version=model.version,
        ),
    )


_TARGET_DEFAULTS = {
    name: f.get_default(call_default_factory=True)
    for name, f in ModelTargetV1.model_fields.items()
    # a direct index's exposures are kept with its risk model (`Model.direct_index`)
    if name not in ("symbol", "weight", "factor_exposures")
}


def target_settings(event: ModelChangedV1) -> dict[str, dict[str, Any]]:
    """Per symbol, the manager's settings of each target that set any (defaults left out)."""
    out = {}
    for t in event.targets:
        doc = {
            name: value
            for name, value in t.model_dump(mode="json", include=set(_TARGET_DEFAULTS)).items()
            if value != _TARGET_DEFAULTS[name]
        }
        if doc:
            out[t.symbol] = doc
    return out


@dataclass(frozen=True)
class RunPlan:
    """What a run does, before its accounts are split into chunks."""

    run_id: str
    tenant: str  # whose accounts it covers
    kind: RunKind
    trigger: RunTrigger
    model_id: str = ALL_MODELS
    model_version: int = 0
    rebalance_out_of_tolerance: bool = False
    account_ids: tuple[str, ...] | None = None  # a harvest of named accounts, cash requests
    started_by: str | None = None  # the caller who started it
    # the trigger the run is recorded with when the contract's RunTrigger has no word for it
    # (cash requests: "cash"; its chunk events say `trigger`)
    recorded_trigger: str | None = None


async def start_scan(
    uow: UnitOfWork,
    settings: Settings,
    *,
    rebalance: bool,
    trigger: RunTrigger,
    tenant: str,
    key: str | None = None,
    started_by: str | None = None,
) -> Run:
    """Scan every account of `tenant` for drift; with `rebalance`, rebalance those out of
    tolerance. A `key` names the run (the same key: the same run, started once)."""
    plan = RunPlan(
        _run_id(key),
        tenant,
        "scan",
        trigger,
        rebalance_out_of_tolerance=rebalance,
        started_by=started_by,
    )
    return await start_run(uow, settings, plan)


async def start_interval_scans(uow: UnitOfWork, settings: Settings, interval_key: str) -> list[Run]:
    """The interval's scan of each tenant that has accounts, one run per tenant, its id
    derived from the interval and the tenant (every replica starts the same runs, once)."""
    return [
        await start_scan(
            uow,
            settings,
            rebalance=settings.scan_rebalance,
            trigger="interval-scan",
            tenant=tenant,
            key=f"{interval_key}:{tenant}",
        )
        for tenant in await repo.tenants_with_accounts(uow.session)
    ]


async def start_interval_harvests(
    uow: UnitOfWork, settings: Settings, interval_key: str
) -> list[Run]:
    """The interval's harvest of each tenant that has accounts, as start_interval_scans."""
    return [
        await start_harvest(
            uow,
            settings,
            tenant=tenant,
            trigger="interval-harvest",
            key=f"{interval_key}:{tenant}",
        )
        for tenant in await repo.tenants_with_accounts(uow.session)
    ]


def _run_id(key: str | None) -> str:
    return str(uuid.uuid5(IDS, f"run:{key}") if key else uuid.uuid4())


async def start_harvest(
    uow: UnitOfWork,
    settings: Settings,
    account_ids: list[str] | None = None,
    *,
    tenant: str,
    trigger: RunTrigger = "harvest",
    key: str | None = None,
    started_by: str | None = None,
) -> Run:
    """Harvest tax losses in the accounts of `tenant` that have it on (or in those named; an
    unknown one, or another tenant's, is refused, one with harvesting off is skipped saying
    so)."""
    if account_ids is not None:
        known = await repo.existing_account_ids(uow.session, account_ids, tenant)
        unknown = [(i, a) for i, a in enumerate(account_ids) if a not in known]
        if unknown:
            raise InvalidInput(
                f"unknown account {unknown[0][1]}",
                [FieldProblem(f"accounts[{i}]", f"unknown account {a}") for i, a in unknown],
            )
    plan = RunPlan(
        _run_id(key),
        tenant,
        "harvest",
        trigger,
        account_ids=tuple(dict.fromkeys(account_ids)) if account_ids is not None else None,
        started_by=started_by,
    )
    return await start_run(uow, settings, plan)


async def start_run(uow: UnitOfWork, settings: Settings, plan: RunPlan) -> Run:
    """Record the run and publish its chunks (`rebalance-chunk-requested`), each a few
    hundred accounts in account-id order, keyed to spread over the topic's partitions. A run
    with no accounts is complete at once. A run started before (its id taken: another
    replica's interval scan) is returned as it is, not started twice."""
    await repo.lock_run_id(uow.session, plan.run_id)
    existing = await repo.get_run(uow.session, plan.run_id, tenant=None)  # ids are global
    if existing is not None:
        return existing
    chunks = await repo.selected_chunks(uow.session, _selection(plan), settings.chunk_size)
    total = sum(len(c) for c in chunks)
    run = Run(
        run_id=plan.run_id,
        tenant=plan.tenant,
        started_by=plan.started_by,
        trigger=plan.recorded_trigger or plan.trigger,
        kind=plan.kind,
        model_id=plan.model_id,
        model_version=plan.model_version,
        rebalance_out_of_tolerance=plan.rebalance_out_of_tolerance,
        accounts=total,
        chunks=len(chunks),
        finished_at=None if chunks else datetime.now(UTC),
    )
    await repo.save(uow.session, run)
    for index, account_ids in enumerate(chunks):
        uow.publish(
            RebalanceChunkRequestedV1(
                run_id=uuid.UUID(plan.run_id),
                chunk=index,
                chunks=len(chunks),
                kind=plan.kind,
                trigger=plan.trigger,
                model_id=plan.model_id,
                model_version=plan.model_version,
                account_ids=account_ids,
                rebalance_out_of_tolerance=plan.rebalance_out_of_tolerance,
            ),
            key=f"{plan.run_id}:{index}",
            tenant=plan.tenant,
        )
    log.info(
        "run started",
        extra={"run_id": plan.run_id, "kind": plan.kind, "accounts": total, "chunks": len(chunks)},
    )
    return run


def _selection(plan: RunPlan) -> repo.Selection:
    if plan.kind == "rebalance" and plan.account_ids is not None:
        return repo.Selection(tenant=plan.tenant, account_ids=plan.account_ids)
    if plan.kind == "rebalance":
        return repo.Selection(tenant=plan.tenant, model_id=plan.model_id)
    if plan.kind == "harvest":
        return repo.Selection(
            tenant=plan.tenant, account_ids=plan.account_ids, harvesting=plan.account_ids is None
        )
    return repo.Selection(tenant=plan.tenant)


@dataclass
class Tally:
    """What a chunk did, for its run's totals."""

    accounts_evaluated: int = 0
    accounts_out_of_tolerance: int = 0
    proposals: int = 0
    trades: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    in_flight: list[repo.TradeInFlight] = field(default_factory=list)


async def process_chunk(
    uow: UnitOfWork, envelope: Envelope, request: RebalanceChunkRequestedV1, settings: Settings
) -> Tally | None:
    """Rebalance, scan or harvest one chunk of a run, once: a chunk done before (by this or
    another instance) changes nothing. Returns None for such a repeat."""
    run_id = str(request.run_id)
    if not await repo.claim_chunk(uow.session, run_id, request.chunk, len(request.account_ids)):
        log.info("chunk already processed", extra={"run_id": run_id, "chunk": request.chunk})
        return None
    accounts = await repo.accounts_by_ids(uow.session, request.account_ids)
    tally = Tally()
    known = {a.account_id for a in accounts}
    for account_id in request.account_ids:
        if account_id not in known:
            tally.skipped[account_id] = "account no longer known to rebalance-svc"
    if request.kind == "rebalance":
        await _rebalance_chunk(uow, request, accounts, settings, tally, envelope.tenant)
    elif request.kind == "scan":
        await _scan_chunk(uow, request, accounts, settings, tally)
    else:
        await _harvest_chunk(uow, request, accounts, settings, tally)
    await finish_chunk(uow, request, tally, "completed", None, envelope.tenant)
    return tally


async def chunk_failed(
    uow: UnitOfWork, envelope: Envelope, request: RebalanceChunkRequestedV1, reason: str
) -> None:
    """A chunk that failed after its attempts (it is dead-lettered) still counts toward its
    run, as failed with the reason, so the run completes."""
    run_id = str(request.run_id)
    if not await repo.claim_chunk(uow.session, run_id, request.chunk, len(request.account_ids)):
        return
    tally = Tally(
        skipped={a: f"chunk {request.chunk} failed: {reason}" for a in request.account_ids}
    )
    await finish_chunk(uow, request, tally, "failed", reason, envelope.tenant)


async def finish_chunk(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    tally: Tally,
    status: str,
    error: str | None,
    tenant: str,
) -> None:
    run_id = str(request.run_id)
    await repo.add_trades_in_flight(uow.session, tally.in_flight)
    await repo.finish_chunk(
        uow.session,
        run_id,
        request.chunk,
        status=status,
        accounts_evaluated=tally.accounts_evaluated,
        accounts_out_of_tolerance=tally.accounts_out_of_tolerance,
        proposals=tally.proposals,
        trades=tally.trades,
        skipped=tally.skipped,
        error=error,
    )
    await repo.count_chunk_in_run(
        uow.session, run_id, tally_counts(tally), failed=error is not None
    )
    uow.publish(
        RebalanceChunkCompletedV1(
            run_id=request.run_id,
            chunk=request.chunk,
            chunks=request.chunks,
            kind=request.kind,
            trigger=request.trigger,
            model_id=request.model_id,
            model_version=request.model_version,
            status="failed" if error is not None else "completed",
            accounts=len(request.account_ids),
            accounts_evaluated=tally.accounts_evaluated,
            accounts_out_of_tolerance=tally.accounts_out_of_tolerance,
            accounts_skipped=len(tally.skipped),
            proposals=tally.proposals,
            trades=tally.trades,
            error=error,
        ),
        key=run_id,
        tenant=tenant,
    )


def tally_counts(tally: Tally) -> dict[str, int]:
    return {
        "accounts_evaluated": tally.accounts_evaluated,
        "accounts_out_of_tolerance": tally.accounts_out_of_tolerance,
        "accounts_skipped": len(tally.skipped),
        "proposals": tally.proposals,
        "trades": tally.trades,
    }


async def _rebalance_chunk(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    accounts: list[Account],
    settings: Settings,
    tally: Tally,
    tenant: str,
) -> None:
    """A model change: every account of the chunk rebalanced with the run's model version. If
    the model moved on meanwhile, the newer version's run rebalances them instead."""
    model = await repo.get_model(uow.session, request.model_id)
    if model is None or model.version != request.model_version:
        newer = model.version if model is not None else "none"
        for a in accounts:
            tally.skipped[a.account_id] = (
                f"model {request.model_id} is at version {newer} now; its own run rebalances "
                "the account"
            )
        return
    prepared = await prepare(uow.session, accounts, settings, [model])
    tally.skipped.update(prepared.skipped)
    label = (model.model_id, model.version)
    rebalanced = []
    for result, extras in _rebalanced(prepared, list(prepared.accounts), tally):
        account = prepared.rows[result.account_id]
        tenant_of = account.tenant or tenant
        _publish_drift(uow, request.run_id, tally, label, rebalanced_verdict(result), tenant_of)
        record_proposal(uow, request.run_id, tally, prepared, label, result, tenant_of, extras)
        rebalanced.append(result.account_id)
    await _store_scenarios(uow, request, prepared, rebalanced)


async def _scan_chunk(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    accounts: list[Account],
    settings: Settings,
    tally: Tally,
) -> None:
    """The engine's vectorized drift scan: drift-detected for each account scanned (out of
    tolerance when any level is outside its band); with `rebalance_out_of_tolerance`, those
    out of tolerance are rebalanced too (trades-proposed)."""
    out = await scan.scan_chunk(uow, request.run_id, accounts, tally, settings)
    if request.rebalance_out_of_tolerance and out:
        full = await prepare(uow.session, out, settings, [])  # with lots: tax-aware
        outcome = list(_rebalanced(full, list(full.accounts), tally))
        for result, extras in outcome:
            account = full.rows[result.account_id]
            label = full.labels[result.account_id]
            record_proposal(uow, request.run_id, tally, full, label, result, account.tenant, extras)
        await _store_scenarios(uow, request, full, [r.account_id for r, _ in outcome])


async def _harvest_chunk(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    accounts: list[Account],
    settings: Settings,
    tally: Tally,
) -> None:
    """The engine sells lots past each account's thresholds, buys replacements that keep
    exposure without a wash sale, and says what each saves; trades-proposed per account with
    trades."""
    chosen = []
    for account in accounts:
        if (account.tax_settings or {}).get("harvest"):
            chosen.append(account)
        else:
            tally.skipped[account.account_id] = (
                "tax-loss harvesting is off for this account (its tax settings on account-svc)"
            )
    prepared = await prepare(uow.session, chosen, settings, [])
    tally.skipped.update(prepared.skipped)
    ready = []
    for account_id, account in prepared.accounts.items():
        if account.tax is None:
            tally.skipped[account_id] = "no tax lots from the book of record yet"
        else:
            ready.append(account_id)
    outcome = harvest_book(Book(prepared.reference, tuple(prepared.accounts[a] for a in ready)))
    for failure in outcome.failures:
        tally.skipped[failure.account_id] = failure.error
    for harvested in outcome.results:
        tally.accounts_evaluated += 1
        result, extras = _with_optimizer(prepared, harvested, tally, harvest_run=True)
        account = prepared.rows[result.account_id]
        label = prepared.labels[result.account_id]
        record_proposal(uow, request.run_id, tally, prepared, label, result, account.tenant, extras)
    await _store_scenarios(
        uow,
        request,
        prepared,
        [r.account_id for r in outcome.results],
        Request(RequestKind.HARVEST),
    )


SKIPPED_SHOWN = 1000


def run_view(run: Run, skipped: dict[str, str] | None = None) -> RunOut:
    return RunOut.model_validate(
        {**run.model_dump(), "complete": run.finished_at is not None, "skipped": skipped or {}}
    )


async def run_with_skipped(session: AsyncSession, run_id: str, *, tenant: str | None) -> RunOut:
    """A run (404 unless of `tenant`, when given) with why its accounts were skipped (the
    first SKIPPED_SHOWN of them)."""
    run = await repo.get_run(session, run_id, tenant=tenant)
    if run is None:
        raise NotFound(f"no run {run_id}")
    return run_view(run, await repo.run_skipped(session, run_id, SKIPPED_SHOWN))


# --------------------------------------------------------------------------------------------
# Engine and events


def _rebalanced(
    prepared: Prepared, account_ids: list[str], tally: Tally
) -> Iterator[tuple[RebalanceResult, ProposalExtras | None]]:
    """Each account's result as soon as it is made (an account that cannot go is skipped
    with the engine's reason), a direct-index sleeve's trades from the optimizer: its events
    are written before the next account is rebalanced, so a chunk never holds all its
    results at once."""
    for account_id in account_ids:
        outcome = rebalance_book(Book(prepared.reference, (prepared.accounts[account_id],)))
        for failure in outcome.failures:
            tally.skipped[failure.account_id] = failure.error
            log.warning(
                "account skipped",
                extra={"account_id": failure.account_id, "reason": failure.error},
            )
        for result in outcome.results:
            yield _with_optimizer(prepared, result, tally)


def _with_optimizer(
    prepared: Prepared, result: RebalanceResult, tally: Tally, *, harvest_run: bool = False
) -> tuple[RebalanceResult, ProposalExtras | None]:
    """The result with the account's direct-index sleeves optimized (unchanged otherwise),
    and what the proposal carries of it."""
    if not prepared.indexes:
        return result, None
    account_id = result.account_id
    optimized = optimize_account(
        result,
        prepared.accounts[account_id],
        prepared.reference,
        prepared.indexes,
        prepared.realized.get(account_id, 0.0),
        harvest_run=harvest_run,
    )
    if optimized is None:
        return result, None
    if not optimized.result.trades and optimized.relaxed:
        # nothing to propose, yet a setting gave way: the run's skips say which and why
        tally.skipped[account_id] = "no trades: " + " ".join(optimized.notes)
    return optimized.result, ProposalExtras(
        optimized.tracking_error_before, optimized.tracking_error_after, optimized.notes
    )


async def _store_scenarios(
    uow: UnitOfWork,
    request: RebalanceChunkRequestedV1,
    prepared: Prepared,
    account_ids: Sequence[str],
    engine_request: Request | None = None,
) -> None:
    """What the engine was given for each account it rebalanced, so each decision replays:
    the chunk's reference once, each account's part as JSON text
    (GET /runs/{run}/scenarios/{account} joins them)."""
    request_part = request_to_dict(engine_request or Request())
    scenarios = {
        account_id: to_json(
            {
                "format": SCENARIO_FORMAT,
                "account": account_to_dict(prepared.accounts[account_id]),
                "request": request_part,
            }
        ).decode()
        for account_id in account_ids
    }
    await repo.add_scenarios(
        uow.session,
        str(request.run_id),
        request.chunk,
        reference_to_dict(prepared.reference),
        scenarios,
    )


def _publish_drift(
    uow: UnitOfWork,
    run_id: uuid.UUID,
    tally: Tally,
    label: tuple[str, int],
    verdict: DriftVerdict,
    tenant: str,
) -> None:
    """drift-detected with the engine's verdict (the one rule for in or out of tolerance),
    serialized from the verdict's arrays (a scan publishes one per account of the book)."""
    tally.accounts_evaluated += 1
    tally.accounts_out_of_tolerance += int(verdict.out_of_tolerance)
    uow.publish_json(
        DriftDetectedV1,
        drift_event_json(run_id, label, verdict),
        key=verdict.account_id,
        tenant=tenant,
    )


def derived_id(name: str) -> str:
    """`str(uuid.uuid5(IDS, name))`, without a UUID object (a chunk names thousands)."""
    h = sha1(_IDS_BYTES + name.encode()).hexdigest()
    # the version nibble is 5, the variant's two high bits are 10 (RFC 4122)
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_IDS_BYTES = IDS.bytes
_VARIANT = {f"{n:x}": f"{n & 0x3 | 0x8:x}" for n in range(16)}


def _trade_id(proposal_id: str, trade: Trade, uma: bool) -> str:
    """The same trade of the same proposal always has the same id (a UMA's: per sleeve)."""
    if uma:
        return derived_id(f"trade:{proposal_id}:{trade.sleeve_id}:{trade.side}:{trade.symbol}")
    return derived_id(f"trade:{proposal_id}:{trade.side}:{trade.symbol}")


def record_proposal(
    uow: UnitOfWork,
    run_id: uuid.UUID,
    tally: Tally,
    prepared: Prepared,
    label: tuple[str, int],
    result: RebalanceResult,
    tenant: str,
    extras: ProposalExtras | None = None,
) -> None:
    """trades-proposed with the engine's trades; a UMA's trades name their sleeve, and its
    strategic rebalance's cash movements come with them (booked when they are approved); a
    direct-index sleeve's tracking errors and the optimizer's explanation too."""
    if not result.trades:
        return
    account_id = result.account_id
    proposal_id = derived_id(f"proposal:{run_id}:{account_id}")
    uma = prepared.accounts[account_id].strategy_id is not None
    tally.proposals += 1
    tally.trades += len(result.trades)
    trade_ids = [_trade_id(proposal_id, t, uma) for t in result.trades]
    run = str(run_id)
    tally.in_flight += [
        repo.TradeInFlight(trade_id, account_id, proposal_id, run, t.quantity)
        for t, trade_id in zip(result.trades, trade_ids, strict=True)
    ]
    uow.publish_json(
        TradesProposedV1,
        proposal_json(proposal_id, run_id, label, result, trade_ids, uma, extras),
        key=account_id,
        tenant=tenant,
    )
