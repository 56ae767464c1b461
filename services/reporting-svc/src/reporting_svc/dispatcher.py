"""The webhook dispatcher, a background task of every replica: claims due deliveries in
small batches (SKIP LOCKED, so replicas share the work) whenever it has room for more
requests in flight, POSTs them signed, and records the attempts in batches as they finish,
so one slow receiver holds one slot, not everyone's deliveries. It wakes on a NOTIFY when
deliveries are queued, sleeps until the next retry is due, and polls besides, so what a
restart left due goes out too.

A claim moves the delivery a lease ahead before anything is sent; a replica that dies
mid-send leaves it to be taken again when the lease ends: delivery is at least once, and a
receiver dedupes on `webhook-id`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from ballast_common.app import Runtime
from ballast_common.db import Database

from reporting_svc import repository as repo
from reporting_svc.settings import Settings
from reporting_svc.webhooks import (
    NOTIFY_CHANNEL,
    Outcome,
    RetryPolicy,
    destination_refusal,
    outcome_of,
    signature_headers,
)

log = logging.getLogger(__name__)
USER_AGENT = "Ballast-Webhooks/1"
MAX_RECORD_BATCH = 500  # outcomes written per transaction


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_s=settings.webhook_retry_base_s,
        cap_s=settings.webhook_retry_cap_s,
        jitter=settings.webhook_retry_jitter,
        max_attempts=settings.webhook_max_attempts,
    )


class WebhookDispatcher:
    """Sends what is due until cancelled: at most `webhook_concurrency` requests in flight."""

    def __init__(
        self, db: Database, settings: Settings, client: httpx.AsyncClient | None = None
    ) -> None:
        self._db = db
        self._settings = settings
        self._policy = retry_policy(settings)
        self._client = client
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._more_due = False  # the last claim was full: a freed slot claims again
        # a claimed delivery is taken again after this if its attempt was never recorded
        self._lease = timedelta(seconds=3 * settings.webhook_timeout_s + 30)

    async def run(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if self._client is None:
                self._client = await stack.enter_async_context(
                    httpx.AsyncClient(
                        timeout=httpx.Timeout(self._settings.webhook_timeout_s),
                        limits=httpx.Limits(max_connections=self._settings.webhook_concurrency),
                        follow_redirects=False,
                        headers={"user-agent": USER_AGENT},
                    )
                )
            stack.push_async_callback(self._stop)
            recorder = asyncio.create_task(self._record_outcomes())
            stack.callback(recorder.cancel)
            backoff = 0.5
            while True:
                await self._listen()
                self._wake.clear()
                try:
                    wait_s = await self._claim_and_send()
                    backoff = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("webhook claim failed; retrying", extra={"in_s": backoff})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                if wait_s > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=wait_s)

    async def _claim_and_send(self) -> float:
        """Claim as many due deliveries as there are free slots (a batch at most) and start
        sending them; how long to wait for a wake-up before looking again."""
        free = self._settings.webhook_concurrency - len(self._in_flight)
        if free <= 0:
            return self._settings.webhook_poll_interval_s  # a finishing send wakes us
        asked = min(free, self._settings.webhook_claim_batch)
        async with self._db.sessions() as session, session.begin():
            claimed = await repo.claim_webhook_deliveries(session, asked, self._lease)
        for delivery in claimed:
            task = asyncio.create_task(self._send(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)
        self._more_due = len(claimed) == asked
        if self._more_due:
            return 0.0
        async with self._db.sessions() as session:
            due_in = await repo.next_webhook_due_in(session)
        poll = self._settings.webhook_poll_interval_s
        return poll if due_in is None else min(poll, max(due_in, 0.0))

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._more_due:
            self._wake.set()

    async def _send(self, delivery: dict[str, Any]) -> None:
        assert self._client is not None
        body = delivery["body"].encode()
        signing = [s for s in (delivery["secret"], delivery["previous_secret"]) if s]
        attempted_at = datetime.now(UTC)
        headers = signature_headers(str(delivery["message_id"]), body, signing, attempted_at)
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        if not self._settings.webhook_allow_private_destinations:
            error = await destination_refusal(delivery["url"])
        if error is None:
            try:
                response = await self._client.post(delivery["url"], content=body, headers=headers)
                status_code = response.status_code
                if not response.is_success:
                    error = f"HTTP {status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        duration_ms = round((time.perf_counter() - started) * 1000)
        outcome = outcome_of(
            delivery["id"],
            delivery["attempts"],
            status_code,
            error,
            attempted_at,
            duration_ms,
            self._policy,
        )
        self._outcomes.put_nowait(_row(outcome, delivery))

    async def _record_outcomes(self) -> None:
        """Write finished attempts as they come, many per transaction; a write that fails
        is tried again with what came meanwhile (nothing is dropped)."""
        pending: list[dict[str, Any]] = []
        backoff = 0.5
        while True:
            if not pending:
                pending.append(await self._outcomes.get())
            while not self._outcomes.empty() and len(pending) < MAX_RECORD_BATCH:
                pending.append(self._outcomes.get_nowait())
            try:
                async with self._db.sessions() as session, session.begin():
                    await repo.record_webhook_outcomes(session, pending)
                if any(o["status"] == "pending" for o in pending):
                    self._wake.set()  # a retry is due: the claim loop sleeps until then
                pending = []
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording webhook attempts failed", extra={"in_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _listen(self) -> None:
        """LISTEN for queued deliveries on a connection of its own (re-made if lost; the poll
        covers the time without one)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            url = self._db.engine.url.set(drivername="postgresql")
            self._listener = await asyncpg.connect(url.render_as_string(hide_password=False))
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
        except (OSError, asyncpg.PostgresError) as exc:
            self._listener = None
            log.warning("cannot listen for webhook deliveries; polling", extra={"error": str(exc)})

    async def _stop(self) -> None:
        """Stop sending (a claimed delivery not recorded is sent again after its lease)."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None


def _row(outcome: Outcome, delivery: dict[str, Any]) -> dict[str, Any]:
    return {**asdict(outcome), "attempts": delivery["attempts"]}


async def webhook_dispatcher(runtime: Runtime) -> None:
    """ServiceSpec background task: the replica's dispatcher."""
    settings = runtime.settings
    assert isinstance(settings, Settings)
    await WebhookDispatcher(runtime.db, settings).run()
