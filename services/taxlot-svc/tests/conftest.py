"""Fixtures of taxlot-svc's integration tests: its schema migrated in the session database."""

from collections.abc import AsyncIterator

import httpx
import pytest
from ballast_common.app import Runtime, create_app
from ballast_common.db import Database
from ballast_common.testing import bearer, migrated_database, with_test_issuer
from taxlot_svc.main import spec
from taxlot_svc.settings import Settings


@pytest.fixture(scope="session")
async def taxlot_db(database_url: str) -> AsyncIterator[Database]:
    db = await migrated_database(spec, database_url)
    yield db
    await db.dispose()


@pytest.fixture(scope="module")
async def client(database_url: str, taxlot_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The REST API over ASGI, called by an admin of tenant "acme" (the runtime is built but
    its Kafka parts are not started: requests only use the database)."""
    settings = with_test_issuer(Settings(database_url=database_url, topic_prefix="taxlotapitest."))
    app = create_app(spec, settings)
    runtime = Runtime(spec, settings)
    app.state.runtime = runtime
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://taxlot", headers=bearer("acme")
    ) as http:
        yield http
    await runtime.publisher.stop()  # never started; closes the client it created
    await runtime.db.dispose()
