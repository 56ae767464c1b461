"""Fixtures of taxlot-svc's integration tests: its schema migrated in the session database."""

from collections.abc import AsyncIterator

import pytest
from ballast_common.db import Database
from ballast_common.testing import migrated_database
from taxlot_svc.main import spec


@pytest.fixture(scope="session")
async def taxlot_db(database_url: str) -> AsyncIterator[Database]:
    db = await migrated_database(spec, database_url)
    yield db
    await db.dispose()
