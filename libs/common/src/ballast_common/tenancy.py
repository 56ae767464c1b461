"""Tenant isolation in PostgreSQL: row-level security under the services' own tenant checks.

Every query of a request already names the caller's tenant (repositories filter by it, and
another tenant's id answers 404). Row-level security is the backstop for a query that
forgets: in each service's schema, every table with a `tenant` column (except the ones the
service declares shared by all tenants, `ServiceSpec.shared_tables`) has RLS enabled and one
policy, `tenant_isolation`: a row is visible and writable when its tenant is the
transaction's `ballast.tenant` setting, when that setting is `*` (all tenants), or when the
row names no tenant (NULL: e.g. an account a book load brought before account-svc named it).

- A request's transactions are scoped to the caller's tenant (`authenticate` calls
  `scope_request`); platform-wide routes (`MANAGE_PLATFORM`: the security master, corporate
  actions) to all tenants; public routes (health, metrics) to none.
- Everything else a service does (consumers, the outbox relay, background loops) acts for
  the whole platform: its connections start with `ballast.tenant = *`.
- Policies bind the application role only. Services connect as a role of their own that
  does not own the schema (`grant_app_role`: DML on its own schema, nothing on the others',
  SELECT and INSERT only on `audit_records`); migrations run as the owner
  (`database_owner_url`), which, like a superuser, is not subject to the policies.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import Connection, MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

SETTING = "ballast.tenant"
ALL_TENANTS = "*"
NO_TENANT = ""  # matches no row that names a tenant
POLICY = "tenant_isolation"
TENANT_COLUMN = "tenant"
AUDIT_TABLE = "audit_records"

# The tenant the current request acts for; None outside requests (platform-wide work).
_request_scope: ContextVar[str | None] = ContextVar("ballast_tenant_scope", default=None)
_SET_SCOPE = text(f"SELECT set_config('{SETTING}', :scope, true)")


def connection_settings() -> dict[str, str]:
    """Startup settings of every service connection: act for all tenants until told not to."""
    return {SETTING: ALL_TENANTS}


def scope_request(tenant: str) -> None:
    """Scope every transaction the current request opens to `tenant` (`*`: all tenants)."""
    _request_scope.set(tenant)


def install(engine: AsyncEngine) -> None:
    """Make each transaction begun inside a request state the request's tenant (SET LOCAL)."""

    @event.listens_for(engine.sync_engine, "begin")
    def _scope_transaction(connection: Connection) -> None:
        scope = _request_scope.get()
        if scope is not None:
            connection.exec_driver_sql("SELECT set_config($1, $2, true)", (SETTING, scope))


@asynccontextmanager
async def across_tenants(session: AsyncSession) -> AsyncIterator[None]:
    """Look across tenants on purpose, inside a request: for the checks of ids that are
    unique platform-wide ("is this id another tenant's?"), which must see rows the caller's
    tenant cannot. Only the statements inside the block; rows read there must not be
    returned to the caller."""
    scope = _request_scope.get()
    if scope is None or scope == ALL_TENANTS:
        yield
        return
    await session.execute(_SET_SCOPE, {"scope": ALL_TENANTS})
    yield
    # (an error inside rolls the transaction back, and the setting with it)
    await session.execute(_SET_SCOPE, {"scope": scope})


def _setting() -> str:
    # A sub-select: evaluated once per statement (an InitPlan), not once per row.
    return f"(SELECT current_setting('{SETTING}', true))"


def policy_sql(table: str) -> str:
    scope = _setting()
    return (
        f'CREATE POLICY {POLICY} ON "{table}" '
        f"USING ({scope} = '{ALL_TENANTS}' OR {TENANT_COLUMN} IS NULL OR {TENANT_COLUMN} = {scope})"
    )


def tenant_tables(metadata: MetaData, shared: Collection[str] = ()) -> list[str]:
    """The tables of `metadata` whose rows belong to one tenant each."""
    return sorted(
        table.name
        for table in metadata.tables.values()
        if TENANT_COLUMN in table.c and table.name not in shared
    )


def isolate_tenants(
    connection: Connection, schema: str, metadata: MetaData, shared: Collection[str]
) -> None:
    """Give every tenant table of `schema` RLS and its policy; lift both from the others.
    Runs after every migration and changes only what differs (ALTER TABLE locks the table)."""
    tenant_owned = set(tenant_tables(metadata, shared))
    rows = connection.execute(
        text(
            "SELECT c.relname, c.relrowsecurity, EXISTS (SELECT 1 FROM pg_policy p"
            " WHERE p.polrelid = c.oid AND p.polname = :policy)"
            " FROM pg_class c WHERE c.relnamespace = CAST(:schema AS regnamespace)"
            " AND c.relkind = 'r' AND c.relname = ANY(:tables)"
        ),
        {"policy": POLICY, "schema": f'"{schema}"', "tables": list(metadata.tables)},
    )
    for table, secured, has_policy in rows:
        wanted = table in tenant_owned
        if has_policy and not wanted:
            connection.execute(text(f'DROP POLICY {POLICY} ON "{table}"'))
        if secured != wanted:
            action = "ENABLE" if wanted else "DISABLE"
            connection.execute(text(f'ALTER TABLE "{table}" {action} ROW LEVEL SECURITY'))
        if wanted and not has_policy:
            connection.execute(text(policy_sql(table)))


def create_analyze_function(connection: Connection, schema: str) -> None:
    """`analyze_tables(VARIADIC text[])`: ANALYZE tables of this schema, for a role that does
    not own them (after a bulk load, so the next statements are planned on fresh statistics)."""
    connection.execute(
        text(
            f"""
CREATE OR REPLACE FUNCTION "{schema}".analyze_tables(VARIADIC names text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = "{schema}" AS $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY names LOOP
        IF to_regclass(format('%I.%I', '{schema}', name)) IS NOT NULL THEN
            EXECUTE format('ANALYZE %I.%I', '{schema}', name);
        END IF;
    END LOOP;
END
$$"""
        )
    )
    connection.execute(text(f'REVOKE ALL ON FUNCTION "{schema}".analyze_tables FROM PUBLIC'))


@dataclass(frozen=True)
class AppRole:
    """The role a service connects as, and its password (from the service's database URL)."""

    name: str
    password: str

    @classmethod
    def of(cls, app_url: str, owner_url: str) -> AppRole | None:
        """The application role, if the service connects as another role than the owner."""
        app, owner = make_url(app_url), make_url(owner_url)
        if not app.username or app.username == owner.username:
            return None
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", app.username):
            raise ValueError(
                f"database role {app.username!r}: use lower-case letters, digits and _"
            )
        return cls(app.username, app.password or "")


def grant_app_role(connection: Connection, schema: str, role: AppRole) -> None:
    """Create `role` if it is missing, and give it exactly what a service needs in `schema`:
    DML on every table, sequences, staging tables of its own. An existing role keeps its
    password (a new one: ALTER ROLE, as an operator rotates any credential)."""
    # Roles belong to the cluster: made once, then kept (a new password: ALTER ROLE).
    password = role.password.replace("'", "''")
    connection.execute(
        text(
            f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role.name}') THEN
        CREATE ROLE {role.name} LOGIN PASSWORD '{password}';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- made at the same moment by a migration of another database
END
$$"""
        )
    )
    q = f'"{schema}"'
    for statement in (
        f"GRANT USAGE, CREATE ON SCHEMA {q} TO {role.name}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {q} TO {role.name}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {q} TO {role.name}",
        f"GRANT EXECUTE ON FUNCTION {q}.analyze_tables TO {role.name}",
    ):
        connection.execute(text(statement))
    if _exists(connection, AUDIT_TABLE):
        connection.execute(
            text(f'REVOKE UPDATE, DELETE, TRUNCATE ON {q}."{AUDIT_TABLE}" FROM {role.name}')
        )


def secure_schema(
    connection: Connection,
    schema: str,
    metadata: MetaData,
    shared: Collection[str] = (),
    app_role: AppRole | None = None,
) -> None:
    """After a migration: the tenant policies, the analyze function and the app role's grants."""
    connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
    isolate_tenants(connection, schema, metadata, shared)
    create_analyze_function(connection, schema)
    if app_role is not None:
        grant_app_role(connection, schema, app_role)


def _exists(connection: Connection, table: str) -> bool:
    found = connection.execute(text("SELECT to_regclass(:t)"), {"t": f'"{table}"'}).scalar()
    return found is not None
