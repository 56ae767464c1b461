"""taxlot-svc's event handlers."""

from collections.abc import Sequence

from ballast_common.consumer import Delivery, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    EquivalenceSetChangedV1,
    SecuritiesChangedV1,
)
from ballast_common.uow import UnitOfWork

from taxlot_svc import service, taxes, transfers, unknown_securities
from taxlot_svc.settings import Settings


async def on_fills_received(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """fills-received, a batch at a time (Subscription.batch); each fill with its event, so
    its snapshot follows from it in its trace."""
    await service.apply_fills(uow, [(d.payload, d.envelope) for d in deliveries])


async def on_trades_approved(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """trades-approved, a batch at a time: the approved proposals' cash movements between
    sleeves are booked."""
    await transfers.book_cash_movements(uow, [(d.payload, d.envelope) for d in deliveries])


async def on_account_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """account-changed, a batch at a time, in message order (each with its tenant)."""
    await taxes.accounts_changed(
        uow, [taxes.AccountChange(d.payload, d.envelope.tenant, d.envelope.id) for d in deliveries]
    )


async def on_securities_changed(
    uow: UnitOfWork, envelope: Envelope, payload: SecuritiesChangedV1
) -> None:
    await taxes.securities_changed(uow, payload)
    await unknown_securities.securities_changed(uow, [s.symbol for s in payload.securities])


async def on_equivalence_set_changed(
    uow: UnitOfWork, envelope: Envelope, payload: EquivalenceSetChangedV1
) -> None:
    await taxes.equivalence_set_changed(uow, payload)


def subscriptions(settings: Settings) -> list[Subscription]:
    """What taxlot-svc consumes (the contract registry's consumers must agree)."""
    return [
        Subscription.batch("fills-received", on_fills_received),
        Subscription.batch("trades-approved", on_trades_approved),
        Subscription.batch("account-changed", on_account_changed),
        Subscription("securities-changed", on_securities_changed),
        Subscription("equivalence-set-changed", on_equivalence_set_changed),
    ]
