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

from rebalance_svc import repository as repo
from rebalance_svc.rule import AccountDataError, Proposal, rebalance_to_model
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
    """One run over the model's accounts; an account that cannot be rebalanced is skipped
    with its reason, and the rest of the book still rebalances."""
    run_id = uuid.uuid5(IDS, f"run:{trigger_id}")
    run = Run(
        run_id=str(run_id), trigger=trigger, model_id=model.model_id, model_version=model.version
    )
    accounts = await repo.accounts_following(uow.session, model.model_id)
    cash, holdings = await repo.books_of(uow.session, [a.account_id for a in accounts])
    prices = await repo.prices(uow.session)
    targets = {s: Decimal(w) for s, w in model.targets.items()}
    for account in accounts:
        if account.status != "active":
            run.skipped[account.account_id] = f"account is {account.status}"
            continue
        if account.account_id not in cash:
            run.skipped[account.account_id] = "no holdings reconciled yet"
            continue
        try:
            proposal = rebalance_to_model(
                account_id=account.account_id,
                model_name=f"{model.name} v{model.version}",
                cash=cash[account.account_id],
                holdings=holdings.get(account.account_id, {}),
                targets=targets,
                prices=prices,
                min_trade_value=settings.min_trade_value,
                security_tolerance=settings.security_tolerance,
            )
        except AccountDataError as exc:
            run.skipped[account.account_id] = str(exc)
            log.warning(
                "account skipped", extra={"account_id": account.account_id, "reason": str(exc)}
            )
            continue
        _announce(
            uow, run, model, account, proposal, settings.drift_tolerance, account.tenant or tenant
        )
    run.finished_at = datetime.now(UTC)
    await repo.save(uow.session, run)
    return run


def _announce(
    uow: UnitOfWork,
    run: Run,
    model: Model,
    account: Account,
    proposal: Proposal,
    tolerance: Decimal,
    tenant: str,
) -> None:
    run_id = uuid.UUID(run.run_id)
    run.accounts_evaluated += 1
    out = proposal.max_abs_drift > tolerance
    run.accounts_out_of_tolerance += int(out)
    uow.publish(
        DriftDetectedV1(
            run_id=run_id,
            account_id=account.account_id,
            model_id=model.model_id,
            model_version=model.version,
            total_value=proposal.total_value,
            max_abs_drift=proposal.max_abs_drift.quantize(WEIGHT),
            tolerance=tolerance,
            out_of_tolerance=out,
            securities=[
                SecurityDriftV1(
                    symbol=d.symbol,
                    target_weight=d.target_weight.quantize(WEIGHT),
                    current_weight=d.current_weight.quantize(WEIGHT),
                    drift=d.drift.quantize(WEIGHT),
                )
                for d in proposal.drift
            ],
        ),
        key=account.account_id,
        tenant=tenant,
    )
    if not proposal.trades:
        return
    proposal_id = uuid.uuid5(IDS, f"proposal:{run_id}:{account.account_id}")
    run.proposals += 1
    run.trades += len(proposal.trades)
    uow.publish(
        TradesProposedV1(
            proposal_id=proposal_id,
            run_id=run_id,
            account_id=account.account_id,
            model_id=model.model_id,
            model_version=model.version,
            cash_before=proposal.cash_before,
            cash_after_estimated=proposal.cash_after,
            trades=[
                TradeV1(
                    trade_id=uuid.uuid5(IDS, f"trade:{proposal_id}:{t.side}:{t.symbol}"),
                    symbol=t.symbol,
                    side=t.side,
                    quantity=t.quantity,
                    estimated_price=t.price,
                    estimated_value=t.value,
                    reason=t.reason,
                    explanation=t.explanation,
                )
                for t in proposal.trades
            ],
        ),
        key=account.account_id,
        tenant=tenant,
    )
