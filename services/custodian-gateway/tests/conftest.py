"""Fixtures for custodian-gateway's tests.

`CustodianDouble` is a small in-memory stand-in for the remote custodian (the contract of
tools/custodian-sim), served over ASGI: the tests decide exactly which executions appear.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn
from ballast_common.auth import Principal, Role
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import TradesApprovedV1, TradeV1
from ballast_common.db import Database
from ballast_common.telemetry import tracer
from ballast_common.testing import envelope, migrated_database, unit_of_work
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text


@dataclass
class Submission:
    ids: list[str]
    traceparent: str | None
    possible_resends: list[str] = field(default_factory=list)  # ids marked possible resend


@dataclass
class CustodianDouble:
    """Takes orders (idempotent by client_order_id) and serves executions the test adds."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: list[Submission] = field(default_factory=list)
    executions: list[dict[str, Any]] = field(default_factory=list)
    refuse_symbols: set[str] = field(default_factory=set)
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)  # by fill id
    booking_posts: int = 0  # POST /allocations answered
    unavailable: bool = False
    refused_while_down: int = 0  # POST /orders answered 503 while unavailable
    execution_polls: list[float] = field(default_factory=list)  # when each GET /executions came
    status_requests: list[str] = field(default_factory=list)  # GET /orders/{id} asked
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.app = self._build()

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/orders", status_code=202)
        async def submit(request: Request) -> Any:
            if self.unavailable:
                self.refused_while_down += 1
                return JSONResponse({"detail": "down for maintenance"}, status_code=503)
            body = await request.json()
            bad = [o for o in body["orders"] if o["symbol"] in self.refuse_symbols]
            if bad:
                return JSONResponse(
                    {"title": "Invalid request", "detail": f"symbol {bad[0]['symbol']} unknown"},
                    status_code=422,
                    media_type="application/problem+json",
                )
            ids = [o["client_order_id"] for o in body["orders"]]
            marked = [o["client_order_id"] for o in body["orders"] if o.get("possible_resend")]
            self.submissions.append(Submission(ids, request.headers.get("traceparent"), marked))
            accepted, duplicates = [], []
            for o in body["orders"]:
                if o["client_order_id"] in self.orders:
                    duplicates.append(o["client_order_id"])
                else:
                    self.orders[o["client_order_id"]] = o
                    accepted.append(o["client_order_id"])
            return {"accepted": accepted, "duplicates": duplicates}

        @app.post("/allocations")
        async def book(request: Request) -> Any:
            if self.unavailable:
                return JSONResponse({"detail": "down for maintenance"}, status_code=503)
            body = await request.json()
            bad = [a for a in body["allocations"] if a["symbol"] in self.refuse_symbols]
            if bad:
                return JSONResponse(
                    {"title": "Invalid request", "detail": f"symbol {bad[0]['symbol']} unknown"},
                    status_code=422,
                    media_type="application/problem+json",
                )
            self.booking_posts += 1
            results = []
            for a in body["allocations"]:
                duplicate = a["fill_id"] in self.bookings
                self.bookings.setdefault(a["fill_id"], a)
                refused = a["account_id"].startswith("NOBODY")
                results.append(
                    {
                        "fill_id": a["fill_id"],
                        "outcome": "refused" if refused else "booked",
                        "reason": f"account {a['account_id']} is not held" if refused else None,
                        "duplicate": duplicate,
                    }
                )
            return {"results": results}

        @app.get("/executions")
        async def executions(after: int = 0, limit: int = 1000) -> Any:
            self.execution_polls.append(time.monotonic())
            if self.unavailable:
                return JSONResponse({"detail": "down"}, status_code=503)
            page = [e for e in self.executions if e["seq"] > after][:limit]
            return {"executions": page, "last_seq": page[-1]["seq"] if page else after}

        @app.get("/orders/{client_order_id}")
        async def order(client_order_id: str) -> Any:
            self.status_requests.append(client_order_id)
            if self.unavailable:
                return JSONResponse({"detail": "down"}, status_code=503)
            known = self.orders.get(client_order_id)
            if known is None:
                return JSONResponse(
                    {"title": "Unknown order", "status": 404, "detail": client_order_id},
                    status_code=404,
                    media_type="application/problem+json",
                )
            filled = sum(
                (
                    Decimal(e["quantity"])
                    for e in self.executions
                    if e["client_order_id"] == client_order_id and e["kind"] == "fill"
                ),
                Decimal(0),
            )
            return {
                "client_order_id": client_order_id,
                "status": "accepted" if filled == 0 else "partially_filled",
                "filled_quantity": str(filled),
                "times_submitted": self.times_submitted(client_order_id),
            }

        @app.get("/stats")
        async def stats() -> Any:
            return {"last_seq": len(self.executions), "orders_received": len(self.orders)}

        return app

    def times_submitted(self, client_order_id: str) -> int:
        return sum(s.ids.count(client_order_id) for s in self.submissions)

    def _add(self, client_order_id: str, kind: str, **fields: Any) -> dict[str, Any]:
        order = self.orders.get(client_order_id, {})
        seq = len(self.executions) + 1
        execution = {
            "seq": seq,
            "execution_id": f"EX-{next(self._ids)}",
            "client_order_id": client_order_id,
            "account_id": order.get("account_id", "ACC-UNKNOWN"),
            "symbol": order.get("symbol", "ZZZ"),
            "side": order.get("side", "buy"),
            "kind": kind,
            "quantity": order.get("quantity", "1"),
            "price": None,
            "reason": None,
            "executed_at": datetime(2026, 11, 20, 15, 0, seq, tzinfo=UTC).isoformat(),
        }
        execution.update(fields)
        self.executions.append(execution)
        return execution

    def fill(self, client_order_id: str, quantity: str, price: str) -> dict[str, Any]:
        return self._add(client_order_id, "fill", quantity=quantity, price=price)

    def reject(self, client_order_id: str, reason: str) -> dict[str, Any]:
        return self._add(client_order_id, "reject", reason=reason)

    def restart(self) -> None:
        """Forget everything, as a custodian that lost its state would."""
        self.orders.clear()
        self.executions.clear()
        self.submissions.clear()


class LoseResponses(httpx.AsyncBaseTransport):
    """Delivers requests to the custodian, then loses the answer (a crash or a cut
    connection after the custodian took the orders) while `lose` is set."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.lose = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.lose:
            await response.aread()
            raise httpx.ReadError(
                "connection reset after the request was delivered", request=request
            )
        return response


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float, what: str) -> Any:
    """Poll `check` until it gives something true (its result), failing after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            while not (result := await check()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None
    return result


@dataclass
class Simulator:
    """A real custodian-sim process on `port` keeping its book in `store`."""

    port: int
    store: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        env = {**os.environ, **self.env, "SIM_STORE_PATH": str(self.store)}
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "uvicorn",
                "custodian_sim.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                env=env,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        await until(self._healthy, 30, f"the simulator to answer (log: {self.log})")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def _healthy(self) -> bool:
        if not self.running:
            raise RuntimeError(f"the simulator exited: {self.log.read_text()[-2000:]}")
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                return (await http.get(f"{self.url}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def kill(self) -> None:
        """kill -9 its process group and reap it."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            await self.process.wait()

    async def get(self, path: str, **params: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as http:
            response = await http.get(path, params=params)
            response.raise_for_status()
            return response.json()

    async def post(self, path: str, body: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            return await http.post(path, json=body)

    async def executions(self) -> list[dict[str, Any]]:
        page = await self.get("/executions", after=0, limit=5000)
        return list(page["executions"])


@pytest.fixture
async def simulator_process(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """`await simulator_process(env)`: a started simulator process with a store file of the
    test's own (killed at the end)."""
    started: list[Simulator] = []

    async def start(env: dict[str, str]) -> Simulator:
        n = len(started)
        sim = Simulator(
            free_port(), tmp_path / f"sim{n}" / "book.sqlite3", tmp_path / f"sim{n}.log", env
        )
        started.append(sim)
        await sim.start()
        return sim

    yield start
    for sim in started:
        if sim.running:
            await sim.kill()


@pytest.fixture
def custodian() -> CustodianDouble:
    return CustodianDouble()


@pytest.fixture
async def served(custodian: CustodianDouble) -> AsyncIterator[str]:
    """The custodian double served over real HTTP on a free port; its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(custodian.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
def lossy(custodian: CustodianDouble) -> LoseResponses:
    return LoseResponses(httpx.ASGITransport(app=custodian.app))


@pytest.fixture
async def client(lossy: LoseResponses) -> AsyncIterator[CustodianClient]:
    async with httpx.AsyncClient(transport=lossy, base_url="http://custodian") as http:
        yield CustodianClient(http)


@pytest.fixture(scope="session", autouse=True)
def spans() -> InMemorySpanExporter:
    """Finished spans of this test session (an SDK tracer provider is installed if none)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="session")
async def migrated(database_url: str) -> AsyncIterator[Database]:
    from custodian_gateway.main import spec

    db = await migrated_database(spec, database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def db(migrated: Database) -> Database:
    """The migrated database with this service's tables emptied before the test (DELETE:
    the service's own role may change rows, not TRUNCATE tables)."""
    async with migrated.engine.begin() as conn:
        tables = ("executions", "bookings_due", "allocations", "orders", "poll_cursor")
        for table in (*tables, "outbox", "inbox"):
            await conn.execute(text(f"DELETE FROM {table}"))
    return migrated


def make_trades(
    count: int, *, symbol: str = "MSFT", quantity: str = "10", side: str | None = None
) -> list[TradeV1]:
    return [
        TradeV1(
            trade_id=uuid.uuid4(),
            symbol=symbol,
            side=side or ("buy" if i % 2 == 0 else "sell"),
            quantity=Decimal(quantity),
            estimated_price=Decimal("415.20"),
            estimated_value=Decimal(quantity) * Decimal("415.20"),
            reason="model-change",
            explanation="Buy to target.",
        )
        for i in range(count)
    ]


def approved(trades: list[TradeV1], account_id: str = "ACC-000123") -> TradesApprovedV1:
    return TradesApprovedV1(
        proposal_id=uuid.uuid4(),
        account_id=account_id,
        approved_by="policy:auto-approve",
        trades=trades,
    )


def envelope_of(payload: TradesApprovedV1, tenant: str = "acme") -> Envelope:
    return envelope(payload, tenant=tenant, source="account-svc")


@pytest.fixture
def trade_factory() -> Any:
    return make_trades


@pytest.fixture
def approved_factory() -> Any:
    return approved


@pytest.fixture
def envelope_factory() -> Any:
    return envelope_of


SOURCE = "custodian-gateway"
CUSTODIAN = "default"
BLOCK_ACCOUNT = "BLOCK-TEST"
TENANT = "acme"  # the tenant `approve` records trades for by default
# Reads of the tenant's rows, with the custodian's own facts (operations may see them).
OPERATOR = Principal("ops@acme", TENANT, frozenset({Role.OPERATIONS}))


async def approve(db: Database, *payloads: TradesApprovedV1, tenant: str = "acme") -> list[Any]:
    """Run the trades-approved batch handler on `payloads` as one consumer batch."""
    deliveries = [Delivery(envelope_of(p, tenant), p) for p in payloads]
    async with unit_of_work(db, SOURCE) as uow:
        with tracer().start_as_current_span("trades-approved process"):
            return await service.record_approved_trades(uow, deliveries, CUSTODIAN)


async def block(
    db: Database, *, window_s: float = 0.0, max_wait_s: float = 60.0, limit: int = 100_000
) -> Any:
    """One blocking step: pending allocations become block orders under BLOCK_ACCOUNT."""
    async with unit_of_work(db, SOURCE) as uow:
        return await service.block_pending(
            uow,
            custodian=CUSTODIAN,
            block_account=BLOCK_ACCOUNT,
            window_s=window_s,
            max_wait_s=max_wait_s,
            limit=limit,
        )


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers and names the service tests share (test modules cannot import each other)."""
    return SimpleNamespace(
        approve=approve,
        block=block,
        trades=make_trades,
        approved=approved,
        envelope=envelope_of,
        SOURCE=SOURCE,
        CUSTODIAN=CUSTODIAN,
        BLOCK_ACCOUNT=BLOCK_ACCOUNT,
        TENANT=TENANT,
        OPERATOR=OPERATOR,
        until=until,
    )
