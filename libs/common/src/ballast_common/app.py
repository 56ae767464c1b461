"""One app factory for every service: a service declares routes, handlers and tables.

`create_app(spec)` wires settings, JSON logs, tracing, the database (with migrations), the
Kafka publisher, the outbox relay, the consumer loop and background tasks, and serves
`/healthz`, `/readyz`, `/metrics`, problem+json errors, and `/docs` and `/redoc` with their
scripts and styles served by the service itself (no CDN: they work offline).

Every request is guarded the same way: a body limit (413), text the database cannot store
(NUL, unpaired surrogates) and integers beyond 64 bits refused with 422 naming the field, and
503 with Retry-After, not 500, while the database or Kafka is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import MetaData, pool
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from ballast_common import idempotency, openapi
from ballast_common.auth import (
    AuthSettings,
    TokenVerifier,
    authenticate,
    operations_of,
    public,
)
from ballast_common.book_loads import BookLoadSpec, book_load_router
from ballast_common.bus import KafkaConnection, KafkaPublisher, ensure_topics
from ballast_common.consumer import (
    BatchProcessor,
    KafkaConsumerLoop,
    Subscription,
    dead_letter_topic,
)
from ballast_common.contracts.registry import CONTRACTS
from ballast_common.db import Database, async_url
from ballast_common.errors import BallastError
from ballast_common.metrics import HTTP_LATENCY, HTTP_REQUESTS, OUTBOX_BACKLOG
from ballast_common.migrations import upgrade_connection
from ballast_common.outbox import unpublished_count
from ballast_common.problems import DEPENDENCY_ERRORS, failure_response, problem_response
from ballast_common.relay import OutboxRelay
from ballast_common.request_guards import BodyLimitMiddleware, refuse_unstorable_input
from ballast_common.settings import ServiceSettings
from ballast_common.telemetry import setup_logging, setup_tracing, shutdown_tracing
from ballast_common.tenancy import AppRole
from ballast_common.uow import UnitOfWork

log = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/docs-assets"  # Swagger UI's and ReDoc's scripts, styles and icon
DOCS_PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")  # as FastAPIOffline serves them
BackgroundTask = Callable[["Runtime"], Awaitable[None]]


@dataclass
class ServiceSpec:
    """Everything that makes one service different from another."""

    name: str  # e.g. "rebalance-svc": also the consumer group and span service name
    schema: str  # its Postgres schema
    settings_type: type[ServiceSettings]
    metadata: MetaData  # its tables (outbox and inbox are added by the factory)
    migrations_dir: Path
    description: str = ""
    routers: Sequence[APIRouter] = ()
    subscriptions: Sequence[Subscription] = ()
    background: Sequence[BackgroundTask] = ()
    # Parts of the book file set this service loads (`/book-loads`, see book_loads.py).
    book_load: BookLoadSpec | None = None
    # Other kinds of file load it serves, each under its spec's `route` (its own loads table).
    file_loads: Sequence[BookLoadSpec] = ()
    # Tables with a tenant column whose rows every tenant reads (no row-level policy:
    # tenancy.py), e.g. platform-wide reference data that records who made it.
    shared_tables: frozenset[str] = frozenset()
    version: str = "0.1.0"
    extra: dict[str, Any] = field(default_factory=dict)


class Runtime:
    """What a running service holds: settings, database, bus, relay. One per process."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.db = Database(settings.database_url, spec.schema)
        self.kafka = KafkaConnection.from_settings(settings)
        self.publisher = KafkaPublisher(self.kafka, client_id=spec.name)
        self.relay = OutboxRelay(
            self.db,
            self.publisher,
            topic_prefix=settings.topic_prefix,
            poll_interval_s=settings.outbox_poll_interval_s,
        )
        self.group = settings.topic_prefix + spec.name
        # One consumer per lane: the main one, and one per subscription lane of its own.
        self.processors: list[tuple[BatchProcessor, int]] = []
        lanes: dict[str | None, list[Subscription]] = {}
        for subscription in spec.subscriptions:
            lanes.setdefault(subscription.lane, []).append(subscription)
        for lane, members in lanes.items():
            sizes = {m.batch_size for m in members if m.batch_size is not None}
            if len(sizes) > 1:
                raise ValueError(f"{spec.name}: lane {lane!r} has two batch sizes {sizes}")
            processor = BatchProcessor(
                self.group if lane is None else f"{self.group}.{lane}",
                members,
                self.uow,
                topic_prefix=settings.topic_prefix,
                dead_letters=dead_letter_topic(spec.name),
            )
            self.processors.append((processor, sizes.pop() if sizes else 0))
        self.consumers: list[KafkaConsumerLoop] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.state: dict[str, Any] = {}  # service-owned objects (HTTP clients...)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self.db.sessions(), self.spec.name, on_commit=self.relay.wake)

    def topics(self) -> list[str]:
        prefix = self.settings.topic_prefix
        names = {c.topic for c in CONTRACTS.values() if c.type != "dead-letter"}
        if self.spec.subscriptions:
            names.add(dead_letter_topic(self.spec.name))
        return sorted(prefix + n for n in names)

    async def start(self) -> None:
        if not self.settings.auth_jwks:
            raise RuntimeError(
                f"{self.spec.name}: no JWKS to check bearer tokens with: set BALLAST_AUTH_JWKS "
                "to the issuer's JWKS URL or file (the local issuer's: .state/auth/jwks.json; "
                "see docs/auth.md)"
            )
        if self.settings.migrate_on_start:
            await self.migrate()
        await ensure_topics(
            self.kafka,
            self.topics(),
            self.settings.topic_partitions,
            self.settings.topic_replication_factor,
        )
        await self.publisher.start()
        self._spawn("outbox-relay", lambda: self.relay.run())
        for processor, batch_size in self.processors:
            consumer = KafkaConsumerLoop(
                processor,
                self.kafka,
                batch_size=batch_size or self.settings.consumer_batch_size,
            )
            self.consumers.append(consumer)
            self._spawn(f"consumer {processor.group}", consumer.run)
        for task in self.spec.background:
            self._spawn(task.__name__, lambda task=task: task(self))  # type: ignore[misc]

    async def migrate(self) -> None:
        """Bring the schema to head as its owner (`database_owner_url`, else our own URL)."""
        owner_url = self.settings.database_owner_url or self.settings.database_url
        await migrate_as_owner(
            self.spec, owner_url, AppRole.of(self.settings.database_url, owner_url)
        )

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.publisher.stop()
        await self.db.dispose()
        shutdown_tracing()

    def _spawn(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        self.tasks.append(asyncio.create_task(_supervise(name, factory), name=name))

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        try:
            await self.db.ping()
            async with self.db.sessions() as session:
                OUTBOX_BACKLOG.set(await unpublished_count(session))
            checks["database"] = "ok"
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks["database"] = f"unavailable: {exc}"
        try:
            await self.publisher.check()
            checks["kafka"] = "ok"
        except Exception as exc:
            checks["kafka"] = f"unavailable: {exc!r}"
        if self.consumers:
            joined = all(c.assigned.is_set() for c in self.consumers)
            checks["consumer"] = "ok" if joined else "joining group"
        return checks


async def _supervise(name: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived task; if it crashes, log and restart it after a pause."""
    delay = 0.5
    while True:
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task crashed; restarting", extra={"task": name})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


async def migrate_as_owner(spec: ServiceSpec, owner_url: str, app_role: AppRole | None) -> None:
    """Migrate `spec`'s schema on a connection of the owner; then its tenant policies and,
    if given, the grants of the role the service runs as (tenancy.py)."""
    engine = create_async_engine(async_url(owner_url), poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: upgrade_connection(
                    sync,
                    spec.schema,
                    spec.migrations_dir,
                    spec.metadata,
                    shared_tables=spec.shared_tables,
                    app_role=app_role,
                )
            )
    finally:
        await engine.dispose()


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def _request_uow(request: Request) -> AsyncIterator[UnitOfWork]:
    connection = idempotency.request_connection(request)
    if connection is None:
        async with get_runtime(request).uow() as uow:
            yield uow
        return
    # A keyed request: its changes join the transaction that holds its idempotency claim,
    # which commits with the stored response (idempotency.py).
    session = AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    async with UnitOfWork(session, request.app.state.service_name) as uow:
        yield uow


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_runtime(request).db.sessions() as session:
        yield session


# Route handlers take these: a unit of work for changes, a plain session for reads.
UoW = Annotated[UnitOfWork, Depends(_request_uow, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(_request_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def create_app(spec: ServiceSpec, settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or spec.settings_type()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(spec.name, settings.log_level)
        setup_tracing(spec.name, settings.otlp_endpoint, settings.trace_file)
        runtime = Runtime(spec, settings)
        app.state.runtime = runtime
        await runtime.start()
        # What exists now (modules, the app, the runtime) lives as long as the process: kept
        # out of the collector's sight, each collection scans only what the work makes.
        gc.freeze()
        log.info("service started", extra={"schema": spec.schema})
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPIOffline(
        title=spec.name,
        description=spec.description,
        version=spec.version,
        lifespan=lifespan,
        static_url=DOCS_ASSETS_URL,
        # In this order: know the caller (401 before anything else), refuse what cannot be
        # stored, then claim an idempotency key in the caller's scope.
        dependencies=[
            Depends(authenticate),
            Depends(refuse_unstorable_input),
            Depends(idempotency.claim_key),
        ],
    )
    app.state.service_name = spec.name
    app.state.token_verifier = TokenVerifier(
        AuthSettings(settings.auth_issuer, settings.auth_audience, settings.auth_jwks)
    )
    app.state.max_body_bytes = settings.max_body_bytes
    _install_errors(app, settings.retry_after_s)
    openapi.install(app)
    app.add_middleware(
        idempotency.IdempotencyMiddleware,
        connect=lambda scope: scope["app"].state.runtime.db.engine.connect(),
        on_failure=lambda scope, exc: failure_response(scope["path"], exc, settings.retry_after_s),
        after_commit=_wake_relay,
    )
    app.add_middleware(BodyLimitMiddleware, default=settings.max_body_bytes)
    _install_metrics(app)
    _install_health(app)
    for router in spec.routers:
        app.include_router(router)
    for load in (spec.book_load, *spec.file_loads):
        if load is not None:
            app.include_router(
                book_load_router(load, get_runtime), max_body_size=settings.max_upload_bytes
            )
    _check_every_route_is_guarded(app)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app


def _check_every_route_is_guarded(app: FastAPI) -> None:
    """Refuse to build an app with a route that is neither public nor requires a permission.
    The API's description and its pages (/docs, /redoc, /openapi.json) are public."""
    described = {*DOCS_PAGES, app.openapi_url}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path in described:
            public(route.endpoint)
    unguarded = [
        f"{sorted(op.methods)} {op.path}"
        for op in operations_of(app)
        if not op.public and op.permission is None
    ]
    if unguarded:
        raise RuntimeError(
            f"{app.title}: routes without a permission (take a `CanRead`-like parameter from "
            f"ballast_common.auth, or mark them `@public`): {', '.join(unguarded)}"
        )


def _wake_relay(scope: Scope) -> None:
    relay = getattr(scope["app"].state.runtime, "relay", None)
    if relay is not None:
        relay.wake()


def _install_errors(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(BallastError)
    async def ballast_error(request: Request, exc: BallastError) -> JSONResponse:
        return problem_response(
            exc.status, exc.problem(instance=request.url.path), exc.response_headers()
        )

    @app.exception_handler(idempotency.IdempotentAnswer)
    async def idempotent_answer(request: Request, exc: idempotency.IdempotentAnswer) -> Response:
        return exc.response

    async def dependency_error(request: Request, exc: Exception) -> JSONResponse:
        return failure_response(request.url.path, exc, retry_after_s)

    for error_type in DEPENDENCY_ERRORS:
        app.add_exception_handler(error_type, dependency_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": field_path(err["loc"]), "message": err["msg"]} for err in exc.errors()]
        fields = ", ".join(e["field"] for e in errors[:5])
        return problem_response(
            422,
            {
                "type": "https://ballast.dev/problems/invalid-request",
                "title": "Invalid request",
                "status": 422,
                "detail": f"The request has invalid fields: {fields}",
                "instance": request.url.path,
                "errors": errors,
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code,
            {
                "type": "about:blank",
                "title": str(exc.detail) if exc.status_code != 404 else "Not found",
                "status": exc.status_code,
                "detail": str(exc.detail),
                "instance": request.url.path,
            },
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return failure_response(request.url.path, exc, retry_after_s)


def field_path(loc: Sequence[int | str]) -> str:
    """`("body", "targets", 0, "weight")` -> `targets[0].weight`, as service rules name fields."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    # A name that is not valid text (an unpaired surrogate) is shown escaped.
    return path.encode("utf-8", "backslashreplace").decode() if path else "body"


def _install_metrics(app: FastAPI) -> None:
    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        HTTP_REQUESTS.labels(request.method, path, str(response.status_code)).inc()
        HTTP_LATENCY.labels(request.method, path).observe(time.perf_counter() - started)
        return response

    @app.get("/metrics", include_in_schema=False)
    @public
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class Readiness(BaseModel):
    """The service can do its work: what each dependency said."""

    status: Literal["ready"]
    checks: dict[str, str]


def _install_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"], summary="The process is alive")
    @public
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Database and Kafka are reachable",
        response_model=Readiness,
        responses={503: {"description": "Not ready: `checks` says what each dependency said"}},
    )
    @public
    async def readyz(request: Request) -> JSONResponse:
        checks = await get_runtime(request).readiness()
        if all(v == "ok" for v in checks.values()):
            return JSONResponse(Readiness(status="ready", checks=checks).model_dump())
        failing = "; ".join(f"{name}: {state}" for name, state in checks.items() if state != "ok")
        return problem_response(
            503,
            {
                "type": "https://ballast.dev/problems/not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": failing,
                "instance": request.url.path,
                "checks": checks,
            },
        )
