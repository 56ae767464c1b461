"""Routes of the dashboard that belong to another service, passed on to it.

The dashboard calls only this service's origin; a forwarded route passes each request on with
the caller's own bearer token (the other service checks it, the role and the tenant again) and
hands its answer back unchanged: status, body (problem+json included) and the headers a caller
acts on. Nothing is decided or stored here. The other service unreachable, too slow or not
configured: 503 problem+json naming it.

One `Forwarder` per service reached (`AccountSvc`, `TaxlotSvc`), made once per app from the
settings (`forwarder_of`), its client closed when the service stops.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httpx
from ballast_common.app import Runtime, get_runtime
from ballast_common.errors import BallastError
from ballast_common.telemetry import current_trace_headers
from fastapi import Request, Response

from reporting_svc.settings import Settings

# What a caller acts on in the other service's answer; everything else is its business.
PASSED_BACK_HEADERS = ("content-type", "retry-after", "idempotent-replayed", "www-authenticate")
PASSED_ON_HEADERS = ("authorization", "idempotency-key", "content-type", "accept")

_clients: weakref.WeakSet[httpx.AsyncClient] = weakref.WeakSet()


@dataclass
class ServiceUnavailable(BallastError):
    retry_after_s: int = 2
    status = 503
    title = "Service unavailable"

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_s)}


class Forwarder:
    """Another service's REST API as the dashboard's routes reach it: one client per app.
    Subclasses name the service, its URL setting and what cannot be done without it."""

    service: ClassVar[str]
    setting: ClassVar[str]  # the environment variable of its URL
    needed_for: ClassVar[str]  # "<what> cannot be ... through the dashboard"

    def __init__(
        self, client: httpx.AsyncClient | None, timeout_s: float, retry_after_s: int = 2
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s

    @classmethod
    def url_and_timeout(cls, settings: Settings) -> tuple[str, float]:
        raise NotImplementedError

    @classmethod
    def from_settings(cls: type[F], settings: Settings) -> F:
        url, timeout_s = cls.url_and_timeout(settings)
        if not url:
            return cls(None, timeout_s, settings.retry_after_s)
        client = httpx.AsyncClient(
            base_url=url, timeout=httpx.Timeout(timeout_s), follow_redirects=False
        )
        _clients.add(client)
        return cls(client, timeout_s, settings.retry_after_s)

    async def forward(
        self, request: Request, method: str, path: str, params: dict[str, Any] | None = None
    ) -> Response:
        """`request` sent on to the service's `path`; its answer as this route's."""
        name = self.service
        if self.client is None:
            raise ServiceUnavailable(
                f"{name} is not configured here ({self.setting}), so {self.needed_for} "
                "through the dashboard",
                retry_after_s=self.retry_after_s,
            )
        headers = {h: request.headers[h] for h in PASSED_ON_HEADERS if h in request.headers}
        headers.update(current_trace_headers())
        content = await request.body() if method == "POST" else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            answer = await self.client.request(
                method, path, params=query, content=content, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServiceUnavailable(
                f"{name} cannot be reached ({type(exc).__name__}), so the request "
                "was not sent; retry shortly",
                retry_after_s=self.retry_after_s,
            ) from None
        except httpx.TransportError as exc:  # sent, and no whole answer came back
            raise ServiceUnavailable(
                f"{name} did not answer ({type(exc).__name__}; at most "
                f"{self.timeout_s:g} s per request): the request may or may not have been "
                "applied, so look before retrying",
                retry_after_s=self.retry_after_s,
            ) from None
        kept = {h: answer.headers[h] for h in PASSED_BACK_HEADERS if h in answer.headers}
        return Response(answer.content, status_code=answer.status_code, headers=kept)


F = TypeVar("F", bound=Forwarder)


def forwarder_of(cls: type[F], state_name: str) -> Callable[[Request], F]:
    """A dependency giving the app's forwarder of `cls`, made on first use from the
    service's settings and kept in `app.state.<state_name>` (tests put their own there)."""

    def dependency(request: Request) -> F:
        forwarder = getattr(request.app.state, state_name, None)
        if forwarder is None:
            settings = get_runtime(request).settings
            assert isinstance(settings, Settings)
            forwarder = cls.from_settings(settings)
            setattr(request.app.state, state_name, forwarder)
        assert isinstance(forwarder, cls)
        return forwarder

    return dependency


async def close_forwarder_clients(runtime: Runtime) -> None:
    """A background task: closes the forwarders' clients when the service stops."""
    try:
        await asyncio.Event().wait()
    finally:
        for client in list(_clients):
            await client.aclose()
