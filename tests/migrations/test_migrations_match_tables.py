"""Each service's migrations, run on an empty schema, give exactly the tables its code
declares (outbox and inbox included): a table changed without a revision fails here."""

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from ballast_common.book_loads import STAGE_PREFIX
from ballast_common.common_tables import common_metadata
from ballast_common.migrations.runner import SERVICE_PACKAGES
from ballast_common.testing import migrated_database

pytestmark = pytest.mark.integration

SERVICES = SERVICE_PACKAGES


@pytest.mark.parametrize("package", SERVICES)
async def test_migrations_match_the_tables(package, database_url):
    spec = importlib.import_module(f"{package}.main").spec
    db = await migrated_database(spec, database_url)
    try:
        async with db.engine.connect() as conn:

            def diff(sync_conn):
                context = MigrationContext.configure(
                    sync_conn, opts={"compare_type": True, "include_schemas": False}
                )
                return compare_metadata(context, [spec.metadata, common_metadata])

            differences = await conn.run_sync(diff)
    finally:
        await db.dispose()
    # alembic_version is Alembic's; stage_* are book loads' staging tables, which come and
    # go with the loads (other tests sharing the database leave theirs)
    changes = [
        d
        for d in differences
        if not (
            d[0] == "remove_table"
            and (d[1].name == "alembic_version" or d[1].name.startswith(STAGE_PREFIX))
        )
    ]
    assert changes == [], f"{package}: tables and migrations differ: {changes}"
