"""The database's backstop under the services' tenant checks (ballast_common.tenancy):
row-level security on every tenant table, and each service's own role that owns nothing.

The per-service `test_tenants_and_roles.py` tests already run as these roles (the testing
kit's `migrated_database` gives the service's role); here: the catalog says what we think,
the policy does what it says, a request whose query forgets its tenant still sees only the
caller's rows, and a role cannot reach another service's schema or rewrite the audit trail.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator

import pytest
from account_svc.main import spec as account_spec
from account_svc.repository import PostgresAccountRepository
from account_svc.tables import Account
from ballast_common import tenancy
from ballast_common.app import ServiceSpec
from ballast_common.db import Database
from ballast_common.migrations.runner import SERVICE_PACKAGES
from ballast_common.testing import api_client, app_role_url, bearer, migrated_database
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

pytestmark = pytest.mark.integration


def _spec(package: str) -> ServiceSpec:
    return importlib.import_module(f"{package}.main").spec


@pytest.mark.parametrize("package", SERVICE_PACKAGES)
async def test_every_tenant_table_has_its_policy_and_no_shared_one_has(
    package: str, database_url: str
) -> None:
    spec = _spec(package)
    db = await migrated_database(spec, database_url)
    try:
        async with db.sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT c.relname, c.relrowsecurity, p.polname IS NOT NULL"
                    " FROM pg_class c LEFT JOIN pg_policy p"
                    " ON p.polrelid = c.oid AND p.polname = :policy"
                    " WHERE c.relnamespace = CAST(:schema AS regnamespace) AND c.relkind = 'r'"
                ),
                {"policy": tenancy.POLICY, "schema": spec.schema},
            )
            secured = {name: (rls, policy) for name, rls, policy in rows}
    finally:
        await db.dispose()
    with_tenant = {t.name for t in spec.metadata.tables.values() if "tenant" in t.c}
    assert with_tenant, f"{package} has no tenant table"
    for table in spec.metadata.tables:
        wanted = table in with_tenant and table not in spec.shared_tables
        assert secured[table] == (wanted, wanted), f"{spec.schema}.{table}"


@pytest.fixture(scope="module")
async def accounts_db(database_url: str) -> AsyncIterator[Database]:
    db = await migrated_database(account_spec, database_url)
    yield db
    await db.dispose()


async def _households(db: Database) -> list[tuple[str, str]]:
    async with db.sessions() as session:
        rows = await session.execute(
            text("SELECT household_id, tenant FROM households WHERE household_id LIKE 'TI-%'")
        )
        return sorted((r[0], r[1]) for r in rows)


async def test_a_transaction_sees_and_writes_its_tenants_rows_only(accounts_db: Database) -> None:
    first, second = f"ti-a-{uuid.uuid4().hex[:6]}", f"ti-b-{uuid.uuid4().hex[:6]}"
    ids = {first: f"TI-{first}", second: f"TI-{second}"}
    async with accounts_db.sessions() as session, session.begin():  # platform-wide work
        for tenant, household in ids.items():
            await session.execute(
                text(
                    "INSERT INTO households (household_id, tenant, name, created_at, updated_at)"
                    " VALUES (:h, :t, 'n', now(), now())"
                ),
                {"h": household, "t": tenant},
            )
    everything = await _households(accounts_db)
    assert {(ids[first], first), (ids[second], second)} <= set(everything)

    tenancy.scope_request(first)
    try:
        mine = await _households(accounts_db)
        assert (ids[first], first) in mine and all(t == first for _, t in mine)
        async with accounts_db.sessions() as session, session.begin():
            changed = await session.execute(
                text("UPDATE households SET name = 'taken' WHERE household_id = :h"),
                {"h": ids[second]},
            )
            assert changed.rowcount == 0  # another tenant's row is not there to change
            async with tenancy.across_tenants(session):  # an explicit platform-wide check
                seen = await session.execute(
                    text("SELECT tenant FROM households WHERE household_id = :h"),
                    {"h": ids[second]},
                )
                assert seen.scalar_one() == second
            back = await session.execute(
                text("SELECT count(*) FROM households WHERE household_id = :h"),
                {"h": ids[second]},
            )
            assert back.scalar_one() == 0  # the block's end restored the caller's scope
        with pytest.raises(DBAPIError, match="row-level security"):
            async with accounts_db.sessions() as session, session.begin():
                await session.execute(
                    text(
                        "INSERT INTO households (household_id, tenant, name, created_at,"
                        " updated_at) VALUES (:h, :t, 'n', now(), now())"
                    ),
                    {"h": f"TI-x-{uuid.uuid4().hex[:6]}", "t": second},
                )
        tenancy.scope_request(tenancy.NO_TENANT)
        assert await _households(accounts_db) == []
    finally:
        tenancy.scope_request(tenancy.ALL_TENANTS)
    assert await _households(accounts_db) == everything


async def test_a_request_whose_query_forgets_its_tenant_still_sees_only_its_own(
    accounts_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, other = f"ti-own-{uuid.uuid4().hex[:6]}", f"ti-other-{uuid.uuid4().hex[:6]}"
    theirs = f"TI-{uuid.uuid4().hex[:8]}"
    async with accounts_db.sessions() as session, session.begin():
        session.add(
            Account(
                account_id=theirs,
                tenant=other,
                household_id=theirs,
                name="n",
                account_type="taxable",
            )
        )

    async def careless_get_account(self, tenant, account_id, *, for_update=False):  # type: ignore[no-untyped-def]
        # the bug the backstop is for: no `Account.tenant == tenant`
        stmt = select(Account).where(Account.account_id == account_id)
        return (await self.session.exec(stmt)).first()

    monkeypatch.setattr(PostgresAccountRepository, "get_account", careless_get_account)
    async with api_client(account_spec, accounts_db, tenant=tenant) as api:
        assert (await api.get(f"/accounts/{theirs}")).status_code == 404
        assert (await api.get(f"/accounts/{theirs}", headers=bearer(other))).status_code == 200


async def test_a_service_role_reaches_its_own_schema_only_and_never_rewrites_the_trail(
    database_url: str,
) -> None:
    taxlot = _spec("taxlot_svc")
    await (await migrated_database(taxlot, database_url)).dispose()  # its schema exists
    url = await app_role_url(account_spec, database_url)
    db = Database(url, account_spec.schema, pool_size=1)
    try:
        refusals = {
            f'SELECT 1 FROM "{taxlot.schema}".lots LIMIT 1': "permission denied for schema",
            "UPDATE audit_records SET actor = 'mallory'": "permission denied for table",
            "DELETE FROM audit_records": "permission denied for table",
            "DROP TABLE accounts": "must be owner",
            "ALTER TABLE accounts DISABLE ROW LEVEL SECURITY": "must be owner",
            "DROP POLICY tenant_isolation ON accounts": "must be owner",
        }
        for statement, refusal in refusals.items():
            with pytest.raises(DBAPIError, match=refusal):
                async with db.sessions() as session, session.begin():
                    await session.execute(text(statement))
    finally:
        await db.dispose()
