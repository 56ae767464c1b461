"""Migrate the services' schemas as one step, before any service starts.

Each service's schema, tables and revisions come from its `<package>.main.spec`; this module
only knows the packages' names. One transaction per schema, under the same advisory lock as
a service migrating itself at start-up, so the step and a hand-started service never race.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ballast_common.app import ServiceSpec
from ballast_common.db import async_url
from ballast_common.migrations import upgrade_connection
from ballast_common.tenancy import AppRole

# The services with a schema, in the order `upgrade --all` migrates them.
SERVICE_PACKAGES = (
    "account_svc",
    "model_hub_svc",
    "rebalance_svc",
    "taxlot_svc",
    "custodian_gateway",
    "reporting_svc",
)


class MigrationError(Exception):
    """A service that cannot be migrated, with the reason in words."""


@dataclass(frozen=True)
class Outcome:
    service: str
    schema: str
    before: str | None
    after: str | None
    seconds: float
    error: str | None = None

    def line(self) -> str:
        where = f"{self.service:<18} schema {self.schema:<18}"
        if self.error is not None:
            return f"{where} FAILED: {self.error}"
        if self.before == self.after:
            change = f"already at {self.after}"
        else:
            change = f"upgraded {self.before or '(empty)'} -> {self.after}"
        return f"{where} {change} ({self.seconds:.1f} s)"


def package_of(name: str) -> str:
    """`rebalance-svc` or `rebalance_svc` -> `rebalance_svc`."""
    return name.replace("-", "_")


def load_spec(name: str) -> ServiceSpec:
    """Import `<package>.main` and return its ServiceSpec."""
    package = package_of(name)
    if not package.isidentifier():
        raise MigrationError(f"{name!r} is not a service name or package")
    try:
        module = importlib.import_module(f"{package}.main")
    except ModuleNotFoundError as exc:
        if exc.name not in (package, f"{package}.main"):
            raise
        known = ", ".join(SERVICE_PACKAGES)
        raise MigrationError(f"no service package {package!r} (known: {known})") from exc
    spec = getattr(module, "spec", None)
    if not isinstance(spec, ServiceSpec):
        raise MigrationError(f"{package}.main has no ServiceSpec `spec`: no schema to migrate")
    return spec


def load_specs(names: Sequence[str]) -> list[ServiceSpec]:
    """The specs of the named services, in the order given, each once."""
    specs: dict[str, ServiceSpec] = {}
    for name in names:
        spec = load_spec(name)
        specs.setdefault(spec.schema, spec)
    return list(specs.values())


def database_url(spec: ServiceSpec) -> str:
    """The URL migrations use: the schema owner's (`database_owner_url`), else the service's
    own (its prefix, then BALLAST_*, then default)."""
    settings = spec.settings_type()
    return str(settings.database_owner_url or settings.database_url)


def app_role_of(spec: ServiceSpec) -> AppRole | None:
    """The role the service connects as, when it is not the owner (tenancy.py)."""
    settings = spec.settings_type()
    return AppRole.of(settings.database_url, settings.database_owner_url or settings.database_url)


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(async_url(url)).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable database URL)"


def describe(exc: BaseException) -> str:
    """One line naming the error: the driver's own message rather than SQLAlchemy's wrapper."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    # SQLAlchemy's asyncpg adapter wraps the driver's error (UndefinedTableError...) in its own.
    cause = cause.__cause__ if isinstance(exc, DBAPIError) and cause.__cause__ else cause
    text_ = " ".join(str(cause).split()) or repr(cause)
    return f"{type(cause).__name__}: {text_}"[:500]


def current_revision(connection: Connection, schema: str) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
    return context.get_current_revision()


def _upgrade(connection: Connection, spec: ServiceSpec) -> tuple[str | None, str | None]:
    # The lock upgrade_connection takes (advisory locks are re-entrant), so `before` is exact.
    lock = text("SELECT pg_advisory_xact_lock(hashtext(:n))")
    connection.execute(lock, {"n": f"migrate:{spec.schema}"})
    before = current_revision(connection, spec.schema)
    upgrade_connection(
        connection,
        spec.schema,
        spec.migrations_dir,
        spec.metadata,
        shared_tables=spec.shared_tables,
        app_role=app_role_of(spec),
    )
    return before, current_revision(connection, spec.schema)


async def upgrade_services(
    specs: Sequence[ServiceSpec],
    url_of: Callable[[ServiceSpec], str] = database_url,
    report: Callable[[Outcome], None] = lambda outcome: None,
) -> list[Outcome]:
    """Bring each schema to head in order; stop at the first failure (reported, not raised)."""
    engines: dict[str, AsyncEngine] = {}
    outcomes: list[Outcome] = []
    try:
        for spec in specs:
            url = url_of(spec)
            if url not in engines:
                engines[url] = create_async_engine(async_url(url), poolclass=pool.NullPool)
            started = time.perf_counter()
            try:
                async with engines[url].begin() as conn:
                    before, after = await conn.run_sync(_upgrade, spec)
                outcome = Outcome(
                    spec.name, spec.schema, before, after, time.perf_counter() - started
                )
            except Exception as exc:
                error = f"{describe(exc)} (database {safe_url(url)})"
                outcome = Outcome(
                    spec.name, spec.schema, None, None, time.perf_counter() - started, error
                )
            outcomes.append(outcome)
            report(outcome)
            if outcome.error is not None:
                break
    finally:
        for engine in engines.values():
            await engine.dispose()
    return outcomes
