"""Event handlers: each calls one service function."""

from ballast_common.consumer import Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.uow import UnitOfWork

from model_hub_svc import service
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.settings import Settings


async def on_corporate_action_recorded(
    uow: UnitOfWork, envelope: Envelope, payload: CorporateActionRecordedV1
) -> None:
    await service.follow_corporate_action(uow, PostgresModelHubRepository(uow.session), payload)


def subscriptions(settings: Settings) -> list[Subscription]:
    """What model-hub-svc consumes (the contract registry's consumers must agree)."""
    return [Subscription("corporate-action-recorded", on_corporate_action_recorded)]
