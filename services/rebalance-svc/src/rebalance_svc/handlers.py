"""rebalance-svc's consumers, its interval drift scan and its interval harvest."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NotRequired

from ballast_common.app import Runtime
from ballast_common.consumer import Delivery, Subscription
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    EquivalenceSetChangedV1,
    LossSaleV1,
    ModelChangedV1,
    RealizedYearV1,
    RebalanceChunkRequestedV1,
    SecuritiesChangedV1,
    SleeveCashV1,
)
from ballast_common.contracts.types import Money
from ballast_common.contracts.wire_views import LotView, UnsignedText
from ballast_common.uow import UnitOfWork
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from rebalance_svc import cash_requests, service
from rebalance_svc.settings import Settings

# holdings-reconciled (v1 and v2) as rebalance-svc reads it: positions and lots stay plain
# dicts with their numbers as the decimal text they travel as (contracts.wire_views).


class PositionView(TypedDict):
    symbol: str
    quantity: UnsignedText
    lots: NotRequired[list[LotView]]  # none in v1


class HoldingsView(BaseModel):
    """holdings-reconciled, v1 and v2 (v1 has positions without lots and nothing else)."""

    model_config = ConfigDict(extra="ignore")

    account_id: str
    household_id: str | None = None
    cash: Money
    positions: list[PositionView]
    fill_ids: list[str] = Field(default_factory=list)
    recent_loss_sales: list[LossSaleV1] = Field(default_factory=list)
    realized_this_year: RealizedYearV1 | None = None
    sleeve_cash: list[SleeveCashV1] = Field(default_factory=list)


async def on_securities_changed(
    uow: UnitOfWork, envelope: Envelope, event: SecuritiesChangedV1
) -> None:
    await service.record_securities(uow, event)


async def on_account_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_accounts(uow, deliveries)


async def on_equivalence_set_changed(
    uow: UnitOfWork, envelope: Envelope, event: EquivalenceSetChangedV1
) -> None:
    await service.record_equivalence_set(uow, event, envelope.time)


async def on_holdings_reconciled(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_holdings(uow, deliveries)
    await cash_requests.follow_settlements(uow, deliveries)


async def on_fills_received(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_fills(uow, deliveries)
    await cash_requests.follow_settlements(uow, deliveries)


async def on_order_rejected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_rejections(uow, deliveries)
    await cash_requests.follow_rejected_orders(uow, deliveries)


async def on_trading_hold_changed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_trading_holds(uow, deliveries)


async def on_trades_approved(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_approvals(uow, deliveries)


async def on_proposal_rejected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    await service.record_declined(uow, deliveries)
    await cash_requests.follow_declined(uow, deliveries)


async def on_chunk_dead_lettered(
    uow: UnitOfWork, envelope: Envelope, event: RebalanceChunkRequestedV1, reason: str
) -> None:
    if cash_requests.is_cash_chunk(event):
        await cash_requests.chunk_failed(uow, envelope, event, reason)
    else:
        await service.chunk_failed(uow, envelope, event, reason)


def subscriptions(settings: Settings) -> list[Subscription]:
    """What rebalance-svc consumes (the contract registry's consumers must agree)."""

    async def on_model_changed(uow: UnitOfWork, envelope: Envelope, event: ModelChangedV1) -> None:
        await service.apply_model_change(uow, envelope, event, settings)

    async def on_chunk_requested(
        uow: UnitOfWork, envelope: Envelope, event: RebalanceChunkRequestedV1
    ) -> None:
        if cash_requests.is_cash_chunk(event):
            await cash_requests.process_chunk(uow, envelope, event, settings)
        else:
            await service.process_chunk(uow, envelope, event, settings)

    return [
        Subscription("securities-changed", on_securities_changed),
        Subscription.batch("account-changed", on_account_changed),
        Subscription.batch("holdings-reconciled", on_holdings_reconciled, view=HoldingsView),
        # a run does not trade an account whose earlier trades are still in flight
        Subscription.batch("fills-received", on_fills_received),
        Subscription.batch("order-rejected", on_order_rejected),
        Subscription.batch("trades-approved", on_trades_approved),
        Subscription.batch("proposal-rejected", on_proposal_rejected),
        # an account with an unresolved reconciliation break is not traded
        Subscription.batch("trading-hold-changed", on_trading_hold_changed),
        Subscription("model-changed", on_model_changed),
        Subscription("equivalence-set-changed", on_equivalence_set_changed),
        # Each chunk its own transaction, on a consumer of its own, so the read model keeps
        # up while chunks run and every instance of the group takes its share.
        Subscription(
            "rebalance-chunk-requested",
            on_chunk_requested,
            lane="chunks",
            batch_size=1,
            attempts=settings.chunk_attempts,
            on_dead_letter=on_chunk_dead_lettered,
        ),
    ]


async def _every(
    runtime: Runtime,
    seconds: float,
    work: Callable[[UnitOfWork, Settings, str], Awaitable[object]],
    name: str,
) -> None:
    """Run `work` once per interval of `seconds` (not at all when 0), at the interval's start.
    Every replica wakes for the same interval; the run id derived from it lets one start the
    run and the others find it taken."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    if seconds <= 0:
        return
    while True:
        now = time.time()
        interval = int(now // seconds) + 1
        await asyncio.sleep(interval * seconds - now)
        async with runtime.uow() as uow:
            await work(uow, settings, f"{name}:{seconds}:{interval}")


async def scan_loop(runtime: Runtime) -> None:
    """Scan each tenant's book for drift every REBALANCE_SVC_SCAN_INTERVAL_SECONDS (off
    when 0)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    await _every(
        runtime, settings.scan_interval_seconds, service.start_interval_scans, "interval-scan"
    )


async def harvest_loop(runtime: Runtime) -> None:
    """Harvest each tenant's tax losses every REBALANCE_SVC_HARVEST_INTERVAL_SECONDS (off
    when 0)."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    await _every(
        runtime,
        settings.harvest_interval_seconds,
        service.start_interval_harvests,
        "interval-harvest",
    )


async def cash_sweep_loop(runtime: Runtime) -> None:
    """Start the cash requests due by today every REBALANCE_SVC_CASH_SWEEP_INTERVAL_SECONDS
    (off when 0), first at startup; every replica sweeps, one at a time, each request once."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    if settings.cash_sweep_interval_seconds <= 0:
        return
    while True:
        async with runtime.uow() as uow:
            await cash_requests.start_due(uow, settings)
        await asyncio.sleep(settings.cash_sweep_interval_seconds)
