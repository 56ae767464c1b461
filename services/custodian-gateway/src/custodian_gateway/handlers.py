"""custodian-gateway's event handlers and what it consumes (`subscriptions`, used by main.py)."""

from collections.abc import Sequence

from ballast_common.consumer import BatchHandler, Delivery, Subscription
from ballast_common.uow import UnitOfWork

from custodian_gateway import service
from custodian_gateway.settings import Settings
from custodian_gateway.workers import Wakeups


def on_trades_approved(settings: Settings, wakeups: Wakeups | None = None) -> BatchHandler:
    """Every approved trade of a consumer batch becomes a pending allocation (one statement);
    the order sender is woken to gather them."""

    async def handle(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        await service.record_approved_trades(uow, deliveries, settings.custodian_id)
        if wakeups is not None:
            # before this commit: the woken sender looks again after SEND_INTERVAL_S
            wakeups.wake_sender()

    return handle


def subscriptions(settings: Settings, wakeups: Wakeups | None = None) -> list[Subscription]:
    """What custodian-gateway consumes (the contract registry's consumers must agree)."""
    return [Subscription.batch("trades-approved", on_trades_approved(settings, wakeups))]
