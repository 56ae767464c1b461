"""Event handlers: each gets every new event of its topic in a consumer batch and calls one
service function, which writes the batch with a few set-based statements. Inbox dedup is
the consumer's job; the service functions are idempotent upserts in their own right.
holdings-reconciled and drift-detected are decoded into views of what is stored
(``views.HoldingsView``, ``views.DriftView``).

Every handler of an event type a platform may subscribe to also queues its webhook
deliveries (``webhook_service.enqueue``), in the same transaction as the read model."""

from collections.abc import Sequence
from dataclasses import replace
from functools import wraps

from ballast_common.consumer import BatchHandler, Delivery, Subscription
from ballast_common.uow import UnitOfWork

from reporting_svc import service, webhook_service
from reporting_svc.settings import Settings
from reporting_svc.views import DriftView, HoldingsView
from reporting_svc.webhooks import EVENT_TYPES


async def on_securities_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_securities(uow, deliveries)


async def on_model_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_models(uow, deliveries)


async def on_account_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_accounts(uow, deliveries)


async def on_holdings_reconciled(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_holdings(uow, deliveries)


async def on_drift_detected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_drift(uow, deliveries)


async def on_chunk_completed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_chunks(uow, deliveries)


async def on_trades_proposed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_proposed(uow, deliveries)


async def on_trades_approved(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_approved(uow, deliveries)


async def on_fills_received(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_fills(uow, deliveries)


async def on_order_rejected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_rejected(uow, deliveries)


async def on_proposal_rejected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_declined(uow, deliveries)


async def on_trading_hold_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.apply_holds(uow, deliveries)


def announced(handler: BatchHandler) -> BatchHandler:
    """`handler`, then the batch's webhook deliveries queued in its unit of work."""

    @wraps(handler)
    async def handle(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        await handler(uow, deliveries)
        await webhook_service.enqueue(uow, deliveries)

    return handle


def subscriptions(settings: Settings) -> list[Subscription]:
    """What reporting-svc consumes (the contract registry's consumers must agree); the
    webhook event types' handlers also queue webhook deliveries."""
    return [
        replace(s, batch_handler=announced(s.batch_handler))
        if s.event_type in EVENT_TYPES and s.batch_handler is not None
        else s
        for s in _read_models()
    ]


def _read_models() -> list[Subscription]:
    return [
        Subscription.batch("securities-changed", on_securities_changed),
        Subscription.batch("model-changed", on_model_changed),
        Subscription.batch("account-changed", on_account_changed),
        Subscription.batch("holdings-reconciled", on_holdings_reconciled, view=HoldingsView),
        Subscription.batch("drift-detected", on_drift_detected, view=DriftView),
        Subscription.batch("rebalance-chunk-completed", on_chunk_completed),
        Subscription.batch("trades-proposed", on_trades_proposed),
        Subscription.batch("trades-approved", on_trades_approved),
        Subscription.batch("fills-received", on_fills_received),
        Subscription.batch("order-rejected", on_order_rejected),
        Subscription.batch("proposal-rejected", on_proposal_rejected),
        Subscription.batch("trading-hold-changed", on_trading_hold_changed),
    ]


# The name tests/test_batches.py imports; everything else calls subscriptions(settings).
SUBSCRIPTIONS = subscriptions(Settings())
