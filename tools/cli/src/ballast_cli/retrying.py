"""Calls to the services that ride out a restart: transient failures are retried with
backoff, and the caller is told what it waits for.

Transient: the connection failed or broke (a service restarting), or the service answered
502, 503 (honouring `Retry-After`: the database or Kafka is down) or 504. Anything else is the
answer. A change is safe to send again only with an `Idempotency-Key` (the demo driver sends
one, the same on every retry) or when it is idempotent by its own ids (book loads).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

TRANSIENT_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    budget_s: float = 60.0  # give up once the next wait would end beyond this
    first_delay_s: float = 0.5
    max_delay_s: float = 8.0


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0


def _reason(response: httpx.Response) -> str:
    try:
        detail = str(response.json().get("detail", ""))
    except ValueError:
        detail = response.text[:200]
    return f"{response.status_code} {detail}".strip()


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    say: Callable[[str], None] | None = None,
    body: Callable[[], Any] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """`http.request(method, url, **kwargs)`, retried while the failure is transient and the
    policy's budget lasts; `body()` makes a fresh request body for each attempt (a stream
    cannot be sent twice). Raises the last transport error, or returns the last answer."""
    deadline = time.monotonic() + policy.budget_s
    delay = policy.first_delay_s
    attempt = 0
    while True:
        attempt += 1
        if body is not None:
            kwargs["content"] = body()
        try:
            response = await http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            failure: httpx.TransportError | None = exc
            reason, wait = f"{exc.__class__.__name__} {exc}".strip(), delay
        else:
            if response.status_code not in TRANSIENT_STATUSES:
                return response
            failure, reason, wait = None, _reason(response), max(delay, _retry_after(response))
        if time.monotonic() + wait > deadline:
            if failure is not None:
                raise failure
            return response
        if say is not None:
            where = urlsplit(url).netloc
            say(f"waiting for {where}: {reason}; trying again in {wait:.1f} s (attempt {attempt})")
        await asyncio.sleep(wait)
        delay = min(delay * 2, policy.max_delay_s)


DEFAULT_RETRY = RetryPolicy()
