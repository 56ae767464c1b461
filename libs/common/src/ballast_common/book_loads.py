"""Book loads: CSV files staged with COPY, checked in SQL, applied all at once.

A service that loads part of the book file set (`contracts/book_files.py`) declares a
`BookLoadSpec`; the app factory then serves, under `/book-loads/{load_id}` (or the spec's
`route`: a service may serve other kinds of file load the same way, `ServiceSpec.file_loads`):

- `PUT .../files/{name}` (text/csv): the file streams into a staging table of its own with
  COPY (no Python object per row); a malformed row (quotes, column count, encoding) is a 422
  naming the file and line;
- `POST .../validate`: every row checked against its columns (kind, emptiness, scale,
  uniqueness) in one scan per file, then the service's own checks; the problems come back
  named `file:line` and column; a load whose rows passed is `checked`, one that passed
  everything `valid`. A spec with `typed=True` gets each file's rows typed once, when they
  have passed, into a table of typed columns (`StagedLoad.typed_table`) that its checks
  and its apply read instead of casting the text again;
- `POST .../apply`: validates again and applies everything in ONE transaction (the service's
  set-based INSERT ... SELECT from the staging tables, its events through the outbox), or
  nothing; applying a load again returns the first result. Of a `valid` load only what
  can have changed since is checked again (`StagedLoad.files_checked`);
- `GET ...` and `DELETE ...`: the load's state, and discarding what was staged.

The staging tables (typed ones too) are unlogged and dropped once the load is applied. The
SQL of this mechanism lives here; a service's own checks and writes live in its repository.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, DateTime, MetaData, String, Table, select, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from ballast_common.auth import CanRead, Permission, requires
from ballast_common.contracts.book_files import (
    BY_NAME,
    FALSE_WORDS,
    TRUE_WORDS,
    CsvColumn,
    CsvFile,
)
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork

MAX_PROBLEMS = 1000
STAGE_PREFIX = "stage_"
LOAD_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_DIGITS = 18  # at most this many digits before the decimal point
# a plain decimal (an exponent is allowed: the value is still exact)
_NUMBER = "^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"


def define_book_loads(metadata: MetaData, name: str = "book_loads") -> Table:
    """The `book_loads` table (or another kind of load's, `name`), in a service's own
    metadata (only services that load files)."""
    return Table(
        name,
        metadata,
        # A load is its tenant's: another tenant's id is not found (and may be used again).
        Column("tenant", String(64), primary_key=True),
        Column("load_id", String(64), primary_key=True),
        # staged | checked (every staged row passed its columns' checks) | valid (and the
        # service's checks too) | applied
        Column("status", String(16), nullable=False),
        # file name -> {"table": staging table, "rows": n, "columns": [...]}
        Column("files", JSONB, nullable=False),
        Column("result", JSONB, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("applied_at", DateTime(timezone=True), nullable=True),
    )


def key_book_loads_by_tenant() -> None:
    """Make `book_loads` each tenant's (in a service's migration): loads staged before have
    no tenant and are reachable by no one."""
    import sqlalchemy as sa
    from alembic import op

    op.add_column(
        "book_loads",
        sa.Column("tenant", sa.String(length=64), nullable=False, server_default=""),
    )
    op.alter_column("book_loads", "tenant", server_default=None)
    op.drop_constraint("book_loads_pkey", "book_loads", type_="primary")
    op.create_primary_key("book_loads_pkey", "book_loads", ["tenant", "load_id"])


def unkey_book_loads_by_tenant() -> None:
    """Undo `key_book_loads_by_tenant` (fails if two tenants used the same load id)."""
    from alembic import op

    op.drop_constraint("book_loads_pkey", "book_loads", type_="primary")
    op.drop_column("book_loads", "tenant")
    op.create_primary_key("book_loads_pkey", "book_loads", ["load_id"])


def create_book_loads() -> None:
    """Create `book_loads` in a service's migration."""
    import sqlalchemy as sa
    from alembic import op
    from sqlalchemy.dialects import postgresql

    op.create_table(
        "book_loads",
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("files", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("load_id"),
    )


# --- what a service gives and gets ------------------------------------------------------------


@dataclass(frozen=True)
class LoadProblem:
    """One bad row (or file): `line` 0 means the file as a whole."""

    file: str
    line: int
    column: str
    message: str

    def as_field(self) -> FieldProblem:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return FieldProblem(f"{where} {self.column}".strip(), self.message)


@dataclass(frozen=True)
class StagedLoad:
    """A load as its checks and its apply step see it."""

    load_id: str
    as_of: date
    tenant: str
    tables: dict[str, str] = field(default_factory=dict)  # file name -> staging table
    rows: dict[str, int] = field(default_factory=dict)
    columns: dict[str, tuple[str, ...]] = field(default_factory=dict)  # as in the header
    # Every check passed since these files were staged: a service's checks may skip those
    # that read nothing but the staged files (they would pass again).
    files_checked: bool = False
    # file name -> its rows typed (`BookLoadSpec.typed`): line and each column as in the
    # header, holding `value_sql` of it
    typed: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.tables

    def table(self, name: str) -> str:
        return self.tables[name]

    def typed_table(self, name: str) -> str | None:
        return self.typed.get(name)


Checks = Callable[[AsyncSession, StagedLoad], Awaitable[list[LoadProblem]]]
Apply = Callable[[UnitOfWork, StagedLoad], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class BookLoadSpec:
    """The files a service loads, its own checks (SQL in its repository) and its apply step."""

    files: tuple[CsvFile, ...]
    table: Table  # the service's book_loads table (define_book_loads)
    checks: Checks
    apply: Apply
    # the files a load must have staged (default: those the file set says are required)
    required: tuple[str, ...] | None = None
    # type each file's rows once they passed their row checks (StagedLoad.typed_table)
    typed: bool = False
    # what staging, applying or discarding a load needs (the security master's: platform:write)
    permission: Permission = Permission.LOAD_BOOKS
    # where its routes are served and what a load is called in messages: a service may serve
    # several kinds of file load (taxlot-svc: `/book-loads` and `/custodian-days`)
    route: str = "/book-loads"
    noun: str = "book load"

    def required_files(self) -> tuple[str, ...]:
        if self.required is not None:
            return self.required
        return tuple(f.name for f in self.files if f.required)

    def file(self, name: str) -> CsvFile:
        for f in self.files:
            if f.name == name:
                return f
        taken = ", ".join(f.name for f in self.files)
        raise NotFound(f"this service does not load {name!r}; it loads {taken}")


class LoadRequest(BaseModel):
    """What a caller says of a load: the tenant is the caller's (its bearer token's)."""

    model_config = ConfigDict(extra="forbid")

    as_of: date = Field(description="the date the files describe (the folder's date)")


class LoadOptions(BaseModel):
    as_of: date
    tenant: str = Field(min_length=1, max_length=64, pattern=r"^\S+$")


# --- SQL the services use on staged rows ----------------------------------------------------


def value_sql(file: CsvFile, column: str, alias: str = "") -> str:
    """The SQL expression of a staged column's typed value (NULL when empty). Valid rows only:
    run after validation."""
    c = file.column(column)
    ref = f"{alias}.{_quote(c.name)}" if alias else _quote(c.name)
    raw = f"NULLIF(btrim({ref}), '')"
    if c.kind == "decimal":
        return f"({raw})::numeric"
    if c.kind == "date":
        return f"({raw})::date"
    if c.kind == "bool":
        return f"(lower({raw}) IN ({_words(TRUE_WORDS)}))"
    if c.kind == "choice":
        return f"lower({raw})"
    return raw


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _words(words: Sequence[str]) -> str:
    return ", ".join("'" + w.replace("'", "''") + "'" for w in words)


def _column_problems(c: CsvColumn, v: str, r: str) -> list[tuple[str, str]]:
    """(SQL condition true on a bad value, message) pairs of one column; `v` is the SQL of
    the trimmed value (NULL when empty), `r` of the raw one."""
    out: list[tuple[str, str]] = []
    if c.required:
        out.append((f"{v} IS NULL", "is empty"))
    if c.kind == "id":
        out.append(
            (
                f"{v} IS NOT NULL AND (length({r}) > {c.max_length} OR {r} <> {v})",
                f"must be 1 to {c.max_length} characters without leading or trailing spaces",
            )
        )
    elif c.kind == "text":
        out.append((f"length({v}) > {c.max_length}", f"is longer than {c.max_length} characters"))
    elif c.kind == "decimal":
        number = f"{v} ~ '{_NUMBER}'"
        out.append((f"{v} IS NOT NULL AND NOT ({number})", "is not a number"))
        out.append(
            (
                f"{number} AND (scale({v}::numeric) > {c.scale} "
                f"OR abs({v}::numeric) >= 1e{_DIGITS})",
                f"must have at most {_DIGITS} digits before the point and {c.scale} after",
            )
        )
        if c.minimum == "positive":
            out.append((f"{number} AND {v}::numeric <= 0", "must be greater than 0"))
        elif c.minimum == "zero":
            out.append((f"{number} AND {v}::numeric < 0", "must not be negative"))
    elif c.kind == "date":
        shape = "^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
        last_day = (
            f"extract(day from make_date(substr({v}, 1, 4)::int, substr({v}, 6, 2)::int, 1)"
            " + interval '1 month - 1 day')"
        )
        out.append(
            (
                f"{v} IS NOT NULL AND (CASE WHEN {v} ~ '{shape}' "
                f"THEN substr({v}, 9, 2)::int > {last_day} ELSE true END)",
                "is not a date (YYYY-MM-DD)",
            )
        )
    elif c.kind == "bool":
        words = _words(TRUE_WORDS + FALSE_WORDS)
        out.append((f"{v} IS NOT NULL AND lower({v}) NOT IN ({words})", "must be true or false"))
    elif c.kind == "choice":
        out.append(
            (
                f"{v} IS NOT NULL AND lower({v}) NOT IN ({_words(c.choices)})",
                "must be one of " + ", ".join(c.choices),
            )
        )
    return out


def _screen_sql(c: CsvColumn, r: str) -> str:
    """A cheap condition, true on a bad value of the column (`r`: the raw value), that may
    raise a data error on some bad values (a failed cast): the fast screen over every row.
    Kept as few plain functions and casts as can be (a pattern per value costs ten times
    more); a value it passes is valid by `_column_problems` (a test holds them together)."""
    v = f"btrim({r})"
    checks: list[str] = []
    if c.required:
        checks.append(f"{r} IS NULL OR {v} = ''")
    if c.kind == "id":
        checks.append(f"length({r}) > {c.max_length} OR {r} <> {v}")
    elif c.kind == "text":
        checks.append(f"length({v}) > {c.max_length}")
    elif c.kind == "decimal":
        n = f"({r})::numeric"
        checks.append(f"scale({n}) > {c.scale} OR abs({n}) >= 1e{_DIGITS}")
        if c.minimum == "positive":
            checks.append(f"{n} <= 0")
        elif c.minimum == "zero":
            checks.append(f"{n} < 0")
    elif c.kind == "date":
        checks.append(f"length({v}) <> 10 OR substr({v}, 5, 1) <> '-' OR ({r})::date IS NULL")
    elif c.kind == "bool":
        checks.append(f"lower({v}) NOT IN ({_words(TRUE_WORDS + FALSE_WORDS)})")
    elif c.kind == "choice":
        checks.append(f"lower({v}) NOT IN ({_words(c.choices)})")
    return " OR ".join(checks)  # NULL (an empty optional value) is not a problem: WHERE skips it


def _screen_query(file: CsvFile, table: str, present: Sequence[str], limit: int) -> str:
    """The lines of a staged file with a bad value (may raise: see `_screen_sql`)."""
    conditions = [f"({_screen_sql(c, _quote(c.name))})" for c in file.columns if c.name in present]
    if not conditions:
        return ""
    return (
        f"SELECT line FROM {_quote(table)} WHERE {' OR '.join(conditions)} "
        f"ORDER BY line LIMIT {limit}"
    )


def _row_checks_sql(
    file: CsvFile, table: str, present: Sequence[str], lines: Sequence[int] | None = None
) -> str:
    """(line, column, message) for every bad value: slow (every check of every column is a
    pattern), never raises; run on the lines the screen found, or when the screen raised."""
    cases: list[str] = []
    for c in file.columns:
        if c.name not in present:
            continue
        raw = f"s.{_quote(c.name)}"
        trimmed = f"NULLIF(btrim({raw}), '')"
        for condition, message in _column_problems(c, trimmed, raw):
            text_message = f"{c.name} {message}".replace("'", "''")
            cases.append(f"(CASE WHEN {condition} THEN '{c.name}' END, '{text_message}')")
    if not cases:
        return ""
    only = "" if lines is None else f" AND s.line IN ({', '.join(str(int(x)) for x in lines)})"
    return (
        f"SELECT s.line, p.col, p.message FROM {_quote(table)} s, "
        f"LATERAL (VALUES {', '.join(cases)}) AS p(col, message) WHERE p.col IS NOT NULL{only}"
    )


def _unique_sql(file: CsvFile, table: str) -> str:
    """(line, column, message) for every row repeating an earlier row's unique columns."""
    keys = ", ".join(_quote(k) for k in file.unique)
    return (
        f"SELECT line, '{file.unique[-1]}' AS col, "
        f"'the same {', '.join(file.unique)} as line ' || first AS message FROM ("
        f"SELECT line, min(line) OVER (PARTITION BY {keys}) AS first FROM {_quote(table)}"
        ") d WHERE line <> first"
    )


def _duplicates_sql(file: CsvFile, table: str) -> str:
    """Whether any two rows share the file's unique columns (a hash aggregate: fast)."""
    keys = ", ".join(_quote(k) for k in file.unique)
    return f"SELECT 1 FROM {_quote(table)} GROUP BY {keys} HAVING count(*) > 1 LIMIT 1"


async def row_problems(
    session: AsyncSession,
    staged: StagedLoad,
    limit: int,
    file_of: Callable[[str], CsvFile] = BY_NAME.__getitem__,
) -> list[LoadProblem]:
    """Every staged file's rows checked against its columns, and its unique columns. A cheap
    screen runs over every row; the detailed checks only where it found something (or over
    the whole file when a value broke the screen's casts). `file_of`: a staged file's
    columns (default: the book file set's)."""
    problems: list[LoadProblem] = []
    for name, table in staged.tables.items():
        file = file_of(name)
        present = staged.columns[name]
        screen = _screen_query(file, table, present, limit)
        if screen:
            lines: list[int] | None
            try:
                async with session.begin_nested():
                    lines = [r[0] for r in await session.execute(text(screen))]
            except DBAPIError:
                lines = None  # a value the casts could not read: check every line in detail
            if lines is None or lines:
                detail = _row_checks_sql(file, table, present, lines)
                rows = await session.execute(text(f"{detail} ORDER BY 1 LIMIT {limit}"))
                problems += [LoadProblem(name, line, col, message) for line, col, message in rows]
        keyed = file.unique and all(k in present for k in file.unique)
        if keyed and (await session.execute(text(_duplicates_sql(file, table)))).first():
            unique = f"{_unique_sql(file, table)} ORDER BY 1 LIMIT {limit}"
            rows = await session.execute(text(unique))
            problems += [LoadProblem(name, line, col, message) for line, col, message in rows]
        if len(problems) >= limit:
            return problems[:limit]
    return problems


# --- staging ----------------------------------------------------------------------------------


def stage_table(tenant: str, load_id: str, file: CsvFile, loads: str = "book_loads") -> str:
    """The staging table of a file of a load (`loads`: the table of its kind of load)."""
    key = f"{tenant}/{load_id}" if loads == "book_loads" else f"{loads}/{tenant}/{load_id}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{STAGE_PREFIX}{digest}_{file.name.removesuffix('.csv')}"


def typed_table(stage: str) -> str:
    """The table of a staging table's rows typed."""
    return f"{stage}_typed"


async def type_files(
    session: AsyncSession, spec: BookLoadSpec, staged: StagedLoad, names: Sequence[str]
) -> dict[str, str]:
    """The rows of the staged files `names` typed once (sound rows only: run after the row
    checks), each in a table of the file's line and typed columns; returns file name ->
    typed table."""
    typed: dict[str, str] = {}
    for name in names:
        table = staged.table(name)
        file = spec.file(name)
        target = typed_table(table)
        values = ", ".join(
            f"{value_sql(file, column)} AS {_quote(column)}" for column in staged.columns[name]
        )
        await session.execute(text(f"DROP TABLE IF EXISTS {_quote(target)}"))
        await session.execute(
            text(
                f"CREATE UNLOGGED TABLE {_quote(target)} AS SELECT line, {values}"
                f" FROM {_quote(table)}"
            )
        )
        await session.execute(text(f"ANALYZE {_quote(target)}"))
        typed[name] = target
    return typed


class _Upload:
    """The request body as bytes: the header line first, then everything after it."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    async def header(self, file: CsvFile) -> list[str]:
        buffer = b""
        async for chunk in self._chunks:
            buffer += chunk
            if b"\n" in buffer or len(buffer) > 65536:
                break
        line, _, self._rest = buffer.partition(b"\n")
        try:
            decoded = line.decode("utf-8-sig").rstrip("\r")
        except UnicodeDecodeError:
            raise InvalidInput(
                f"{file.name}: the header is not UTF-8",
                [FieldProblem(f"{file.name}:1", "not UTF-8")],
            ) from None
        if not decoded.strip():
            raise InvalidInput(
                f"{file.name} is empty: its first line must name the columns",
                [FieldProblem(f"{file.name}:1", "no header")],
            )
        return [c.strip().lower() for c in next(csv.reader(io.StringIO(decoded)))]

    async def body(self) -> AsyncIterator[bytes]:
        if self._rest:
            yield self._rest
        async for chunk in self._chunks:
            yield chunk


def _check_header(file: CsvFile, header: list[str]) -> None:
    known = {c.name for c in file.columns}
    problems: list[FieldProblem] = []
    for i, name in enumerate(header):
        if name not in known:
            expected = ", ".join(c.name for c in file.columns)
            problems.append(
                FieldProblem(
                    f"{file.name}:1",
                    f"column {i + 1} {name!r} is not a column of {file.name} (columns: {expected})",
                )
            )
        elif header.index(name) != i:
            problems.append(FieldProblem(f"{file.name}:1", f"column {name!r} appears twice"))
    for c in file.columns:
        if c.required and c.name not in header:
            problems.append(
                FieldProblem(f"{file.name}:1", f"required column {c.name!r} is missing")
            )
    if problems:
        raise InvalidInput(f"{file.name}: the header is not right", problems)


_COPY_LINE = re.compile(r"line (\d+)")


async def stage_file(
    session: AsyncSession,
    spec: BookLoadSpec,
    tenant: str,
    load_id: str,
    name: str,
    body: AsyncIterator[bytes],
) -> dict[str, Any]:
    """COPY one uploaded CSV into a fresh staging table; returns its rows and columns."""
    file = spec.file(name)
    load = await _lock_load(session, spec, tenant, load_id, create=True)
    if load["status"] == "applied":
        raise Conflict(f"{spec.noun} {load_id} was applied already; start a new load")
    upload = _Upload(body)
    header = await upload.header(file)
    _check_header(file, header)
    table = stage_table(tenant, load_id, file, spec.table.name)
    columns = ", ".join(f"{_quote(c)} text" for c in header)
    await session.execute(text(f"DROP TABLE IF EXISTS {_quote(table)}"))
    await session.execute(text(f"DROP TABLE IF EXISTS {_quote(typed_table(table))}"))
    await session.execute(
        text(
            f"CREATE UNLOGGED TABLE {_quote(table)} "
            f"(line bigint GENERATED ALWAYS AS IDENTITY (START WITH 2) PRIMARY KEY, {columns})"
        )
    )
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    try:
        status = await raw.driver_connection.copy_to_table(  # type: ignore[union-attr]
            table, source=upload.body(), columns=header, format="csv"
        )
    except Exception as exc:  # asyncpg's COPY errors name the line in their context
        detail = getattr(exc, "context", None) or ""
        match = _COPY_LINE.search(str(detail))
        line = int(match.group(1)) + 1 if match else 0
        message = getattr(exc, "message", None) or str(exc)
        where = f"{file.name}:{line}" if line else file.name
        if type(exc).__module__.startswith("asyncpg.exceptions") and _is_data_error(exc):
            raise InvalidInput(f"{where}: {message}", [FieldProblem(where, message)]) from None
        raise
    rows = int(str(status).split()[-1]) if status else 0
    # The planner knows nothing of a fresh table: without statistics it guesses a few
    # hundred rows and picks nested loops over millions.
    await session.execute(text(f"ANALYZE {_quote(table)}"))
    files = dict(load["files"])
    files[name] = {"table": table, "rows": rows, "columns": header}
    await _update(session, spec, tenant, load_id, files=files, status="staged")
    return {"load_id": load_id, "file": name, "rows": rows, "columns": header}


def _is_data_error(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", "") or ""
    return sqlstate.startswith("22") or sqlstate in {"42601"}


async def _lock_load(
    session: AsyncSession, spec: BookLoadSpec, tenant: str, load_id: str, create: bool = False
) -> dict[str, Any]:
    # Checks and inserts over staged files are a few big statements: compiling them to
    # machine code (JIT) costs seconds and saves nothing. And no nested loops: the staged
    # columns are text expressions whose selectivity the planner cannot estimate (it guesses
    # 0.5% of the rows), so it would nest loops over millions of rows (a lots.csv check ran
    # for minutes at 10,000 accounts, 2.4 s with hash joins).
    await session.execute(text("SET LOCAL jit = off"))
    await session.execute(text("SET LOCAL enable_nestloop = off"))
    t = spec.table
    if create:
        await session.execute(
            insert(t)
            .values(
                tenant=tenant,
                load_id=load_id,
                status="staged",
                files={},
                created_at=datetime.now(UTC),
            )
            .on_conflict_do_nothing()
        )
    row = (
        (await session.execute(select(t).where(*_is(t, tenant, load_id)).with_for_update()))
        .mappings()
        .first()
    )
    if row is None:
        raise NotFound(f"no {spec.noun} {load_id}")
    return dict(row)


def _staged(load: dict[str, Any], options: LoadOptions) -> StagedLoad:
    files = load["files"]
    return StagedLoad(
        load_id=load["load_id"],
        as_of=options.as_of,
        tenant=options.tenant,
        tables={n: f["table"] for n, f in files.items()},
        rows={n: int(f["rows"]) for n, f in files.items()},
        columns={n: tuple(f["columns"]) for n, f in files.items()},
        files_checked=load["status"] == "valid",
        typed={n: f["typed"] for n, f in files.items() if f.get("typed")},
    )


async def find_problems(
    session: AsyncSession, spec: BookLoadSpec, staged: StagedLoad, status: str
) -> list[LoadProblem]:
    """Missing files, then bad rows (unless they passed since they were staged: `checked`),
    then (only when the rows are sound) the service's own cross-file checks, which also look
    at what the service holds and so run every time; of a `valid` load (`files_checked`) the
    service skips its checks of the files alone. A load that passes is marked `valid`."""
    missing = [
        LoadProblem(name, 0, "", "required file was not uploaded")
        for name in spec.required_files()
        if not staged.has(name)
    ]
    if missing:
        return missing
    if status == "staged":
        problems = await row_problems(session, staged, MAX_PROBLEMS, spec.file)
        if problems:
            return problems
        await _set_status(session, spec, staged, "checked")
    if spec.typed and set(staged.typed) != set(staged.tables):
        staged = await _with_typed_files(session, spec, staged)
    problems = (await spec.checks(session, staged))[:MAX_PROBLEMS]
    if not problems and status != "valid":
        await _set_status(session, spec, staged, "valid")
    return problems


async def _with_typed_files(
    session: AsyncSession, spec: BookLoadSpec, staged: StagedLoad
) -> StagedLoad:
    """`staged` with every file typed (those staged since typed now)."""
    missing = [n for n in staged.tables if n not in staged.typed]
    typed = {**staged.typed, **await type_files(session, spec, staged, missing)}
    load = await _lock_load(session, spec, staged.tenant, staged.load_id)
    files = {n: {**f, "typed": typed.get(n)} for n, f in load["files"].items()}
    await _update(session, spec, staged.tenant, staged.load_id, files=files)
    return replace(staged, typed=typed)


def _is(table: Table, tenant: str, load_id: str) -> tuple[Any, Any]:
    """The where clause of one tenant's load."""
    return (table.c.tenant == tenant, table.c.load_id == load_id)


async def _update(
    session: AsyncSession, spec: BookLoadSpec, tenant: str, load_id: str, **values: Any
) -> None:
    await session.execute(
        spec.table.update().where(*_is(spec.table, tenant, load_id)).values(**values)
    )


async def _set_status(
    session: AsyncSession, spec: BookLoadSpec, staged: StagedLoad, status: str
) -> None:
    await _update(session, spec, staged.tenant, staged.load_id, status=status)


async def validate(
    session: AsyncSession, spec: BookLoadSpec, load_id: str, options: LoadOptions
) -> dict[str, Any]:
    load = await _lock_load(session, spec, options.tenant, load_id)
    if load["status"] == "applied":
        return {"load_id": load_id, "status": "applied", "valid": True, "problems": []}
    problems = await find_problems(session, spec, _staged(load, options), load["status"])
    return {
        "load_id": load_id,
        "status": load["status"],
        "valid": not problems,
        "problems": [p.__dict__ for p in problems],
        "truncated": len(problems) >= MAX_PROBLEMS,
    }


async def apply(
    uow: UnitOfWork, spec: BookLoadSpec, load_id: str, options: LoadOptions
) -> dict[str, Any]:
    """Everything or nothing: the service's writes and events, then the staging dropped."""
    session = uow.session
    load = await _lock_load(session, spec, options.tenant, load_id)
    if load["status"] == "applied":
        return {"load_id": load_id, "status": "applied", "repeated": True, **load["result"]}
    staged = _staged(load, options)
    problems = await find_problems(session, spec, staged, load["status"])
    if spec.typed:  # typed by the checks, if not before
        staged = _staged(await _lock_load(session, spec, options.tenant, load_id), options)
    if problems:
        raise InvalidInput(
            f"{spec.noun} {load_id} has {len(problems)}"
            f"{'+' if len(problems) >= MAX_PROBLEMS else ''} problem(s); nothing was applied",
            [p.as_field() for p in problems],
        )
    result = await spec.apply(uow, staged)
    for table in staged.tables.values():
        await session.execute(text(f"DROP TABLE IF EXISTS {_quote(table)}"))
        await session.execute(text(f"DROP TABLE IF EXISTS {_quote(typed_table(table))}"))
    await _update(
        session,
        spec,
        options.tenant,
        load_id,
        status="applied",
        result=result,
        applied_at=datetime.now(UTC),
    )
    return {"load_id": load_id, "status": "applied", "repeated": False, **result}


async def describe(
    session: AsyncSession, spec: BookLoadSpec, tenant: str, load_id: str
) -> dict[str, Any]:
    t = spec.table
    row = (await session.execute(select(t).where(*_is(t, tenant, load_id)))).mappings().first()
    if row is None:
        raise NotFound(f"no {spec.noun} {load_id}")
    return {
        "load_id": load_id,
        "status": row["status"],
        "files": {n: {"rows": f["rows"], "columns": f["columns"]} for n, f in row["files"].items()},
        "result": row["result"],
        "created_at": row["created_at"],
        "applied_at": row["applied_at"],
    }


async def discard(session: AsyncSession, spec: BookLoadSpec, tenant: str, load_id: str) -> None:
    load = await _lock_load(session, spec, tenant, load_id)
    if load["status"] == "applied":
        raise Conflict(f"{spec.noun} {load_id} was applied; there is nothing staged to discard")
    for f in load["files"].values():
        await session.execute(text(f"DROP TABLE IF EXISTS {_quote(f['table'])}"))
        await session.execute(text(f"DROP TABLE IF EXISTS {_quote(typed_table(f['table']))}"))
    await session.execute(spec.table.delete().where(*_is(spec.table, tenant, load_id)))


# --- routes -----------------------------------------------------------------------------------

LoadId = Annotated[str, Path(pattern=LOAD_ID, description="the caller's id for this load")]
FileName = Annotated[str, Path(description="a file of the book file set, e.g. accounts.csv")]


def book_load_router(spec: BookLoadSpec, runtime_of: Callable[[Request], Any]) -> APIRouter:
    """`{spec.route}/{load_id}` routes for a service's BookLoadSpec (see the module doc)."""
    router = APIRouter(prefix=spec.route, tags=[spec.noun + "s"])
    may_load = [Depends(requires(spec.permission))]

    @router.put(
        "/{load_id}/files/{name}",
        status_code=201,
        summary=f"Stage one CSV file of a {spec.noun} (streamed with COPY)",
        dependencies=may_load,
        openapi_extra={
            "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}},
        },
    )
    async def put_file(
        load_id: LoadId,
        request: Request,
        name: FileName,
        caller: CanRead,
    ) -> dict[str, Any]:
        async with runtime_of(request).uow() as uow:
            return await stage_file(
                uow.session, spec, caller.tenant, load_id, name, request.stream()
            )

    @router.post(
        "/{load_id}/validate",
        summary="Check every staged row; nothing is written",
        dependencies=may_load,
    )
    async def post_validate(
        load_id: LoadId,
        request: Request,
        body: Annotated[LoadRequest, Body()],
        caller: CanRead,
    ) -> dict[str, Any]:
        options = LoadOptions(as_of=body.as_of, tenant=caller.tenant)
        async with runtime_of(request).db.sessions() as session, session.begin():
            return await validate(session, spec, load_id, options)

    @router.post(
        "/{load_id}/apply",
        summary="Apply the staged files, all or nothing",
        dependencies=may_load,
    )
    async def post_apply(
        load_id: LoadId,
        request: Request,
        body: Annotated[LoadRequest, Body()],
        caller: CanRead,
    ) -> dict[str, Any]:
        options = LoadOptions(as_of=body.as_of, tenant=caller.tenant)
        async with runtime_of(request).uow() as uow:
            return await apply(uow, spec, load_id, options)

    @router.get("/{load_id}", summary="A load's staged files, status and result")
    async def get_load(load_id: LoadId, request: Request, caller: CanRead) -> dict[str, Any]:
        async with runtime_of(request).db.sessions() as session:
            return await describe(session, spec, caller.tenant, load_id)

    @router.delete(
        "/{load_id}",
        status_code=204,
        summary="Discard what a load staged",
        dependencies=may_load,
    )
    async def delete_load(load_id: LoadId, request: Request, caller: CanRead) -> None:
        async with runtime_of(request).uow() as uow:
            await discard(uow.session, spec, caller.tenant, load_id)

    return router


__all__ = [
    "BookLoadSpec",
    "LoadOptions",
    "LoadProblem",
    "StagedLoad",
    "book_load_router",
    "create_book_loads",
    "define_book_loads",
    "value_sql",
]
