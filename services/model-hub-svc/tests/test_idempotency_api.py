"""model-hub-svc's REST API on real PostgreSQL (the app without its lifespan: no Kafka; what
would be published is read from the outbox): a retried request with an idempotency key runs
once. The rules themselves are tested in test_repository_port.py."""

import uuid
from decimal import Decimal

import pytest
from ballast_common.testing import api_client, migrated_database, outbox_events, unit_of_work
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import SecurityIn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await service.upsert_securities(
            uow,
            PostgresModelHubRepository(uow.session),
            [
                SecurityIn(symbol=s, name=s, asset_class="US Equity", sector="X", price=Decimal(p))
                for s, p in (("SPY", "600"), ("VOO", "551"))
            ],
            tenant="demo",
            actor="pm",
        )
    yield database
    await database.dispose()


async def test_a_retried_request_with_an_idempotency_key_runs_once(db):
    set_id = f"set-{uuid.uuid4().hex[:8]}"
    body = {"name": "Trackers", "members": ["SPY", "VOO"]}
    headers = {"Idempotency-Key": f"put-{set_id}"}
    async with api_client(spec, db) as api:
        first = await api.put(f"/equivalence-sets/{set_id}", json=body, headers=headers)
        again = await api.put(f"/equivalence-sets/{set_id}", json=body, headers=headers)
        other = await api.put(
            f"/equivalence-sets/{set_id}", json={**body, "name": "Other"}, headers=headers
        )
        await api.delete(f"/equivalence-sets/{set_id}")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert len(await outbox_events(db, "equivalence-set-changed", set_id)) == 2  # put, delete
