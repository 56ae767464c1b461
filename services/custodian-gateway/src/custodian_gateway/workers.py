"""The two background loops: the order sender (which also gathers approved trades into block
orders) and the execution poller.

Each step is one unit of work calling one service function. While the custodian is
unavailable (or the database hiccups) a loop backs off and retries: orders stay new and
the cursor stays put until a step commits, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from ballast_common.app import Runtime
from ballast_common.consumer import is_transient

from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.settings import Settings

log = logging.getLogger(__name__)


class Backoff:
    """Doubling delays from `initial` up to `maximum`; `reset` after a success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def _settings(runtime: Runtime) -> Settings:
    settings = runtime.settings
    if not isinstance(settings, Settings):
        raise TypeError("custodian-gateway needs its own Settings")
    return settings


@asynccontextmanager
async def custodian_client(settings: Settings) -> AsyncIterator[CustodianClient]:
    async with httpx.AsyncClient(
        base_url=settings.custodian_url, timeout=settings.http_timeout_s
    ) as http:
        yield CustodianClient(http)


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, CustodianUnavailable) or is_transient(exc)


async def order_sender(runtime: Runtime) -> None:
    """Gather approved trades into block orders and send new orders in batches, forever."""
    settings = _settings(runtime)
    backoff = Backoff(settings.send_interval_s, settings.max_backoff_s)
    async with custodian_client(settings) as client:
        while True:
            try:
                async with runtime.uow() as uow:
                    blocking = await service.block_pending(
                        uow,
                        custodian=settings.custodian_id,
                        block_account=settings.block_account_id,
                        window_s=settings.block_window_s,
                        max_wait_s=settings.block_max_wait_s,
                        limit=settings.block_max_allocations,
                    )
                async with runtime.uow() as uow:
                    outcome = await service.send_new_orders(
                        uow, client, settings.send_batch_size, settings.custodian_id
                    )
            except Exception as exc:
                if not _retryable(exc):
                    raise
                delay = backoff.next()
                log.warning(
                    "order sender: retrying", extra={"error": str(exc), "retry_in_s": delay}
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if outcome.sent or outcome.refused:
                log.info(
                    "orders sent",
                    extra={"sent": len(outcome.sent), "refused": len(outcome.refused)},
                )
            if outcome.claimed >= settings.send_batch_size or blocking.full:
                continue
            pause = settings.send_interval_s
            if blocking.wait_s is not None:
                # wake when the pending trades are due to be blocked
                pause = min(pause, blocking.wait_s)
            await asyncio.sleep(pause)


async def execution_poller(runtime: Runtime) -> None:
    """Page through the custodian's executions from the persisted cursor, forever."""
    settings = _settings(runtime)
    backoff = Backoff(settings.poll_interval_s, settings.max_backoff_s)
    last_restart_check = time.monotonic()
    async with custodian_client(settings) as client:
        while True:
            try:
                async with runtime.uow() as uow:
                    outcome = await service.poll_executions(
                        uow, client, settings.poll_page_size, settings.custodian_id
                    )
                idle = outcome.received == 0
                if (
                    idle
                    and time.monotonic() - last_restart_check >= settings.reset_check_interval_s
                ):
                    last_restart_check = time.monotonic()
                    async with runtime.uow() as uow:
                        await service.check_custodian_restart(uow, client, settings.custodian_id)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                delay = backoff.next()
                log.warning(
                    "execution poller: retrying", extra={"error": str(exc), "retry_in_s": delay}
                )
                await asyncio.sleep(delay)
                continue
            backoff.reset()
            if outcome.new:
                log.info(
                    "executions applied",
                    extra={
                        "fills": outcome.fills,
                        "rejects": outcome.rejects,
                        "orphans": outcome.orphans,
                        "invalid": outcome.invalid,
                        "blocks_done": outcome.blocks_done,
                        "cursor": outcome.cursor,
                    },
                )
            if not outcome.page_full:
                await asyncio.sleep(settings.poll_interval_s)
