"""Fixtures for reporting-svc's tests: its schema migrated in the session's database, and
an HTTP client for the app wired to that database (no lifespan, so no Kafka). The event
builders (reporting_events) and the sample book (sample_book) beside this file are importable
by the tests."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database
from reporting_svc.main import spec

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as c:
        yield c
