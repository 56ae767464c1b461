"""The Alembic environment shared by every service (see ballast_common.migrations)."""

import asyncio

from alembic import context
from sqlalchemy import Connection, MetaData, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from ballast_common import idempotency, inbox, outbox  # noqa: F401  (their tables join common_metadata)
from ballast_common.common_tables import common_metadata
from ballast_common.db import async_url

config = context.config
schema: str = config.attributes["schema"]
service_metadata: MetaData = config.attributes["target_metadata"]


def include_object(obj, name, type_, reflected, compare_to):
    # Autogenerate compares only this service's tables (its schema is the search_path);
    # book loads' staging tables (stage_*) come and go with the loads.
    if type_ == "table" and reflected and compare_to is None:
        return not (name == "alembic_version" or name.startswith("stage_"))
    return True


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=[service_metadata, common_metadata],
        version_table_schema=schema,
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        await conn.run_sync(run_on)
    await engine.dispose()


given = config.attributes.get("connection")
if given is not None:
    run_on(given)
else:
    asyncio.run(run_with_own_engine(config.get_main_option("sqlalchemy.url") or ""))
