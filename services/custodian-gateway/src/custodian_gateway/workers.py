"""The background loops: the order sender (which also gathers approved trades into block
orders), the execution poller, and the booking sender (which tells the custodian each
account's share of a done block, and a sell's lots).

While idle they poll less and less often (up to `idle_poll_max_s`), so an idle gateway costs
next to no CPU; `Wakeups` brings them back at once: recorded approved trades wake the
sender, sent orders wake the poller, which polls promptly while orders wait for executions;
blocks shared among their allocations wake the booking sender.

Each step is one unit of work calling one service function. While the custodian is
unavailable (or the database hiccups) a loop backs off and retries: orders stay new and
the cursor stays put until a step commits, so nothing is lost.

The poller settles the orders the custodian should be working when it starts, and whenever
the custodian's sequence is found below the cursor (it lost or replaced its state): it asks
about each, and sends the ones it does not know again, same client order id, marked as
possible resends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx
from ballast_common.app import BackgroundTask, Runtime
from ballast_common.consumer import is_transient

from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient, CustodianUnavailable
from custodian_gateway.fix_client import FixCustodianClient, FixLink
from custodian_gateway.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class Wakeups:
    """In-process signals that end a loop's idle pause (each loop makes its event on its own
    event loop when it starts; a wake before that is not needed: the loop polls first)."""

    def __init__(self) -> None:
        self._sender: asyncio.Event | None = None
        self._poller: asyncio.Event | None = None
        self._booker: asyncio.Event | None = None

    def sender_event(self) -> asyncio.Event:
        self._sender = asyncio.Event()
        return self._sender

    def poller_event(self) -> asyncio.Event:
        self._poller = asyncio.Event()
        return self._poller

    def booker_event(self) -> asyncio.Event:
        self._booker = asyncio.Event()
        return self._booker

    def wake_booker(self) -> None:
        if self._booker is not None:
            self._booker.set()

    def wake_sender(self) -> None:
        if self._sender is not None:
            self._sender.set()

    def wake_poller(self) -> None:
        if self._poller is not None:
            self._poller.set()


async def _pause(wake: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `wake` is set; True if woken."""
    try:
        await asyncio.wait_for(wake.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def background_loops(wakeups: Wakeups) -> list[BackgroundTask]:
    """The loops of a running gateway, sharing `wakeups` with its trades handler (and one
    FIX session, when orders go over FIX)."""
    fix = FixLink()

    async def order_sender_loop(runtime: Runtime) -> None:
        await order_sender(runtime, wakeups, fix)

    async def execution_poller_loop(runtime: Runtime) -> None:
        await execution_poller(runtime, wakeups, fix)

    async def booking_sender_loop(runtime: Runtime) -> None:
        await booking_sender(runtime, wakeups)

    return [order_sender_loop, execution_poller_loop, booking_sender_loop]


def _settings(runtime: Runtime) -> Settings:
    settings = runtime.settings
    if not isinstance(settings, Settings):
        raise TypeError("custodian-gateway needs its own Settings")
    return settings


@asynccontextmanager
async def custodian_client(
    settings: Settings, fix: FixLink | None = None
) -> AsyncIterator[CustodianClient]:
    """The custodian's client: orders over `fix`'s session when given and `order_protocol`
    is fix, else all over HTTP (the booking sender's case)."""
    async with httpx.AsyncClient(
        base_url=settings.custodian_url, timeout=settings.http_timeout_s
    ) as http:
        if fix is not None and settings.order_protocol == "fix":
            async with fix.session(settings) as session:
                yield FixCustodianClient(http, session)
        else:
            yield CustodianClient(http)


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, CustodianUnavailable) or is_transient(exc)


async def _attempt(what: str, backoff: Backoff, step: Callable[[], Awaitable[T]]) -> T | None:
    """One step of a worker loop: its result, or None after a retryable failure (logged,
    then the backoff waited out); other failures propagate."""
    try:
        result = await step()
    except Exception as exc:
        if not _retryable(exc):
            raise
        delay = backoff.next()
        log.warning(f"{what}: retrying", extra={"error": str(exc), "retry_in_s": delay})
        await asyncio.sleep(delay)
        return None
    backoff.reset()
    return result


async def order_sender(
    runtime: Runtime, wakeups: Wakeups | None = None, fix: FixLink | None = None
) -> None:
    """Gather approved trades into block orders and send new orders in batches, forever."""
    settings = _settings(runtime)
    wakeups = wakeups or Wakeups()
    wake = wakeups.sender_event()
    backoff = Backoff(settings.send_interval_s, settings.max_backoff_s)
    idle = Backoff(settings.send_interval_s, settings.idle_poll_max_s)
    memory = service.SendMemory()
    async with custodian_client(settings, fix or FixLink()) as client:
        while True:
            wake.clear()  # before reading, so trades recorded meanwhile still wake us

            async def block_and_send() -> tuple[service.BlockOutcome, service.SendOutcome]:
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
                        uow, client, settings.send_batch_size, settings.custodian_id, memory
                    )
                return blocking, outcome

            done = await _attempt("order sender", backoff, block_and_send)
            if done is None:
                continue
            blocking, outcome = done
            if outcome.sent:
                wakeups.wake_poller()
            if outcome.sent or outcome.refused:
                log.info(
                    "orders sent",
                    extra={
                        "sent": len(outcome.sent),
                        "refused": len(outcome.refused),
                        "possible_resends": outcome.possible_resends,
                    },
                )
            if outcome.claimed >= settings.send_batch_size or blocking.full:
                continue
            if outcome.claimed or blocking.blocks or blocking.wait_s is not None:
                idle.reset()
                pause = settings.send_interval_s
                if blocking.wait_s is not None:
                    # wake when the pending trades are due to be blocked
                    pause = min(pause, blocking.wait_s)
            else:
                pause = idle.next()
            if await _pause(wake, pause):
                idle.reset()


async def settle_sent_orders(runtime: Runtime, client: CustodianClient) -> None:
    """Settle every order the custodian should be working, a chunk per transaction."""
    settings = _settings(runtime)
    after = ""
    totals = {"checked": 0, "known": 0, "resent": 0, "refused": 0, "unknown_partially_filled": 0}
    while True:
        async with runtime.uow() as uow:
            outcome = await service.settle_sent_orders(
                uow,
                client,
                settings.custodian_id,
                after=after,
                limit=settings.settle_chunk_size,
                concurrency=settings.status_check_concurrency,
            )
        totals["checked"] += outcome.checked
        totals["known"] += outcome.known
        totals["resent"] += len(outcome.resent)
        totals["refused"] += len(outcome.refused)
        totals["unknown_partially_filled"] += len(outcome.unknown_partially_filled)
        if outcome.last_client_order_id is None:
            break
        after = outcome.last_client_order_id
    log.info("sent orders settled with the custodian", extra=totals)


async def booking_sender(runtime: Runtime, wakeups: Wakeups | None = None) -> None:
    """Tell the custodian the filled shares of done blocks in batches, forever; while it is
    unavailable they stay pending and go again later (same fill ids: booked once)."""
    settings = _settings(runtime)
    wake = (wakeups or Wakeups()).booker_event()
    backoff = Backoff(settings.booking_interval_s, settings.max_backoff_s)
    idle = Backoff(settings.booking_interval_s, settings.idle_poll_max_s)
    async with custodian_client(settings) as client:
        while True:
            wake.clear()  # before reading, so shares stored meanwhile still wake us

            async def send() -> service.BookingOutcome:
                async with runtime.uow() as uow:
                    return await service.send_bookings(
                        uow, client, settings.booking_batch_size, settings.custodian_id
                    )

            outcome = await _attempt("booking sender", backoff, send)
            if outcome is None:
                continue
            if outcome.claimed:
                log.info(
                    "allocations booked at the custodian",
                    extra={
                        "booked": outcome.booked,
                        "refused": outcome.refused,
                        "duplicates": outcome.duplicates,
                    },
                )
            if outcome.claimed >= settings.booking_batch_size:
                continue
            if outcome.claimed:
                idle.reset()
                pause = settings.booking_interval_s
            else:
                pause = idle.next()
            if await _pause(wake, pause):
                idle.reset()


async def execution_poller(
    runtime: Runtime, wakeups: Wakeups | None = None, fix: FixLink | None = None
) -> None:
    """Page through the custodian's executions from the persisted cursor, forever; settle
    the sent orders on start and after the custodian lost its state."""
    settings = _settings(runtime)
    wakeups = wakeups or Wakeups()
    wake = wakeups.poller_event()
    backoff = Backoff(settings.poll_interval_s, settings.max_backoff_s)
    idle_pause = Backoff(settings.poll_interval_s, settings.idle_poll_max_s)
    last_restart_check = time.monotonic()
    check_restart = settle = True  # on start
    async with custodian_client(settings, fix or FixLink()) as client:

        async def custodian_restarted() -> bool:
            nonlocal last_restart_check
            last_restart_check = time.monotonic()
            async with runtime.uow() as uow:
                return await service.check_custodian_restart(uow, client, settings.custodian_id)

        while True:
            wake.clear()  # before polling, so orders sent meanwhile still wake us

            async def poll() -> service.PollOutcome:
                nonlocal check_restart, settle
                if check_restart:
                    settle = await custodian_restarted() or settle
                    check_restart = False
                if settle:
                    await settle_sent_orders(runtime, client)
                    settle = False
                async with runtime.uow() as uow:
                    outcome = await service.poll_executions(
                        uow, client, settings.poll_page_size, settings.custodian_id
                    )
                idle = outcome.received == 0
                if (
                    idle
                    and time.monotonic() - last_restart_check >= settings.reset_check_interval_s
                ):
                    settle = await custodian_restarted()
                return outcome

            polled = await _attempt("execution poller", backoff, poll)
            if polled is None:
                continue
            outcome = polled
            if outcome.blocks_done:
                wakeups.wake_booker()
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
            if settle or outcome.page_full:
                continue
            if outcome.received or outcome.awaiting:
                idle_pause.reset()
                pause = settings.poll_interval_s
            else:
                pause = idle_pause.next()
            if await _pause(wake, pause):
                idle_pause.reset()
