"""Idempotency keys on real PostgreSQL, through a small app that counts how often its
handlers really ran."""

import asyncio
import uuid

import httpx
import pytest
from ballast_common import idempotency
from ballast_common.db import Database
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

pytestmark = pytest.mark.integration


class Calls:
    def __init__(self) -> None:
        self.created = 0
        self.failures_left = 1
        self.release = asyncio.Event()


@pytest.fixture
async def app_and_calls(database_url):
    schema = f"idem_{uuid.uuid4().hex[:8]}"
    db = Database(database_url, schema, pool_size=4)
    async with db.engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await conn.execute(text(f'SET search_path TO "{schema}"'))
        await conn.run_sync(idempotency.idempotency_keys.create)
    calls = Calls()
    app = FastAPI()
    idempotency.install(app, lambda request: db.sessions())

    @app.post("/things")
    async def create_thing(body: dict) -> JSONResponse:
        calls.created += 1
        return JSONResponse({"id": calls.created, "name": body["name"]}, status_code=201)

    @app.put("/flaky/{status}")
    async def flaky(status: int) -> dict[str, str]:
        if calls.failures_left:
            calls.failures_left -= 1
            return JSONResponse({"detail": "not now"}, status_code=status)
        return {"ok": "yes"}

    @app.post("/slow")
    async def slow() -> dict[str, str]:
        await calls.release.wait()
        return {"done": "yes"}

    yield app, calls
    async with db.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await db.dispose()


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_retry_gets_the_first_response_and_runs_nothing(app_and_calls):
    app, calls = app_and_calls
    async with client(app) as c:
        headers = {"Idempotency-Key": "k-1"}
        first = await c.post("/things", json={"name": "a"}, headers=headers)
        again = await c.post("/things", json={"name": "a"}, headers=headers)
        other = await c.post("/things", json={"name": "a"}, headers={"Idempotency-Key": "k-2"})
        plain = await c.post("/things", json={"name": "a"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() == {"id": 1, "name": "a"}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.json()["id"] == 2 and plain.json()["id"] == 3
    assert calls.created == 3


async def test_the_same_key_for_a_different_request_is_refused(app_and_calls):
    app, calls = app_and_calls
    async with client(app) as c:
        headers = {"Idempotency-Key": "k-1"}
        await c.post("/things", json={"name": "a"}, headers=headers)
        reused = await c.post("/things", json={"name": "b"}, headers=headers)
    assert reused.status_code == 422
    assert reused.headers["content-type"] == "application/problem+json"
    problem = reused.json()
    assert "different request (POST /things)" in problem["detail"]
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert calls.created == 1


@pytest.mark.parametrize("status", [503, 422])
async def test_an_error_is_not_remembered(app_and_calls, status):
    app, _ = app_and_calls
    async with client(app) as c:
        headers = {"Idempotency-Key": f"flaky-{status}"}
        failed = await c.put(f"/flaky/{status}", headers=headers)
        retried = await c.put(f"/flaky/{status}", headers=headers)
        replayed = await c.put(f"/flaky/{status}", headers=headers)
    assert failed.status_code == status
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"


async def test_a_retry_while_the_first_request_runs_is_409(app_and_calls):
    app, calls = app_and_calls
    async with client(app) as c:
        headers = {"Idempotency-Key": "slow-1"}
        first = asyncio.create_task(c.post("/slow", headers=headers))
        await asyncio.sleep(0.3)
        concurrent = await c.post("/slow", headers=headers)
        calls.release.set()
        done = await first
    assert concurrent.status_code == 409 and "still being processed" in concurrent.json()["detail"]
    assert done.status_code == 200


async def test_a_bad_key_is_400_naming_the_header(app_and_calls):
    app, calls = app_and_calls
    async with client(app) as c:
        response = await c.post(
            "/things", json={"name": "a"}, headers={"Idempotency-Key": "x" * 300}
        )
    assert (
        response.status_code == 400 and response.json()["errors"][0]["field"] == "Idempotency-Key"
    )
    assert calls.created == 0
