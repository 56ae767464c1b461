"""Set-based writes (``ballast_common.bulk``) against real PostgreSQL: every column type the
services write, conflicts, RETURNING, and the session's transaction."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ballast_common.bulk import insert_columns, insert_rows
from ballast_common.db import Database
from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

pytestmark = pytest.mark.integration

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("thing_id", UUID(as_uuid=True), primary_key=True),
    Column("name", String(40), nullable=False),
    Column("amount", Numeric(20, 6), nullable=False),
    Column("payload", JSONB, nullable=True),
    Column("blob", LargeBinary, nullable=True),
    Column("at", DateTime(timezone=True), nullable=True),
)


@pytest.fixture
async def db(database_url):
    schema = f"bulk_{uuid.uuid4().hex[:6]}"
    database = Database(database_url, schema)
    async with database.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.execute(text(f'SET search_path TO "{schema}"'))
        await conn.run_sync(metadata.create_all)
    yield database
    async with database.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await database.dispose()


async def test_every_type_round_trips_exactly(db):
    ids = [uuid.uuid4() for _ in range(3)]
    at = datetime(2026, 12, 6, 10, 30, tzinfo=UTC)
    async with db.sessions() as session:
        await insert_columns(
            session,
            things,
            {
                "thing_id": ids,
                "name": ["a", "b", "c"],
                "amount": [Decimal("1.000001"), Decimal("-2.5"), Decimal("123456789.123456")],
                "payload": [json.dumps({"x": [1, "2"]}), None, "[]"],
                "blob": [b"\x00\x01", None, b""],
                "at": [at, None, at],
            },
        )
        await session.commit()
    async with db.sessions() as session:
        rows = (
            await session.execute(
                text("SELECT thing_id, name, amount, payload, blob, at FROM things ORDER BY name")
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (ids[0], "a", Decimal("1.000001"), {"x": [1, "2"]}, b"\x00\x01", at),
        (ids[1], "b", Decimal("-2.5"), None, None, None),
        (ids[2], "c", Decimal("123456789.123456"), [], b"", at),
    ]


async def test_conflicts_and_returning_name_only_new_rows(db):
    first, second = uuid.uuid4(), uuid.uuid4()
    async with db.sessions() as session:
        await insert_rows(session, things, [{"thing_id": first, "name": "x", "amount": 1}])
        inserted = await insert_rows(
            session,
            things,
            [
                {"thing_id": first, "name": "again", "amount": 2},
                {"thing_id": second, "name": "y", "amount": 3},
            ],
            on_conflict="DO NOTHING",
            returning="thing_id",
        )
        await session.commit()
    assert {row[0] for row in inserted} == {second}
    assert second in {row[0] for row in inserted}  # driver uuids compare as uuid.UUID


async def test_the_insert_is_part_of_the_session_transaction(db):
    async with db.sessions() as session:
        await insert_rows(session, things, [{"thing_id": uuid.uuid4(), "name": "z", "amount": 1}])
        await session.rollback()
    async with db.sessions() as session:
        count = (await session.execute(text("SELECT count(*) FROM things"))).scalar_one()
    assert count == 0


async def test_columns_of_different_lengths_are_refused(db):
    async with db.sessions() as session:
        with pytest.raises(ValueError, match="different lengths"):
            await insert_columns(session, things, {"thing_id": [uuid.uuid4()], "name": []})


async def test_nothing_to_insert_is_no_statement(db):
    async with db.sessions() as session:
        assert await insert_rows(session, things, []) == []
        assert await insert_columns(session, things, {"thing_id": [], "name": []}) == []
