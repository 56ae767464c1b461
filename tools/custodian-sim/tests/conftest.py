from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from custodian_sim.main import create_app
from custodian_sim.settings import SimSettings


class FakeClock:
    """A clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += timedelta(milliseconds=ms)


SimFactory = Callable[..., Any]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock, tmp_path: Path) -> SimFactory:
    """``async with sim(**settings) as client``: an httpx client on a fresh simulator with a
    store file of its own; pass ``store_path=`` to open a given one again (a restart)."""
    fresh = itertools.count(1)

    @asynccontextmanager
    async def _make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        defaults: dict[str, Any] = {
            "latency_ms": 50,
            "latency_jitter_ms": 0,
            "store_path": str(tmp_path / f"sim-{next(fresh)}" / "book.sqlite3"),
        }
        settings = SimSettings(**{**defaults, **overrides})
        app = create_app(settings, clock=clock)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
                yield client
        finally:
            app.state.book.close()

    return _make


def order(
    coid: str,
    *,
    symbol: str = "AAPL",
    side: str = "buy",
    quantity: str = "10",
    price: str = "187.42",
    account: str = "acct-1",
) -> dict[str, str]:
    return {
        "client_order_id": coid,
        "account_id": account,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "reference_price": price,
    }


async def all_executions(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    resp = await client.get("/executions", params={"after": 0, "limit": 5000})
    assert resp.status_code == 200
    return list(resp.json()["executions"])
