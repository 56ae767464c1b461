"""What the webhook tests share: polling for a condition, events, and subscribing and
reading deliveries through the REST API."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from ballast_common.auth import Role
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, envelope, example
from reporting_svc.main import spec
from reporting_svc.settings import Settings

ACME, EVIL = "acme", "evil"
WAIT_S = 30.0  # far below the dispatcher's poll interval in the tests: a wake-up is quicker


@asynccontextmanager
async def admin_api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API as an admin of acme (another tenant's token where a request says), with
    private destinations allowed: the tests' receivers listen on 127.0.0.1."""
    local = Settings(webhook_allow_private_destinations=True)
    async with api_client(spec, db, local, tenant=ACME, roles=[Role.ADMIN]) as client:
        yield client


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = WAIT_S
) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def model_changed(tenant: str, model_id: str | None = None) -> Envelope:
    model_id = model_id or f"m-{uuid.uuid4().hex[:8]}"
    return envelope(example("model-changed", model_id=model_id), key=model_id, tenant=tenant)


async def subscribe(
    api: httpx.AsyncClient, url: str, types: list[str], tenant: str = ACME
) -> dict[str, Any]:
    response = await api.post(
        "/webhooks", json={"url": url, "event_types": types}, headers=bearer(tenant)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(
    api: httpx.AsyncClient, subscription: dict[str, Any], tenant: str = ACME
) -> list[dict[str, Any]]:
    response = await api.get(
        f"/webhooks/{subscription['id']}/deliveries?limit=200", headers=bearer(tenant)
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def path() -> str:
    return f"/hooks/{uuid.uuid4().hex[:8]}"
