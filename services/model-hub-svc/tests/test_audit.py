"""model-hub-svc's audit trail on real PostgreSQL: a change over REST is recorded with the
token's subject, before and after; records chain; the table refuses UPDATE, DELETE and
TRUNCATE; concurrent appends keep one chain; `ballast audit verify` finds a record changed
behind the application's back (as a superuser could) and passes an intact chain."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from ballast_cli.audit import verify
from ballast_common import audit
from ballast_common.audit import GENESIS, AuditEntry
from ballast_common.auth import Role
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, migrated_database, unit_of_work
from model_hub_svc.main import spec
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import SecurityIn
from model_hub_svc.service import upsert_securities
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

pytestmark = pytest.mark.integration

BALLAST = Path(sys.executable).with_name("ballast")
SERVICE = "model-hub-svc"


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await upsert_securities(
            uow,
            PostgresModelHubRepository(uow.session),
            [
                SecurityIn(symbol=s, name=s, asset_class="US Equity", sector="X", price=Decimal(p))
                for s, p in (("AUDA", "10"), ("AUDB", "20"))
            ],
            tenant="setup",
            actor="setup",
        )
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db) as client:
        yield client


def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def records_of(db: Database, tenant: str) -> list[dict[str, Any]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text("SELECT * FROM audit_records WHERE tenant = :t ORDER BY seq"), {"t": tenant}
        )
        return [dict(r._mapping) for r in rows]


async def test_a_model_change_is_recorded_with_the_subject_before_and_after(api, db):
    firm, model_id = tenant(), f"m-{uuid.uuid4().hex[:8]}"
    pat = bearer(firm, [Role.MODEL_MANAGER], "pat@firm")
    first = {"name": "Core", "targets": [{"symbol": "AUDA", "weight": "1"}]}
    second = {
        "name": "Core",
        "targets": [{"symbol": "AUDA", "weight": "0.4"}, {"symbol": "AUDB", "weight": "0.6"}],
    }
    trace_id = uuid.uuid4().hex
    traced = {**pat, "traceparent": f"00-{trace_id}-{'1' * 16}-01"}
    for body in (first, second):
        assert (await api.put(f"/models/{model_id}", json=body, headers=traced)).status_code == 201

    page = (await api.get(f"/models/{model_id}/audit", headers=bearer(firm))).json()
    created, changed = page["items"]
    assert (created["actor"], created["action"], created["before"]) == ("pat@firm", "create", None)
    assert created["after"] == {"name": "Core", "version": 1, "targets": {"AUDA": "1.0000000000"}}
    assert changed["before"] == created["after"]
    assert changed["after"]["targets"] == {"AUDA": "0.4000000000", "AUDB": "0.6000000000"}
    assert (changed["seq"], changed["prev_hash"]) == (2, created["hash"])
    assert created["prev_hash"] == GENESIS and created["request_id"] == trace_id
    assert page["next_offset"] is None
    after_first = await api.get("/audit", params={"after": 1}, headers=bearer(firm))
    assert [r["seq"] for r in after_first.json()["items"]] == [2]


async def test_another_tenants_model_has_no_trail_to_read(api):
    model_id = f"m-{uuid.uuid4().hex[:8]}"
    body = {"name": "Core", "targets": [{"symbol": "AUDA", "weight": "1"}]}
    assert (await api.put(f"/models/{model_id}", json=body)).status_code == 201
    theirs = await api.get(f"/models/{model_id}/audit", headers=bearer("evil"))
    assert theirs.status_code == 404
    nothing = await api.get("/audit", params={"subject_id": model_id}, headers=bearer("evil"))
    assert nothing.json()["items"] == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_records SET actor = 'mallory' WHERE tenant = :t",
        "DELETE FROM audit_records WHERE tenant = :t",
        "TRUNCATE audit_records",
    ],
)
async def test_the_application_cannot_change_or_remove_a_record(db, database_url, statement):
    firm = tenant()
    async with db.sessions() as session, session.begin():
        await audit.append(session, firm, [AuditEntry("pat", "create", "model", "m1")])
    # the service's role has no such privilege; even the schema's owner meets the trigger
    owner = Database(database_url, spec.schema, pool_size=1)
    try:
        for who, refusal in ((db, "permission denied"), (owner, "audit_records is append-only")):
            with pytest.raises(DBAPIError, match=refusal):
                async with who.sessions() as session, session.begin():
                    await session.execute(text(statement), {"t": firm})
    finally:
        await owner.dispose()
    assert [r["actor"] for r in await records_of(db, firm)] == ["pat"]


async def test_concurrent_appends_for_one_tenant_keep_one_chain(db, database_url):
    firm, writers = tenant(), 8
    ready = asyncio.Barrier(writers)
    pool = Database(database_url, spec.schema, pool_size=writers)

    async def write(n: int) -> None:
        async with pool.sessions() as session, session.begin():
            await session.execute(text("SELECT 1"))  # each in its own open transaction
            await ready.wait()
            entries = [AuditEntry(f"w{n}", "update", "model", f"m{n}-{i}") for i in range(3)]
            await audit.append(session, firm, entries)

    try:
        await asyncio.gather(*(write(n) for n in range(writers)))
    finally:
        await pool.dispose()
    chained = await records_of(db, firm)
    assert [r["seq"] for r in chained] == list(range(1, 3 * writers + 1))
    assert [r["prev_hash"] for r in chained] == [GENESIS] + [r["hash"] for r in chained[:-1]]
    for n in range(writers):  # a transaction's records stay together
        seqs = [r["seq"] for r in chained if r["actor"] == f"w{n}"]
        assert seqs == list(range(seqs[0], seqs[0] + 3))


async def ballast_audit_verify(database_url: str) -> tuple[int | None, str, str]:
    """`ballast audit verify` of this service, run as a process: exit status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        str(BALLAST),
        *("audit", "verify", "--database-url", database_url, "--service", SERVICE),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


async def _as_superuser(database_url: str, statement: str, params: dict[str, Any]) -> None:
    """What an operator with superuser rights could do: triggers off for one transaction."""
    superuser = Database(database_url, spec.schema, pool_size=1)
    try:
        async with superuser.sessions() as session, session.begin():
            await session.execute(text("SET LOCAL session_replication_role = replica"))
            await session.execute(text(statement), params)
    finally:
        await superuser.dispose()


async def test_verify_finds_a_tampered_record_and_passes_the_intact_chain(api, db, database_url):
    firm, model_id = tenant(), f"m-{uuid.uuid4().hex[:8]}"
    manager = bearer(firm, [Role.MODEL_MANAGER], "pat@firm")
    for weights in (("1", "0"), ("0.5", "0.5"), ("0.25", "0.75")):
        targets = [
            {"symbol": s, "weight": w} for s, w in zip(("AUDA", "AUDB"), weights, strict=True)
        ]
        body = {"name": "Core", "targets": [t for t in targets if t["weight"] != "0"]}
        assert (await api.put(f"/models/{model_id}", json=body, headers=manager)).status_code < 300
    [intact] = await verify(database_url, [SERVICE])
    assert intact.broken == [] and intact.records >= 3

    middle = (await records_of(db, firm))[1]
    where = {"t": firm, "s": middle["seq"]}
    await _as_superuser(
        database_url,
        "UPDATE audit_records SET after = jsonb_set(after, '{name}', '\"Forged\"') "
        "WHERE tenant = :t AND seq = :s",
        where,
    )
    [tampered] = await verify(database_url, [SERVICE])
    [broken] = tampered.broken
    assert (broken.tenant, broken.seq, broken.subject_type, broken.subject_id) == (
        firm,
        2,
        "model",
        model_id,
    )
    assert "hash does not match its contents" in broken.problems[0]
    code, out, err = await ballast_audit_verify(database_url)
    assert code == 1, err
    assert f"{SERVICE} tenant {firm} record 2 (model {model_id})" in err
    assert "TAMPERED" in out

    await _as_superuser(
        database_url,
        "UPDATE audit_records SET after = jsonb_set(after, '{name}', '\"Core\"') "
        "WHERE tenant = :t AND seq = :s",
        where,
    )
    code, out, err = await ballast_audit_verify(database_url)
    assert code == 0, err
    assert f"{SERVICE}: " in out and "intact" in out
