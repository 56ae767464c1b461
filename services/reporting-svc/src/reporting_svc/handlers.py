"""Event handlers: each calls one service function. Inbox dedup is the consumer's job; the
service functions are idempotent upserts in their own right."""

from ballast_common.consumer import Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    DriftDetectedV1,
    FillsReceivedV1,
    HoldingsReconciledV1,
    HoldingsReconciledV2,
    ModelChangedV1,
    OrderRejectedV1,
    ProposalRejectedV1,
    SecuritiesChangedV1,
    TradesApprovedV1,
    TradesProposedV1,
)
from ballast_common.uow import UnitOfWork

from reporting_svc import service


async def on_securities_changed(
    uow: UnitOfWork, envelope: Envelope, payload: SecuritiesChangedV1
) -> None:
    await service.apply_securities(uow, envelope, payload)


async def on_model_changed(uow: UnitOfWork, envelope: Envelope, payload: ModelChangedV1) -> None:
    await service.apply_model(uow, envelope, payload)


async def on_account_changed(
    uow: UnitOfWork, envelope: Envelope, payload: AccountChangedV1
) -> None:
    await service.apply_account(uow, envelope, payload)


async def on_holdings_reconciled(
    uow: UnitOfWork, envelope: Envelope, payload: HoldingsReconciledV1 | HoldingsReconciledV2
) -> None:
    await service.apply_holdings(uow, envelope, payload)


async def on_drift_detected(uow: UnitOfWork, envelope: Envelope, payload: DriftDetectedV1) -> None:
    await service.apply_drift(uow, envelope, payload)


async def on_trades_proposed(
    uow: UnitOfWork, envelope: Envelope, payload: TradesProposedV1
) -> None:
    await service.apply_proposed(uow, envelope, payload)


async def on_trades_approved(
    uow: UnitOfWork, envelope: Envelope, payload: TradesApprovedV1
) -> None:
    await service.apply_approved(uow, envelope, payload)


async def on_fills_received(uow: UnitOfWork, envelope: Envelope, payload: FillsReceivedV1) -> None:
    await service.apply_fill(uow, envelope, payload)


async def on_order_rejected(uow: UnitOfWork, envelope: Envelope, payload: OrderRejectedV1) -> None:
    await service.apply_rejected(uow, envelope, payload)


async def on_proposal_rejected(
    uow: UnitOfWork, envelope: Envelope, payload: ProposalRejectedV1
) -> None:
    await service.apply_declined(uow, envelope, payload)


SUBSCRIPTIONS = [
    Subscription("securities-changed", on_securities_changed),
    Subscription("model-changed", on_model_changed),
    Subscription("account-changed", on_account_changed),
    Subscription("holdings-reconciled", on_holdings_reconciled),
    Subscription("drift-detected", on_drift_detected),
    Subscription("trades-proposed", on_trades_proposed),
    Subscription("trades-approved", on_trades_approved),
    Subscription("fills-received", on_fills_received),
    Subscription("order-rejected", on_order_rejected),
    Subscription("proposal-rejected", on_proposal_rejected),
]
