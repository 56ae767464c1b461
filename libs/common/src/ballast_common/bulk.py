"""Set-based writes of many rows in ONE statement, for repositories (SQL lives here and in
them). Each column travels as one array parameter and ``unnest`` turns the arrays back into
rows: one round trip, one prepared statement kept by the driver, and none of the ORM's
per-row work (building a multi-row ``VALUES`` compiles a new statement on every call).

Values go to the driver as they are: ``Decimal`` for numeric, ``uuid.UUID`` or its text for
uuid, aware ``datetime`` for timestamps, and JSON *text* for json/jsonb columns (the
session's driver connection encodes json from text).

For rows of wide values (tens of kilobytes of bytea or JSON each) ``unnest`` copies the arrays
again and is about twice as slow as one prepared statement executed per row on
:func:`driver_connection` (``executemany``): the outbox writes that way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

_DIALECT = postgresql.dialect()


async def insert_columns(
    session: AsyncSession,
    table: Table,
    columns: Mapping[str, Sequence[Any]],
    *,
    on_conflict: str = "",
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """INSERT the rows given column by column (every sequence as long as the others) into
    ``table``, in the session's transaction. ``on_conflict``: SQL after ``ON CONFLICT``
    (e.g. ``"DO NOTHING"``); ``returning``: a column list, whose rows are returned."""
    names = tuple(columns)
    if not names:
        return []
    lengths = {len(values) for values in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"insert into {table.name}: columns of different lengths {lengths}")
    if lengths == {0}:
        return []
    sql = _insert_sql(table, names, on_conflict, returning)
    connection = await driver_connection(session)
    arrays = [list(columns[n]) for n in names]
    if returning:
        return [tuple(r) for r in await connection.fetch(sql, *arrays)]
    await connection.execute(sql, *arrays)
    return []


async def insert_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    on_conflict: str = "",
    returning: str = "",
) -> list[tuple[Any, ...]]:
    """``insert_columns`` for rows as mappings (all with the keys of the first)."""
    if not rows:
        return []
    names = list(rows[0])
    return await insert_columns(
        session,
        table,
        {n: [r[n] for r in rows] for n in names},
        on_conflict=on_conflict,
        returning=returning,
    )


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session, inside the session's transaction."""
    connection = await session.connection()
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if not driver.is_in_transaction():
        # the driver adapter opens the transaction lazily, at the first statement it runs
        await connection.execute(text("SELECT 1"))
    return driver


@lru_cache(maxsize=256)
def _insert_sql(table: Table, names: tuple[str, ...], on_conflict: str, returning: str) -> str:
    arrays = ", ".join(
        f"${i}::{table.c[n].type.compile(dialect=_DIALECT)}[]" for i, n in enumerate(names, 1)
    )
    quoted = ", ".join(f'"{n}"' for n in names)
    sql = f'INSERT INTO "{table.name}" ({quoted}) SELECT * FROM unnest({arrays})'
    if on_conflict:
        sql += f" ON CONFLICT {on_conflict}"
    if returning:
        sql += f" RETURNING {returning}"
    return sql
