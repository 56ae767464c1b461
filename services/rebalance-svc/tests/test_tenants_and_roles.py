"""Every route of rebalance-svc against two tenants and every role (real PostgreSQL): another
tenant's runs and scenarios answer 404, lists and counts are the caller's tenant's, a scan or
harvest covers the caller's tenant's accounts only and records who started it, a role
without the route's permission gets 403 and changes nothing, a body naming a tenant is 422.

The route table below must name every route of the app (checked first)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common import testing
from ballast_common.app import create_app
from ballast_common.auth import PERMISSIONS, Permission, Role, operations_of
from ballast_common.contracts.events import (
    AccountChangedV1,
    HoldingsReconciledV1,
    ModelChangedV1,
    ModelTargetV1,
    SecuritiesChangedV1,
    SecurityV1,
    TaxSettingsV1,
)
from ballast_common.db import Database
from ballast_common.outbox import outbox
from ballast_common.testing import (
    api_client,
    bearer,
    migrated_database,
    unit_of_work,
    with_test_issuer,
)
from pydantic import BaseModel
from rebalance_svc import service
from rebalance_svc.handlers import subscriptions
from rebalance_svc.main import spec
from rebalance_svc.settings import Settings
from rebalance_svc.tables import metadata
from rebalance_test_support import decline_trades_in_flight, process_requested_chunks
from sqlalchemy import func, select, text

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"
RUN = uuid.uuid4().hex[:6].upper()
SYMBOL = f"TR{RUN}"


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


async def deliver(db: Database, payload: BaseModel, key: str, tenant: str) -> None:
    envelope = testing.envelope(payload, key=key, tenant=tenant)
    await testing.deliver(db, subscriptions(Settings()), envelope)


@dataclass(frozen=True)
class Book:
    """An account of each tenant on a model of its own, and the run of acme's model change."""

    acme: str
    evil: str
    run_id: str


async def account_of(db: Database, tenant: str) -> str:
    """An account of `tenant`, harvesting on, holding cash only, on the tenant's model."""
    account = f"{tenant}-{RUN}"
    changed = AccountChangedV1(
        account_id=account,
        household_id=f"HH-{account}",
        name=account,
        account_type="taxable",
        model_id=f"m-{account}",
        status="active",
        auto_approve=True,
        tax_settings=TaxSettingsV1(harvest=True),
    )
    await deliver(db, changed, account, tenant)
    cash = HoldingsReconciledV1(
        account_id=account,
        as_of=date(2026, 11, 20),
        cash=Decimal("10000"),
        cause="opening-balance",
        positions=[],
    )
    await deliver(db, cash, account, tenant)
    return account


@pytest.fixture(scope="module")
async def book(db: Database) -> Book:
    security = SecurityV1(
        symbol=SYMBOL, name=SYMBOL, asset_class="US Equity", sector="IT", price=Decimal(100)
    )
    await deliver(db, SecuritiesChangedV1(securities=[security]), "security-master", ACME)
    acme, evil = await account_of(db, ACME), await account_of(db, EVIL)
    target = [ModelTargetV1(symbol=SYMBOL, weight=Decimal("1"))]
    for tenant, account in ((EVIL, evil), (ACME, acme)):
        change = ModelChangedV1(
            model_id=f"m-{account}", name=tenant, version=1, changed_by="pm", targets=target
        )
        await deliver(db, change, f"m-{account}", tenant)
    await process_requested_chunks(db)
    async with db.sessions() as session:
        run_id = (
            await session.execute(
                text("SELECT run_id FROM runs WHERE model_id = :m"), {"m": f"m-{acme}"}
            )
        ).scalar_one()
    return Book(acme, evil, run_id)


@pytest.fixture(scope="module")
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app, called as an admin of acme unless a request says otherwise."""
    async with api_client(spec, db, tenant=ACME) as client:
        yield client


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: dict[str, Any] | None = None


def calls(book: Book) -> dict[tuple[str, str], Call]:
    """One call per route with acme's ids, keyed by (method, route path)."""
    return {
        ("GET", "/runs"): Call("GET", "/runs"),
        ("GET", "/runs/{run_id}"): Call("GET", f"/runs/{book.run_id}"),
        ("GET", "/runs/{run_id}/scenarios/{account_id}"): Call(
            "GET", f"/runs/{book.run_id}/scenarios/{book.acme}"
        ),
        ("POST", "/scans"): Call("POST", "/scans", {"rebalance": False}),
        ("POST", "/harvests"): Call("POST", "/harvests", {"accounts": [book.acme]}),
        ("GET", "/read-model"): Call("GET", "/read-model"),
        ("POST", "/cash-requests"): Call(
            "POST",
            "/cash-requests",
            {"requests": [{"account_id": book.acme, "kind": "deposit", "amount": "10"}]},
        ),
        ("GET", "/cash-requests"): Call("GET", "/cash-requests"),
        ("GET", "/cash-requests/{request_id}"): Call("GET", f"/cash-requests/{uuid.UUID(int=0)}"),
    }


def guarded_routes() -> dict[tuple[str, str], Permission]:
    app = create_app(spec, with_test_issuer(spec.settings_type()))
    return {
        (method, op.path): op.permission
        for op in operations_of(app)
        if not op.public and op.permission is not None
        for method in op.methods
    }


async def fingerprint(db: Database) -> dict[str, str]:
    """A digest of every row of the service's tables and its outbox."""
    out = {}
    async with db.sessions() as session:
        for table in [*metadata.sorted_tables, "outbox"]:
            name = str(getattr(table, "name", table))
            digest = await session.execute(
                text(
                    f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    f" FROM {name} t"
                )
            )
            out[name] = digest.scalar_one()
    return out


async def requested_accounts(db: Database, run_id: str) -> set[str]:
    """The accounts a run's chunk requests name."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(outbox.c.value).where(
                outbox.c.topic == "rebalance-chunk-requested",
                outbox.c.key.like(f"{run_id}:%"),
            )
        )
        payloads = [json.loads(value)["payload"] for (value,) in rows]
    return {a for p in payloads for a in p["account_ids"]}


async def chunk_tenants(db: Database, run_id: str) -> set[str]:
    """The tenants a run's chunk requests carry in their envelopes."""
    async with db.sessions() as session:
        rows = await session.execute(
            select(outbox.c.value).where(
                outbox.c.topic == "rebalance-chunk-requested",
                outbox.c.key.like(f"{run_id}:%"),
            )
        )
        return {json.loads(value)["tenant"] for (value,) in rows}


async def test_interval_runs_are_one_per_tenant_carrying_it_and_start_once(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    await decline_trades_in_flight(db)
    settings = Settings()
    for start in (service.start_interval_scans, service.start_interval_harvests):
        interval = f"{start.__name__}:60:{RUN}"
        async with unit_of_work(db, "rebalance-svc") as uow:
            runs = {r.tenant: r for r in await start(uow, settings, interval)}
        assert {ACME, EVIL} <= set(runs), start.__name__
        assert len({r.run_id for r in runs.values()}) == len(runs)
        for tenant, account in ((ACME, book.acme), (EVIL, book.evil)):
            run = runs[tenant]
            assert run.accounts >= 1 and run.chunks >= 1
            assert await chunk_tenants(db, run.run_id) == {tenant}
            assert account in await requested_accounts(db, run.run_id)
            other = book.evil if tenant == ACME else book.acme
            assert other not in await requested_accounts(db, run.run_id)
        # another replica waking for the same interval finds the same runs, starts nothing
        async with db.sessions() as session:
            before = (await session.execute(select(func.count()).select_from(outbox))).scalar()
        async with unit_of_work(db, "rebalance-svc") as uow:
            again = {r.tenant: r.run_id for r in await start(uow, settings, interval)}
        assert again == {t: r.run_id for t, r in runs.items()}
        async with db.sessions() as session:
            after = (await session.execute(select(func.count()).select_from(outbox))).scalar()
        assert after == before
        # each tenant's caller follows its own run, and not the other's
        for tenant, other in ((ACME, EVIL), (EVIL, ACME)):
            own = await api.get(f"/runs/{runs[tenant].run_id}", headers=bearer(tenant))
            assert (own.status_code, own.json()["trigger"]) == (200, runs[tenant].trigger)
            hidden = await api.get(f"/runs/{runs[tenant].run_id}", headers=bearer(other))
            assert hidden.status_code == 404
    await process_requested_chunks(db)


async def test_the_table_names_every_route(book: Book) -> None:
    assert set(calls(book)) == set(guarded_routes())


async def test_another_tenants_runs_and_scenarios_are_not_found(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    own = await api.get(f"/runs/{book.run_id}/scenarios/{book.acme}")
    assert own.status_code == 200, own.text
    before = await fingerprint(db)
    evil = bearer(EVIL)
    for path in (f"/runs/{book.run_id}", f"/runs/{book.run_id}/scenarios/{book.acme}"):
        response = await api.get(path, headers=evil)
        assert response.status_code == 404, (path, response.text)
        assert set(response.json()) == {"type", "title", "status", "detail", "instance"}
    unknown = await api.get(f"/runs/{uuid.uuid4()}", headers=evil)
    other = await api.get(f"/runs/{book.run_id}", headers=evil)
    assert (unknown.status_code, unknown.json()["title"]) == (404, other.json()["title"])
    # a harvest naming another tenant's account is refused as for an unknown one
    harvest = await api.post("/harvests", json={"accounts": [book.acme]}, headers=evil)
    assert harvest.status_code == 422, harvest.text
    assert [e["field"] for e in harvest.json()["errors"]] == ["accounts[0]"]
    assert await fingerprint(db) == before


async def test_lists_and_counts_are_the_callers_tenants(api: httpx.AsyncClient, book: Book) -> None:
    mine = {r["run_id"] for r in (await api.get("/runs?limit=500")).json()["items"]}
    theirs = {
        r["run_id"]
        for r in (await api.get("/runs?limit=500", headers=bearer(EVIL))).json()["items"]
    }
    assert book.run_id in mine and book.run_id not in theirs
    counts = (await api.get("/read-model", headers=bearer(EVIL, [Role.SPONSOR]))).json()
    assert (counts["accounts"], counts["accounts_with_holdings"], counts["models"]) == (1, 1, 1)
    assert counts["securities"] >= 1  # the security master is the platform's


async def test_a_scan_and_a_harvest_cover_the_callers_tenant_and_record_who_started_them(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    await decline_trades_in_flight(db)  # the model changes' trades: settled or not, gone
    caller = bearer(EVIL, [Role.OPERATIONS], subject="ops@evil")
    scan = await api.post("/scans", json={"rebalance": False}, headers=caller)
    assert scan.status_code == 202, scan.text
    assert (scan.json()["accounts"], scan.json()["started_by"]) == (1, "ops@evil")
    assert await requested_accounts(db, scan.json()["run_id"]) == {book.evil}
    harvest = await api.post("/harvests", headers=bearer(ACME, [Role.OVERLAY_MANAGER], "pat"))
    assert harvest.status_code == 202, harvest.text
    assert harvest.json()["started_by"] == "pat"
    assert await requested_accounts(db, harvest.json()["run_id"]) == {book.acme}
    await process_requested_chunks(db)
    run = (await api.get(f"/runs/{scan.json()['run_id']}", headers=bearer(EVIL))).json()
    assert (run["complete"], run["accounts_evaluated"], run["started_by"]) == (
        True,
        1,
        "ops@evil",
    )
    assert (await api.get(f"/runs/{scan.json()['run_id']}")).status_code == 404


async def test_a_role_without_the_permission_is_forbidden_and_nothing_changes(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    before = await fingerprint(db)
    routes = guarded_routes()
    tried = 0
    for key, call in calls(book).items():
        for role in Role:
            if routes[key] in PERMISSIONS[role]:
                continue
            response = await api.request(
                call.method, call.path, json=call.body, headers=bearer(ACME, [role])
            )
            assert response.status_code == 403, (key, role, response.text)
            assert routes[key].value in response.json()["detail"]
            tried += 1
    assert await fingerprint(db) == before
    # scans, harvests and cash requests, by sponsor, advisor, model-manager, compliance,
    # platform-operator
    assert tried == 15


async def test_a_body_naming_a_tenant_is_refused_naming_the_field(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    before = await fingerprint(db)
    for key, call in calls(book).items():
        if call.body is None:
            continue
        response = await api.request(call.method, call.path, json={**call.body, "tenant": EVIL})
        assert response.status_code == 422, (key, response.text)
        assert [e["field"] for e in response.json()["errors"]] == ["tenant"]
    for header in ("X-Tenant", "X-Actor"):
        response = await api.post("/scans", headers={header: EVIL})
        assert response.status_code == 422
    assert await fingerprint(db) == before
