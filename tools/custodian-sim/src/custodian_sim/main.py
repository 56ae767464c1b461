"""The custodian simulator's HTTP API: ``uvicorn custodian_sim.main:app --port 8009``."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from custodian_sim.book import (
    Clock,
    Execution,
    Order,
    OrderBook,
    OrderConflictError,
    OrderRequest,
    utc_now,
)
from custodian_sim.custody import (
    AllocationRequest,
    BookFilesInvalid,
    BookRequestInvalid,
    Custody,
    DayBeforeBook,
    NoBook,
    OtherBookLoaded,
)
from custodian_sim.fix_acceptor import FixAcceptor
from custodian_sim.logs import configure_logging, current_trace, parse_traceparent
from custodian_sim.order_terms import ExactDecimal, Identifier, OrderIn
from custodian_sim.settings import SimSettings

PROBLEM_JSON = "application/problem+json"
MAX_PAGE = 5000

log = logging.getLogger("custodian_sim.api")


class SubmitOrders(BaseModel):
    orders: Annotated[list[OrderIn], Field(min_length=1)]


class SubmitResponse(BaseModel):
    accepted: list[str]
    duplicates: list[str]


class ExecutionOut(BaseModel):
    seq: int
    execution_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: Literal["buy", "sell"]
    kind: Literal["fill", "reject"]
    quantity: str
    price: str | None
    reason: str | None
    executed_at: datetime


class ExecutionsPage(BaseModel):
    executions: list[ExecutionOut]
    last_seq: int = Field(description="Pass as `after` on the next poll.")


class OrderOut(BaseModel):
    client_order_id: str
    account_id: str
    symbol: str
    side: Literal["buy", "sell"]
    quantity: str
    reference_price: str
    status: Literal["accepted", "partially_filled", "filled", "rejected"]
    filled_quantity: str
    reject_reason: str | None
    times_submitted: int
    possible_resends: int = Field(description="Submissions marked as a possible resend.")
    received_at: datetime
    channel: Literal["http", "fix"] = Field(description="How it came: POST /orders or FIX.")


# A buy's lot is "fill-<fill_id>", and the daily files allow lot ids of 64 characters.
FillId = Annotated[str, Field(min_length=1, max_length=59, pattern=r"^\S(.*\S)?$")]
LotId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]


class LoadBook(BaseModel):
    folder: Annotated[str, Field(min_length=1, description="A book file set's folder.")]
    as_of: date | None = Field(
        default=None, description="The book's date (default: the folder's name)."
    )


class BookOut(BaseModel):
    load_id: str
    folder: str
    as_of: date
    accounts: int
    lots: int
    loaded_at: datetime
    already_loaded: bool = False


class AllocationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fill_id: FillId
    client_order_id: Identifier
    account_id: Identifier
    symbol: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9.\-/]+$")]
    side: Literal["buy", "sell"]
    quantity: Annotated[ExactDecimal, Field(gt=0, le=Decimal("1E12"), decimal_places=8)]
    price: Annotated[ExactDecimal, Field(gt=0, le=Decimal("1E9"), decimal_places=8)]
    executed_at: datetime
    lot_ids: Annotated[list[LotId], Field(max_length=1000)] = Field(
        default_factory=list,
        description="A sell's lots to relieve, in order (versus purchase); none: FIFO.",
    )


class BookAllocations(BaseModel):
    allocations: Annotated[list[AllocationIn], Field(min_length=1)]


class AllocationOut(BaseModel):
    fill_id: str
    outcome: Literal["booked", "refused"]
    reason: str | None
    duplicate: bool = Field(description="Received before: its first answer, nothing booked.")


class AllocationsOut(BaseModel):
    results: list[AllocationOut]


class WriteFiles(BaseModel):
    root: str | None = Field(
        default=None,
        description="Write to <root>/<custodian>/<date>/ (default: SIM_FILES_DIR).",
    )


class FilesOut(BaseModel):
    folder: str
    business_date: date
    rows: dict[str, int]


def _fmt(d: Decimal) -> str:
    return format(d, "f")


def _execution_out(e: Execution) -> ExecutionOut:
    return ExecutionOut(
        seq=e.seq,
        execution_id=e.execution_id,
        client_order_id=e.client_order_id,
        account_id=e.account_id,
        symbol=e.symbol,
        side=e.side,
        kind=e.kind,
        quantity=_fmt(e.quantity),
        price=None if e.price is None else _fmt(e.price),
        reason=e.reason,
        executed_at=e.executed_at,
    )


def _order_out(o: Order) -> OrderOut:
    r = o.request
    return OrderOut(
        client_order_id=r.client_order_id,
        account_id=r.account_id,
        symbol=r.symbol,
        side=r.side,
        quantity=_fmt(r.quantity),
        reference_price=_fmt(r.reference_price),
        status=o.status,  # type: ignore[arg-type]
        filled_quantity=_fmt(o.filled_quantity),
        reject_reason=o.reject_reason,
        times_submitted=o.times_submitted,
        possible_resends=o.possible_resends,
        received_at=o.received_at,
        channel=o.channel,  # type: ignore[arg-type]
    )


def problem(
    status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
) -> JSONResponse:
    """An RFC 9457 problem+json response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or "body"


def create_app(settings: SimSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """Build the simulator app; tests pass their own settings and clock."""
    settings = settings or SimSettings()
    configure_logging(settings.log_level)
    book = OrderBook(settings, clock or utc_now)
    custody = Custody(book.store)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Opens the store (a bad path fails the start, not an order); before releasing what
        # fell due while the process was down, so the log says what was waiting.
        stats = book.store.stats()
        log.info(
            "book opened",
            extra={
                "store": settings.store_path,
                "orders": stats["orders_received"],
                "last_seq": stats["last_seq"],
                "pending_executions": stats["pending_executions"],
            },
        )
        acceptor = FixAcceptor(settings, book) if settings.fix_port is not None else None
        if acceptor is not None:
            await acceptor.start()
        app.state.fix = acceptor
        try:
            yield
        finally:
            if acceptor is not None:
                await acceptor.close()
            book.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Ballast custodian simulator",
        version="0.1.0",
        description="Stands in for a custodian: takes orders, fills them later, in pieces, "
        "or rejects them. Its book is kept in a SQLite file (SIM_STORE_PATH), so a restart "
        "forgets nothing.",
    )
    app.state.book = book
    app.state.settings = settings
    app.state.fix = None

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": "body" if e["type"] == "json_invalid" else _field_name(tuple(e["loc"])),
                "message": str(e["msg"]).removeprefix("Value error, "),
                "type": e["type"],
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        log.info("request rejected", extra={"status": 422, "errors": errors})
        return problem(422, "Invalid request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), f"{request.method} {request.url.path}")

    @app.middleware("http")
    async def _trace_and_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        trace = parse_traceparent(request.headers.get("traceparent"))
        token = current_trace.set(trace)
        started = time.perf_counter()
        try:
            response = await call_next(request)
            level = logging.INFO if request.method != "GET" else logging.DEBUG
            log.log(
                level,
                "request served",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            return response
        finally:
            current_trace.reset(token)

    @app.post("/orders", status_code=202, response_model=SubmitResponse)
    async def submit_orders(body: SubmitOrders) -> SubmitResponse | JSONResponse:
        if len(body.orders) > settings.max_orders_per_request:
            return problem(
                422,
                "Invalid request",
                f"orders: at most {settings.max_orders_per_request} orders per request, "
                f"got {len(body.orders)}",
                [{"field": "orders", "message": "too many orders", "type": "too_long"}],
            )
        requests = [
            OrderRequest(
                client_order_id=o.client_order_id,
                account_id=o.account_id,
                symbol=o.symbol,
                side=o.side,
                quantity=o.quantity,
                reference_price=o.reference_price,
                possible_resend=o.possible_resend,
            )
            for o in body.orders
        ]
        try:
            result = book.submit(requests)
        except OrderConflictError as exc:
            errors = [
                {"field": "client_order_id", "message": str(exc), "type": "conflict"},
                *(
                    {"field": f, "message": "differs from the first submission", "type": "conflict"}
                    for f in exc.differences
                ),
            ]
            return problem(409, "Client order id reused", str(exc), errors)
        log.info(
            "orders submitted",
            extra={
                "accepted": len(result.accepted),
                "duplicates": result.duplicates,
                "possible_resends": sum(o.possible_resend for o in body.orders),
            },
        )
        return SubmitResponse(accepted=result.accepted, duplicates=result.duplicates)

    @app.get("/executions", response_model=ExecutionsPage)
    async def list_executions(
        after: Annotated[int, Query(ge=0, description="Return executions with seq > after.")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    ) -> ExecutionsPage:
        page, last_seq = book.executions_after(after, limit)
        return ExecutionsPage(executions=[_execution_out(e) for e in page], last_seq=last_seq)

    @app.get("/orders/{client_order_id}", response_model=OrderOut)
    async def get_order(client_order_id: str) -> OrderOut | JSONResponse:
        order = book.get_order(client_order_id)
        if order is None:
            return problem(
                404, "Unknown order", f"no order with client_order_id {client_order_id!r}"
            )
        return _order_out(order)

    @app.get("/stats")
    async def stats() -> dict[str, object]:
        acceptor: FixAcceptor | None = app.state.fix
        fix = {"fix": acceptor.stats()} if acceptor is not None else {}
        return {**book.stats(), **book.store.custody_stats(), **fix}

    @app.post("/book", status_code=201, response_model=BookOut)
    async def load_book(body: LoadBook, response: Response) -> BookOut | JSONResponse:
        try:
            load, before = custody.load_book(Path(body.folder), body.as_of, book.clock())
        except BookRequestInvalid as exc:
            return problem(
                422,
                "Invalid request",
                str(exc),
                [{"field": exc.field, "message": str(exc), "type": "value_error"}],
            )
        except OtherBookLoaded as exc:
            return problem(409, "Another book is loaded", str(exc))
        except BookFilesInvalid as exc:
            errors = [
                {"file": p.file, "line": p.line, "column": p.column, "message": p.message}
                for p in exc.problems
            ]
            log.info("book refused", extra={"problems": exc.count, "folder": body.folder})
            return problem(422, "Invalid book files", str(exc), errors)
        if before:
            response.status_code = 200
        else:
            log.info("book loaded", extra={"load_id": load.load_id, "accounts": load.accounts})
        return BookOut(**load.__dict__, already_loaded=before)

    @app.get("/book", response_model=BookOut)
    async def get_book() -> BookOut | JSONResponse:
        load = book.store.loaded_book()
        if load is None:
            return problem(404, "No book", "no book file set is loaded (POST /book)")
        return BookOut(**load.__dict__)

    @app.post("/allocations", response_model=AllocationsOut)
    async def book_allocations(body: BookAllocations) -> AllocationsOut | JSONResponse:
        if len(body.allocations) > settings.max_allocations_per_request:
            limit = settings.max_allocations_per_request
            return problem(
                422,
                "Invalid request",
                f"allocations: at most {limit} per request, got {len(body.allocations)}",
                [{"field": "allocations", "message": "too many allocations", "type": "too_long"}],
            )
        requests = [
            AllocationRequest(
                fill_id=a.fill_id,
                client_order_id=a.client_order_id,
                account_id=a.account_id,
                symbol=a.symbol,
                side=a.side,
                quantity=a.quantity,
                price=a.price,
                executed_at=a.executed_at
                if a.executed_at.tzinfo
                else a.executed_at.replace(tzinfo=UTC),
                lot_ids=tuple(a.lot_ids),
            )
            for a in body.allocations
        ]
        results = custody.book(requests, book.clock())
        refused = [r for r in results if r.outcome == "refused" and not r.duplicate]
        log.info(
            "allocations received",
            extra={
                "booked": sum(r.outcome == "booked" and not r.duplicate for r in results),
                "refused": len(refused),
                "duplicates": sum(r.duplicate for r in results),
                "refusals": [f"{r.fill_id}: {r.reason}" for r in refused[:5]],
            },
        )
        return AllocationsOut(results=[AllocationOut(**r.__dict__) for r in results])

    @app.post("/files/{business_date}", status_code=201, response_model=FilesOut)
    async def write_files(
        business_date: date, body: WriteFiles | None = None
    ) -> FilesOut | JSONResponse:
        root = Path(body.root) if body and body.root else Path(settings.files_dir)
        folder = root / settings.custodian_name / business_date.isoformat()
        try:
            written = custody.write_day(folder, business_date)
        except NoBook as exc:
            return problem(409, "No book", str(exc))
        except DayBeforeBook as exc:
            return problem(
                422,
                "Invalid request",
                f"business_date: {exc}",
                [{"field": "business_date", "message": str(exc), "type": "value_error"}],
            )
        log.info("daily files written", extra={"folder": str(folder), "rows": written.rows})
        return FilesOut(folder=str(folder), business_date=business_date, rows=written.rows)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/reset")
    async def reset() -> dict[str, str]:
        book.reset()
        log.info("state reset")
        return {"status": "reset"}

    return app


app = create_app()
