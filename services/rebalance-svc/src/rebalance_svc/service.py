"""rebalance-svc's rules: keep the read model current, rebalance on a model change, and scan
the whole book for drift."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    DriftDetectedV1,
    EquivalenceSetChangedV1,
    HoldingsReconciledV1,
    HoldingsReconciledV2,
    LossSaleV1,
    ModelChangedV1,
    SecuritiesChangedV1,
    SecurityDriftV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.errors import FieldProblem, InvalidInput
from ballast_common.uow import UnitOfWork
from ballast_engine.drift import book_arrays, scan_drift
from ballast_engine.harvesting import harvest_book
from ballast_engine.model import Account as EngineAccount
from ballast_engine.model import (
    Book,
    RebalanceInput,
    RebalanceResult,
    Reference,
    Request,
    RequestKind,
)
from ballast_engine.rebalance import rebalance_book
from ballast_engine.scenario import scenario_to_dict
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc import repository as repo
from rebalance_svc.engine_input import (
    AccountRow,
    Defaults,
    EquivalenceSetRow,
    PositionRow,
    SecurityDrift,
    SecurityRow,
    SleeveRow,
    TaxContext,
    engine_account,
    engine_tax,
    equivalence_sets_for,
    money,
    reference_for,
    scanned_accounts,
    security_drift,
    strategy_for,
    tax_context,
)
from rebalance_svc.settings import Settings
from rebalance_svc.tables import Account, EquivalenceSet, Model, Run, Sleeve

log = logging.getLogger(__name__)
IDS = uuid.UUID("5d0c2b7e-4a1f-4c1e-9f0a-ba11a57ba11a")  # namespace of derived ids
WEIGHT = Decimal("0.000001")
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


async def record_account(uow: UnitOfWork, event: AccountChangedV1, tenant: str) -> None:
    """Keep the account's whole state: model or sleeves, settings, restrictions, tax settings.
    A named list a restriction refers to is kept with the members the event carries."""
    strategy = event.strategy
    await repo.upsert_account(
        uow.session,
        Account(
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
            restrictions=[
                r.model_dump(mode="json", exclude={"symbols"}) for r in event.restrictions
            ],
            tax_settings=(
                event.tax_settings.model_dump(mode="json") if event.tax_settings else None
            ),
            rebalance_range=strategy.rebalance_range if strategy else None,
            interior_pct=strategy.interior_pct if strategy else None,
        ),
    )
    await repo.replace_sleeves(
        uow.session,
        event.account_id,
        [
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
        ],
    )
    await repo.upsert_security_lists(
        uow.session,
        {r.value: sorted(set(r.symbols)) for r in event.restrictions if r.scope == "list"},
    )


async def record_holdings(
    uow: UnitOfWork, event: HoldingsReconciledV1 | HoldingsReconciledV2
) -> None:
    """Positions (with their lots under v2), cash, household and recent loss sales."""
    if isinstance(event, HoldingsReconciledV2):
        positions = [
            (p.symbol, p.quantity, [lot.model_dump(mode="json") for lot in p.lots])
            for p in event.positions
            if p.quantity != 0
        ]
        household_id = event.household_id
        sales = [s.model_dump() for s in event.recent_loss_sales]
        year = event.realized_this_year
        realized = (year.year, year.short_term, year.long_term) if year else None
    else:
        positions = [(p.symbol, p.quantity, []) for p in event.positions if p.quantity != 0]
        household_id, sales, realized = None, [], None
    await repo.replace_holdings(
        uow.session, event.account_id, event.cash, positions, household_id, sales, realized
    )


# --------------------------------------------------------------------------------------------
# Engine inputs from the read model


@dataclass
class Prepared:
    """Everything a run gives the engine: one reference, the accounts ready to go (with
    their tax context, which the engine does not take yet), and why others were skipped."""

    reference: Reference
    accounts: dict[str, EngineAccount] = field(default_factory=dict)
    rows: dict[str, Account] = field(default_factory=dict)
    labels: dict[str, tuple[str, int]] = field(default_factory=dict)  # model id and version
    taxes: dict[str, TaxContext] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def defaults_of(settings: Settings) -> Defaults:
    return Defaults(settings.min_trade_value, settings.security_tolerance, settings.cash_band)


async def prepare(
    session: AsyncSession, accounts: list[Account], settings: Settings, extra_models: list[Model]
) -> Prepared:
    """Build the engine's book from the read model; an account that cannot go (inactive, no
    holdings yet, a model of it not published yet) is skipped with its reason."""
    ids = [a.account_id for a in accounts]
    sleeves = await repo.sleeves_of(session, ids)
    rows = {a.account_id: _row(a, sleeves.get(a.account_id, [])) for a in accounts}
    wanted = sorted({m for r in rows.values() for m in r.model_ids()})
    models = await repo.models(session, wanted)
    models.update({m.model_id: m for m in extra_models})
    cash, holdings = await repo.books_of(session, ids)
    securities = {
        s.symbol: SecurityRow(s.symbol, s.price, s.asset_class, s.sector, s.fractional_eligible)
        for s in await repo.all_securities(session)
    }
    households = await repo.households_of(session, ids)
    for a in accounts:
        if a.household_id:
            households.setdefault(a.account_id, a.household_id)
    sales = await _loss_sales(session, ids, households)
    realized = await repo.realized_of(session, ids)
    peers: dict[str, list[tuple[str, str, list[dict[str, Any]]]]] = defaultdict(list)
    for household_id, peer_id, symbol, lots in await repo.household_lots(
        session, sorted(set(households.values()))
    ):
        peers[household_id].append((peer_id, symbol, lots))
    trade_date = datetime.now(UTC).date()
    model_targets = {
        m: {s: Decimal(w) for s, w in mod.targets.items()} for m, mod in models.items()
    }
    strategies = [strategy_for(r) for r in rows.values() if r.is_uma]
    equivalence_sets, left_out = equivalence_sets_for(
        [
            EquivalenceSetRow(e.set_id, tuple(e.members), e.identical)
            for e in await repo.live_equivalence_sets(session)
        ],
        securities,
    )
    for problem in left_out:
        log.warning("equivalence set member left out", extra={"problem": problem})
    reference = reference_for(
        securities,
        model_targets,
        strategies,
        await repo.security_lists(session),
        equivalence_sets,
    )
    prepared = Prepared(reference)
    defaults = defaults_of(settings)
    for account in accounts:
        account_id = account.account_id
        row = rows[account_id]
        missing = [m for m in row.model_ids() if m not in models]
        if account.status != "active":
            prepared.skipped[account_id] = f"account is {account.status}"
        elif not row.model_ids():
            prepared.skipped[account_id] = "account follows no model"
        elif missing:
            prepared.skipped[account_id] = f"model {missing[0]} not published yet"
        elif account_id not in cash:
            prepared.skipped[account_id] = "no holdings reconciled yet"
        else:
            positions = [
                PositionRow(h.symbol, h.quantity, h.lots) for h in holdings.get(account_id, [])
            ]
            household = households.get(account_id)
            context = tax_context(
                account_id,
                account.account_type,
                household,
                account.tax_settings,
                sales.get(household or account_id, []),
            )
            has_lots = any(p.lots for p in positions)
            tax = (
                engine_tax(
                    context,
                    trade_date,
                    realized.get(account_id),
                    peers.get(household, []) if household else [],
                )
                if has_lots
                else None
            )
            prepared.accounts[account_id] = engine_account(
                row, cash[account_id], positions, defaults, model_targets, equivalence_sets, tax
            )
            prepared.rows[account_id] = account
            prepared.labels[account_id] = _label(row, models)
            prepared.taxes[account_id] = context
    return prepared


def _row(account: Account, sleeves: list[Sleeve]) -> AccountRow:
    return AccountRow(
        account.account_id,
        account.model_id,
        account.rebalance_settings,
        account.restrictions,
        tuple(
            SleeveRow(s.sleeve_id, s.model_id, s.weight, s.band_kind, s.band_width) for s in sleeves
        ),
        account.rebalance_range,
        account.interior_pct,
    )


def _label(row: AccountRow, models: dict[str, Model]) -> tuple[str, int]:
    """The model an account's events name: an SMA's model; a UMA's largest sleeve's."""
    if row.is_uma:
        model_id = max(row.sleeves, key=lambda s: s.weight).model_id
    else:
        model_id = row.model_id or ""
    return model_id, models[model_id].version


async def _loss_sales(
    session: AsyncSession, account_ids: list[str], households: dict[str, str]
) -> dict[str, list[LossSaleV1]]:
    """Recent loss sales by household (or by account where the household is unknown)."""
    rows = await repo.loss_sales_of(session, account_ids, sorted(set(households.values())))
    out: dict[str, list[LossSaleV1]] = defaultdict(list)
    for r in rows:
        out[r.household_id or r.account_id].append(
            LossSaleV1(
                symbol=r.symbol,
                sold_on=r.sold_on,
                quantity=r.quantity,
                loss_per_share=r.loss_per_share,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Model change


async def apply_model_change(
    uow: UnitOfWork,
    envelope: Envelope,
    event: ModelChangedV1,
    settings: Settings,
) -> Run | None:
    """Store the new model version and rebalance every active account on it (SMAs that
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
    else:
        model.name, model.version, model.targets = event.name, event.version, targets
    await repo.save(uow.session, model)
    return await rebalance_model(
        uow, model, "model-changed", str(envelope.id), envelope.tenant, settings
    )


async def rebalance_model(
    uow: UnitOfWork,
    model: Model,
    trigger: str,
    trigger_id: str,
    tenant: str,
    settings: Settings,
) -> Run:
    """One run of the engine over the model's accounts. An account that cannot be rebalanced
    is skipped with its reason, and the rest of the book still rebalances. The scenario of
    every rebalanced account is stored, so each decision can be replayed."""
    run_id = uuid.uuid5(IDS, f"run:{trigger_id}")
    run = Run(
        run_id=str(run_id), trigger=trigger, model_id=model.model_id, model_version=model.version
    )
    accounts = await repo.accounts_on_model(uow.session, model.model_id)
    prepared = await prepare(uow.session, accounts, settings, [model])
    run.skipped.update(prepared.skipped)
    outcome = _rebalance(prepared, list(prepared.accounts), run)
    for result in outcome:
        account = prepared.rows[result.account_id]
        label = (model.model_id, model.version)
        tenant_of = account.tenant or tenant
        drift = security_drift(result)
        max_abs = max((abs(d.drift) for d in drift), default=Decimal(0))
        out = max_abs > settings.drift_tolerance
        _publish_drift(
            uow,
            run,
            account.account_id,
            label,
            result.summary.account_value,
            max_abs,
            settings.drift_tolerance,
            out,
            drift,
            tenant_of,
        )
        _propose(uow, run, prepared, label, result, tenant_of)
    await _store_scenarios(uow, run, prepared, outcome)
    run.finished_at = datetime.now(UTC)
    await repo.save(uow.session, run)
    return run


# --------------------------------------------------------------------------------------------
# Drift scan


async def scan(
    uow: UnitOfWork, settings: Settings, *, rebalance: bool, trigger: str = "scan"
) -> Run:
    """The engine's vectorized drift scan over every account: drift-detected for each one
    scanned (out of tolerance when any level is outside its band); with `rebalance`, the
    out-of-tolerance accounts are rebalanced too (trades-proposed)."""
    run = Run(run_id=str(uuid.uuid4()), trigger=trigger, model_id=ALL_MODELS, model_version=0)
    accounts = await repo.all_accounts(uow.session)
    prepared = await prepare(uow.session, accounts, settings, [])
    run.skipped.update(prepared.skipped)
    arrays, failures = book_arrays(Book(prepared.reference, tuple(prepared.accounts.values())))
    for failure in failures:
        run.skipped[failure.account_id] = failure.error
    drift = scan_drift(arrays)
    out_ids: list[str] = []
    for scanned in scanned_accounts(arrays, drift):
        account = prepared.rows[scanned.account_id]
        _publish_drift(
            uow,
            run,
            scanned.account_id,
            prepared.labels[scanned.account_id],
            scanned.total_value,
            scanned.max_abs_drift,
            settings.drift_tolerance,
            scanned.out_of_tolerance,
            list(scanned.securities),
            account.tenant,
        )
        if scanned.out_of_tolerance:
            out_ids.append(scanned.account_id)
    if rebalance and out_ids:
        outcome = _rebalance(prepared, out_ids, run)
        for result in outcome:
            account = prepared.rows[result.account_id]
            label = prepared.labels[result.account_id]
            _propose(uow, run, prepared, label, result, account.tenant)
        await _store_scenarios(uow, run, prepared, outcome)
    run.finished_at = datetime.now(UTC)
    await repo.save(uow.session, run)
    return run


# --------------------------------------------------------------------------------------------
# Tax-loss harvesting


async def harvest(
    uow: UnitOfWork,
    settings: Settings,
    account_ids: list[str] | None = None,
    *,
    trigger: str = "harvest",
) -> Run:
    """Harvest tax losses in the accounts that have it on (or in those named): the engine
    sells lots past the account's thresholds, buys replacements that keep exposure without a
    wash sale, and says what each saves; trades-proposed per account with trades."""
    run = Run(run_id=str(uuid.uuid4()), trigger=trigger, model_id=ALL_MODELS, model_version=0)
    accounts = await repo.all_accounts(uow.session)
    if account_ids is not None:
        known = {a.account_id for a in accounts}
        unknown = [(i, a) for i, a in enumerate(account_ids) if a not in known]
        if unknown:
            raise InvalidInput(
                f"unknown account {unknown[0][1]}",
                [FieldProblem(f"accounts[{i}]", f"unknown account {a}") for i, a in unknown],
            )
        wanted = set(account_ids)
        accounts = [a for a in accounts if a.account_id in wanted]
    chosen = []
    for account in accounts:
        if (account.tax_settings or {}).get("harvest"):
            chosen.append(account)
        elif account_ids is not None:
            run.skipped[account.account_id] = (
                "tax-loss harvesting is off for this account (its tax settings on account-svc)"
            )
    prepared = await prepare(uow.session, chosen, settings, [])
    run.skipped.update(prepared.skipped)
    ready = []
    for account_id, account in prepared.accounts.items():
        if account.tax is None:
            run.skipped[account_id] = "no tax lots from the book of record yet"
        else:
            ready.append(account_id)
    outcome = harvest_book(Book(prepared.reference, tuple(prepared.accounts[a] for a in ready)))
    for failure in outcome.failures:
        run.skipped[failure.account_id] = failure.error
    for result in outcome.results:
        run.accounts_evaluated += 1
        account = prepared.rows[result.account_id]
        _propose(uow, run, prepared, prepared.labels[result.account_id], result, account.tenant)
    await _store_scenarios(uow, run, prepared, list(outcome.results), Request(RequestKind.HARVEST))
    run.finished_at = datetime.now(UTC)
    await repo.save(uow.session, run)
    return run


# --------------------------------------------------------------------------------------------
# Engine and events


def _rebalance(prepared: Prepared, account_ids: list[str], run: Run) -> list[RebalanceResult]:
    book = Book(prepared.reference, tuple(prepared.accounts[a] for a in account_ids))
    outcome = rebalance_book(book)
    for failure in outcome.failures:
        run.skipped[failure.account_id] = failure.error
        log.warning(
            "account skipped", extra={"account_id": failure.account_id, "reason": failure.error}
        )
    return list(outcome.results)


async def _store_scenarios(
    uow: UnitOfWork,
    run: Run,
    prepared: Prepared,
    results: list[RebalanceResult],
    request: Request | None = None,
) -> None:
    await repo.add_scenarios(
        uow.session,
        run.run_id,
        {
            r.account_id: scenario_to_dict(
                RebalanceInput(
                    prepared.accounts[r.account_id], prepared.reference, request or Request()
                )
            )
            for r in results
        },
    )


def _publish_drift(
    uow: UnitOfWork,
    run: Run,
    account_id: str,
    label: tuple[str, int],
    total_value: Decimal,
    max_abs: Decimal,
    tolerance: Decimal,
    out: bool,
    drift: list[SecurityDrift],
    tenant: str,
) -> None:
    run.accounts_evaluated += 1
    run.accounts_out_of_tolerance += int(out)
    uow.publish(
        DriftDetectedV1(
            run_id=uuid.UUID(run.run_id),
            account_id=account_id,
            model_id=label[0],
            model_version=label[1],
            total_value=total_value,
            max_abs_drift=max_abs,
            tolerance=tolerance,
            out_of_tolerance=out,
            securities=[
                SecurityDriftV1(
                    symbol=d.symbol,
                    target_weight=d.target_weight,
                    current_weight=d.current_weight,
                    drift=d.drift,
                )
                for d in drift
            ],
        ),
        key=account_id,
        tenant=tenant,
    )


def _propose(
    uow: UnitOfWork,
    run: Run,
    prepared: Prepared,
    label: tuple[str, int],
    result: RebalanceResult,
    tenant: str,
) -> None:
    """trades-proposed with the engine's trades; a UMA's trades name their sleeve."""
    if not result.trades:
        return
    account_id = result.account_id
    run_id = uuid.UUID(run.run_id)
    proposal_id = uuid.uuid5(IDS, f"proposal:{run_id}:{account_id}")
    uma = prepared.accounts[account_id].strategy_id is not None
    run.proposals += 1
    run.trades += len(result.trades)
    uow.publish(
        TradesProposedV1(
            proposal_id=proposal_id,
            run_id=run_id,
            account_id=account_id,
            model_id=label[0],
            model_version=label[1],
            cash_before=result.summary.cash_before,
            cash_after_estimated=result.summary.cash_after,
            trades=[
                TradeV1(
                    trade_id=uuid.uuid5(
                        IDS,
                        f"trade:{proposal_id}:{t.sleeve_id}:{t.side}:{t.symbol}"
                        if uma
                        else f"trade:{proposal_id}:{t.side}:{t.symbol}",
                    ),
                    symbol=t.symbol,
                    side=t.side.value,
                    quantity=t.quantity,
                    estimated_price=money(t.price),
                    estimated_value=t.estimated_value,
                    reason=t.reason.value,
                    explanation=t.explanation,
                    sleeve_id=t.sleeve_id if uma else None,
                    lot_ids=list(t.lot_ids),
                    estimated_tax=t.estimated_tax,
                )
                for t in result.trades
            ],
        ),
        key=account_id,
        tenant=tenant,
    )
