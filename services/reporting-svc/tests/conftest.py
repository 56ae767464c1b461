"""Fixtures for reporting-svc's tests: its schema migrated in the session's database, and
an HTTP client for the app wired to that database (no lifespan, so no Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from ballast_common.db import Database
from ballast_common.testing import migrated_database
from reporting_svc.main import app, spec
from reporting_svc.settings import Settings


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def client(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app.state.runtime = SimpleNamespace(db=db, settings=Settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://reporting") as c:
        yield c
