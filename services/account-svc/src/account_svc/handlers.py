"""account-svc's consumers."""

from collections.abc import Sequence

from ballast_common.consumer import Delivery, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    CorporateActionRecordedV1,
    ModelChangedV1,
)
from ballast_common.uow import UnitOfWork

from account_svc import service
from account_svc.filters_repository import PostgresProposalRouter
from account_svc.repository import PostgresAccountRepository
from account_svc.settings import Settings


async def on_model_changed(uow: UnitOfWork, envelope: Envelope, event: ModelChangedV1) -> None:
    await service.remember_model(uow, envelope.tenant, event)


async def on_trades_proposed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.receive_proposals(
        uow,
        PostgresAccountRepository(uow.session),
        deliveries,
        PostgresProposalRouter(uow.session),
    )


async def on_corporate_action_recorded(
    uow: UnitOfWork, envelope: Envelope, event: CorporateActionRecordedV1
) -> None:
    await service.follow_corporate_action(uow, event)


def subscriptions(settings: Settings) -> list[Subscription]:
    """What account-svc consumes (the contract registry's consumers must agree)."""
    return [
        Subscription("model-changed", on_model_changed),
        Subscription.batch("trades-proposed", on_trades_proposed),
        Subscription("corporate-action-recorded", on_corporate_action_recorded),
    ]
