"""Test support shared by every package's tests (real Postgres, real Kafka, no mocks)."""

from __future__ import annotations

from ballast_common.app import ServiceSpec
from ballast_common.db import Database
from ballast_common.migrations import upgrade_connection
from ballast_common.uow import UnitOfWork


async def migrated_database(spec: ServiceSpec, url: str) -> Database:
    """A Database for `spec`'s schema in `url`, migrated to head."""
    db = Database(url, spec.schema, pool_size=2)
    async with db.engine.begin() as conn:
        await conn.run_sync(upgrade_connection, spec.schema, spec.migrations_dir, spec.metadata)
    return db


def unit_of_work(db: Database, source: str) -> UnitOfWork:
    return UnitOfWork(db.sessions(), source)
