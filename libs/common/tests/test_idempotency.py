"""Idempotency keys through the real app factory on real PostgreSQL: what a request did is
read back from the database (the probe service's `notes`), not counted in memory. A request
killed with SIGKILL mid-way (a real uvicorn process) leaves its key free for the retry."""

import asyncio
import os
import signal
import socket
import sys
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from ballast_common import idempotency
from ballast_common.app import UoW, create_app
from ballast_common.auth import Permission, requires
from ballast_common.db import Database
from ballast_common.settings import ServiceSettings
from ballast_common.testing import (
    api_client,
    bearer,
    issuer_for_tests,
    migrated_database,
    outbox_events,
)
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from probe_svc import Note, make_spec
from pydantic import BaseModel
from sqlalchemy import func, select, text, update

pytestmark = pytest.mark.integration

router = APIRouter(dependencies=[Depends(requires(Permission.READ))])  # any caller
RELEASE = asyncio.Event()  # /slow waits for it
FAILURES_LEFT = {"count": 0}


class NoteIn(BaseModel):
    account_id: str
    text: str


@router.post("/notes", status_code=201)
async def add_note(body: NoteIn, uow: UoW) -> dict[str, object]:
    note = Note(account_id=body.account_id, text=body.text)
    uow.session.add(note)
    await uow.session.flush()
    return {"id": note.id, "text": note.text}


@router.put("/flaky/{account_id}")
async def flaky(account_id: str, uow: UoW) -> dict[str, str]:
    uow.session.add(Note(account_id=account_id, text="flaky"))
    await uow.session.flush()
    if FAILURES_LEFT["count"]:
        FAILURES_LEFT["count"] -= 1
        raise RuntimeError("failed after writing: the write must not stay")
    return {"ok": "yes"}


@router.post("/slow/{account_id}")
async def slow(account_id: str, uow: UoW, request: Request) -> dict[str, str]:
    uow.session.add(Note(account_id=account_id, text="slow"))
    await uow.session.flush()
    marker = os.environ.get("PROBE_STARTED_FILE")
    if marker:  # the killed process says it got here, then hangs until killed
        await asyncio.to_thread(Path(marker).write_text, "started")
        await asyncio.Event().wait()
    await RELEASE.wait()
    return {"done": "yes"}


@router.post("/answer-with/{status}")
async def answer_with(status: int, uow: UoW) -> JSONResponse:
    uow.session.add(Note(account_id=f"status-{status}", text="answered"))
    return JSONResponse({"status": status}, status_code=status)


def probe_spec(schema: str):
    return replace(make_spec(schema), routers=[router])


def crash_app() -> FastAPI:
    """The probe app in a process of its own (uvicorn --factory), on the test's database."""
    spec = probe_spec(os.environ["PROBE_SCHEMA"])
    settings = ServiceSettings(database_url=os.environ["PROBE_DATABASE_URL"])
    app = create_app(spec, settings)
    app.router.lifespan_context = _database_only(spec, settings)
    return app


def _database_only(spec, settings):
    from contextlib import asynccontextmanager
    from types import SimpleNamespace

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        db = Database(settings.database_url, spec.schema, pool_size=2)
        app.state.runtime = SimpleNamespace(db=db, settings=settings)
        yield
        await db.dispose()

    return lifespan


@pytest.fixture(scope="module")
async def probe(database_url):
    spec = probe_spec(f"idem_{uuid.uuid4().hex[:8]}")
    db = await migrated_database(spec, database_url)
    async with db.engine.begin() as conn:  # a service's migrations create it (the probe's don't)
        await conn.run_sync(idempotency.idempotency_keys.create)
    yield spec, db
    await db.dispose()
    owner = Database(database_url, spec.schema, pool_size=1)  # the schema's owner drops it
    async with owner.engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{spec.schema}" CASCADE'))
    await owner.dispose()


@pytest.fixture
async def api(probe):
    spec, db = probe
    async with api_client(spec, db) as client:
        yield client


async def notes(db: Database, account_id: str) -> list[str]:
    async with db.sessions() as session:
        rows = await session.execute(select(Note.text).where(Note.account_id == account_id))
        return list(rows.scalars())


async def stored_keys(db: Database) -> int:
    async with db.sessions() as session:
        return (
            await session.execute(select(func.count()).select_from(idempotency.idempotency_keys))
        ).scalar_one()


def new_id() -> str:
    return uuid.uuid4().hex[:10]


async def test_a_retry_gets_the_first_response_and_changes_nothing(api, probe):
    _, db = probe
    account = new_id()
    body = {"account_id": account, "text": "a"}
    headers = {"Idempotency-Key": f"k-{account}"}
    first = await api.post("/notes", json=body, headers=headers)
    again = await api.post("/notes", json=body, headers=headers)
    other = await api.post("/notes", json=body, headers={"Idempotency-Key": f"k2-{account}"})
    plain = await api.post("/notes", json=body)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and first.json()["text"] == "a"
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    assert await notes(db, account) == ["a", "a", "a"]


async def test_the_same_json_written_differently_is_the_same_request(api, probe):
    _, db = probe
    account = new_id()
    headers = {"Idempotency-Key": f"k-{account}", "Content-Type": "application/json"}
    compact = f'{{"account_id":"{account}","text":"b"}}'
    spaced = f'{{ "text" : "b",\n  "account_id" : "{account}" }}'
    first = await api.post("/notes", content=compact, headers=headers)
    again = await api.post("/notes", content=spaced, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await notes(db, account) == ["b"]


async def test_the_same_key_for_a_different_request_is_refused(api, probe):
    _, db = probe
    account = new_id()
    headers = {"Idempotency-Key": f"k-{account}"}
    await api.post("/notes", json={"account_id": account, "text": "a"}, headers=headers)
    reused = await api.post("/notes", json={"account_id": account, "text": "b"}, headers=headers)
    assert reused.status_code == 422
    assert reused.headers["content-type"] == "application/problem+json"
    problem = reused.json()
    assert "different request (POST /notes)" in problem["detail"]
    assert problem["errors"][0]["field"] == "Idempotency-Key"
    assert await notes(db, account) == ["a"]


async def test_keys_belong_to_a_tenant_and_a_principal(api, probe):
    _, db = probe
    account = new_id()
    body = {"account_id": account, "text": "c"}
    key = f"shared-{account}"

    def as_(tenant: str, subject: str) -> dict[str, str]:
        return {"Idempotency-Key": key, **bearer(tenant, ["advisor"], subject)}

    acme = await api.post("/notes", json=body, headers=as_("acme", "pat"))
    evil = await api.post("/notes", json=body, headers=as_("evil", "pat"))
    bob = await api.post("/notes", json=body, headers=as_("acme", "bob"))
    again = await api.post("/notes", json=body, headers=as_("acme", "pat"))
    assert acme.status_code == evil.status_code == bob.status_code == 201
    assert "Idempotent-Replayed" not in evil.headers and "Idempotent-Replayed" not in bob.headers
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == acme.json()
    assert await notes(db, account) == ["c", "c", "c"]


async def test_a_failed_request_leaves_nothing_and_its_key_runs_again(api, probe):
    _, db = probe
    account = new_id()
    headers = {"Idempotency-Key": f"k-{account}"}
    FAILURES_LEFT["count"] = 1
    with pytest.raises(RuntimeError):  # the test client re-raises what answered 500
        await api.put(f"/flaky/{account}", headers=headers)
    retried = await api.put(f"/flaky/{account}", headers=headers)
    replayed = await api.put(f"/flaky/{account}", headers=headers)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert replayed.status_code == 200 and replayed.headers["Idempotent-Replayed"] == "true"
    assert await notes(db, account) == ["flaky"]  # the failed request's write rolled back


@pytest.mark.parametrize("status", [409, 422, 503])
async def test_an_error_answer_is_not_remembered_and_its_changes_roll_back(api, probe, status):
    _, db = probe
    headers = {"Idempotency-Key": f"answer-{new_id()}"}
    first = await api.post(f"/answer-with/{status}", headers=headers)
    again = await api.post(f"/answer-with/{status}", headers=headers)
    assert first.status_code == again.status_code == status
    assert "Idempotent-Replayed" not in again.headers
    assert await notes(db, f"status-{status}") == []


async def test_a_retry_while_the_first_request_runs_is_409(api, probe):
    _, db = probe
    account = new_id()
    headers = {"Idempotency-Key": f"slow-{account}"}
    RELEASE.clear()
    first = asyncio.create_task(api.post(f"/slow/{account}", headers=headers))
    async with asyncio.timeout(10):
        while not await _claim_is_held(db, probe[0].schema):
            await asyncio.sleep(0.02)
    concurrent = await api.post(f"/slow/{account}", headers=headers)
    RELEASE.set()
    done = await first
    replayed = await api.post(f"/slow/{account}", headers=headers)
    assert concurrent.status_code == 409 and "still being processed" in concurrent.json()["detail"]
    assert done.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert await notes(db, account) == ["slow"]


async def _claim_is_held(db: Database, schema: str) -> bool:
    """Whether a request holds a claim (its transaction has inserted a key, not committed)."""
    async with db.sessions() as session:
        holders = await session.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE relation = to_regclass(:keys) "
                "AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"keys": f'"{schema}".idempotency_keys'},
        )
        return holders.scalar_one() > 0


async def test_an_expired_or_abandoned_key_is_taken_over(api, probe):
    _, db = probe
    account = new_id()
    headers = {"Idempotency-Key": f"k-{account}"}
    body = {"account_id": account, "text": "d"}
    await api.post("/notes", json=body, headers=headers)
    keys = idempotency.idempotency_keys
    async with db.sessions() as session, session.begin():
        await session.execute(
            update(keys)
            .where(keys.c.path == "/notes")
            .values(created_at=func.now() - idempotency.KEEP_FOR - timedelta(minutes=1))
        )
    expired = await api.post("/notes", json=body, headers=headers)
    assert expired.status_code == 201 and "Idempotent-Replayed" not in expired.headers
    # A row an earlier version left while its request ran (status null) does not block.
    async with db.sessions() as session, session.begin():
        await session.execute(update(keys).values(status_code=None))
    abandoned = await api.post("/notes", json=body, headers=headers)
    assert abandoned.status_code == 201 and "Idempotent-Replayed" not in abandoned.headers
    assert await notes(db, account) == ["d", "d", "d"]


async def test_events_of_a_keyed_request_commit_with_it(probe):
    spec, db = probe
    events_router = APIRouter(dependencies=[Depends(requires(Permission.READ))])

    @events_router.post("/publish/{account_id}")
    async def publish(account_id: str, uow: UoW) -> dict[str, str]:
        from ballast_common.testing import example

        uow.publish(example("account-changed", account_id=account_id), key=account_id)
        return {"published": account_id}

    keyed_spec = replace(spec, routers=[events_router])
    account = new_id()
    async with api_client(keyed_spec, db) as client:
        headers = {"Idempotency-Key": f"pub-{account}"}
        first = await client.post(f"/publish/{account}", headers=headers)
        again = await client.post(f"/publish/{account}", headers=headers)
    assert first.status_code == again.status_code == 200
    assert len(await outbox_events(db, "account-changed", account)) == 1


async def test_a_bad_key_is_400_naming_the_header(api, probe):
    _, db = probe
    account = new_id()
    response = await api.post(
        "/notes",
        json={"account_id": account, "text": "x"},
        headers={"Idempotency-Key": "x" * 300},
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await notes(db, account) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_request_killed_mid_way_frees_its_key(probe, database_url, tmp_path):
    spec, db = probe
    port = _free_port()
    started = tmp_path / "started"
    env = {
        **os.environ,
        "PROBE_SCHEMA": spec.schema,
        "PROBE_DATABASE_URL": database_url,
        "PROBE_STARTED_FILE": str(started),
        "PYTHONPATH": str(Path(__file__).parent),
        "BALLAST_AUTH_JWKS": str(issuer_for_tests().jwks_path),
    }
    server = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "uvicorn", "--factory", "test_idempotency:crash_app"),
        *("--port", str(port), "--log-level", "warning"),
        env=env,
        cwd=Path(__file__).parent,
    )
    account = new_id()
    headers = {"Idempotency-Key": f"crash-{account}"}
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, headers=bearer()
        ) as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            request = asyncio.create_task(http.post(f"/slow/{account}", headers=headers))
            async with asyncio.timeout(30):
                while not started.exists():
                    await asyncio.sleep(0.05)
            server.send_signal(signal.SIGKILL)
            await asyncio.wait_for(server.wait(), 30)
            with pytest.raises(httpx.TransportError):
                await request
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    async with api_client(spec, db) as api:
        RELEASE.set()
        async with asyncio.timeout(30):
            while True:  # PostgreSQL notices the dead connection and rolls its claim back
                retried = await api.post(f"/slow/{account}", headers=headers)
                if retried.status_code != 409:
                    break
                await asyncio.sleep(0.1)
    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert await notes(db, account) == ["slow"]  # the killed request's write is gone
