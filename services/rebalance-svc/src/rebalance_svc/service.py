"""rebalance-svc's rules: keep the read model current, and rebalance on a model change."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    DriftDetectedV1,
    HoldingsReconciledV1,
    ModelChangedV1,
    SecuritiesChangedV1,
    SecurityDriftV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.uow import UnitOfWork
from ballast_engine.model import Book, RebalanceInput, RebalanceResult
from ballast_engine.rebalance import rebalance_book
from ballast_engine.scenario import scenario_to_dict

from rebalance_svc import repository as repo
from rebalance_svc.engine_input import (
    SecurityRow,
    money,
    reference_for,
    security_drift,
    sma_account,
)
from rebalance_svc.settings import Settings
from rebalance_svc.tables import Account, Model, Run

log = logging.getLogger(__name__)
IDS = uuid.UUID("5d0c2b7e-4a1f-4c1e-9f0a-ba11a57ba11a")  # namespace of derived ids
WEIGHT = Decimal("0.000001")


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


async def record_account(uow: UnitOfWork, event: AccountChangedV1, tenant: str) -> None:
    await repo.upsert_account(
        uow.session,
        Account(
            account_id=event.account_id, tenant=tenant, model_id=event.model_id, status=event.status
        ),
    )


async def record_holdings(uow: UnitOfWork, event: HoldingsReconciledV1) -> None:
    await repo.replace_holdings(
        uow.session,
        event.account_id,
        event.cash,
        {p.symbol: p.quantity for p in event.positions if p.quantity != 0},
    )


async def apply_model_change(
    uow: UnitOfWork,
    envelope: Envelope,
    event: ModelChangedV1,
    settings: Settings,
) -> Run | None:
    """Store the new model version and rebalance every active account that follows it."""
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
    accounts = await repo.accounts_following(uow.session, model.model_id)
    cash, holdings = await repo.books_of(uow.session, [a.account_id for a in accounts])
    securities = {
        s.symbol: SecurityRow(s.symbol, s.price, s.asset_class, s.sector, s.fractional_eligible)
        for s in await repo.all_securities(uow.session)
    }
    reference = reference_for(
        securities, model.model_id, {s: Decimal(w) for s, w in model.targets.items()}
    )
    ready: dict[str, Account] = {}
    for account in accounts:
        if account.status != "active":
            run.skipped[account.account_id] = f"account is {account.status}"
        elif account.account_id not in cash:
            run.skipped[account.account_id] = "no holdings reconciled yet"
        else:
            ready[account.account_id] = account
    inputs = [
        sma_account(
            account_id,
            model.model_id,
            cash[account_id],
            holdings.get(account_id, {}),
            settings.min_trade_value,
            settings.security_tolerance,
            settings.cash_band,
        )
        for account_id in ready
    ]
    outcome = rebalance_book(Book(reference, tuple(inputs)))
    for failure in outcome.failures:
        run.skipped[failure.account_id] = failure.error
        log.warning(
            "account skipped", extra={"account_id": failure.account_id, "reason": failure.error}
        )
    scenarios = {i.account_id: i for i in inputs}
    for result in outcome.results:
        account = ready[result.account_id]
        _announce(
            uow, run, model, account, result, settings.drift_tolerance, account.tenant or tenant
        )
    await repo.add_scenarios(
        uow.session,
        run.run_id,
        {
            r.account_id: scenario_to_dict(RebalanceInput(scenarios[r.account_id], reference))
            for r in outcome.results
        },
    )
    run.finished_at = datetime.now(UTC)
    await repo.save(uow.session, run)
    return run


def _announce(
    uow: UnitOfWork,
    run: Run,
    model: Model,
    account: Account,
    result: RebalanceResult,
    tolerance: Decimal,
    tenant: str,
) -> None:
    run_id = uuid.UUID(run.run_id)
    run.accounts_evaluated += 1
    drift = security_drift(result)
    max_abs = max((abs(d.drift) for d in drift), default=Decimal(0))
    out = max_abs > tolerance
    run.accounts_out_of_tolerance += int(out)
    uow.publish(
        DriftDetectedV1(
            run_id=run_id,
            account_id=account.account_id,
            model_id=model.model_id,
            model_version=model.version,
            total_value=result.summary.account_value,
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
        key=account.account_id,
        tenant=tenant,
    )
    if not result.trades:
        return
    proposal_id = uuid.uuid5(IDS, f"proposal:{run_id}:{account.account_id}")
    run.proposals += 1
    run.trades += len(result.trades)
    uow.publish(
        TradesProposedV1(
            proposal_id=proposal_id,
            run_id=run_id,
            account_id=account.account_id,
            model_id=model.model_id,
            model_version=model.version,
            cash_before=result.summary.cash_before,
            cash_after_estimated=result.summary.cash_after,
            trades=[
                TradeV1(
                    trade_id=uuid.uuid5(IDS, f"trade:{proposal_id}:{t.side}:{t.symbol}"),
                    symbol=t.symbol,
                    side=t.side.value,
                    quantity=t.quantity,
                    estimated_price=money(t.price),
                    estimated_value=t.estimated_value,
                    reason=t.reason.value,
                    explanation=t.explanation,
                )
                for t in result.trades
            ],
        ),
        key=account.account_id,
        tenant=tenant,
    )
