"""The chart's database roles against the real PostgreSQL: the migration Job, run with exactly
the environment the chart gives it, creates one role per service, and each service's pod,
with exactly its environment, connects as that role and reaches its own schema only."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from .conftest import PLATFORM_SERVICES, REPO
from .test_helm import by_kind, container_of_pod, database_settings, render, resolved_env

STACK = [sys.executable, str(REPO / "scripts" / "stack.py")]
TAG = f"roles{os.getpid()}"


@pytest.fixture(scope="module")
def owner_url(stack_env: dict[str, str]) -> Iterator[str]:
    """The owner's URL of a database of this module's own, empty at the start."""
    name = f"ballast_{TAG}"
    for action in ("dropdb", "createdb"):
        subprocess.run([*STACK, action, name], check=True, capture_output=True, timeout=120)
    base = stack_env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    yield f"{base}/{name}"
    if not os.environ.get("KEEP_TEST_DB"):
        subprocess.run([*STACK, "dropdb", name], check=True, capture_output=True, timeout=120)
        asyncio.run(_drop_roles(stack_env["BALLAST_DATABASE_URL"]))


def role_of(service: str) -> str:
    # Roles belong to the whole cluster: names of this run's own, never the local stack's.
    return f"{TAG}_{service.replace('-', '_')}"


async def _drop_roles(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for service in PLATFORM_SERVICES:
            await conn.execute(f'DROP ROLE IF EXISTS "{role_of(service)}"')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def rendered(owner_url: str) -> list[dict[str, Any]]:
    owner = urlsplit(owner_url)
    where = f"{owner.hostname}:{owner.port}{owner.path}"
    urls = {
        name: f"postgresql://{role_of(name)}:{secrets.token_hex(12)}@{where}"
        for name in PLATFORM_SERVICES
    }
    return render({"database": {"url": owner_url, "serviceRoles": {"urls": urls}}})


def _run_job(docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """The Job's command with the Job's database settings and no other."""
    [job] = by_kind(docs, "Job").values()
    command = container_of_pod(job)["command"]
    assert command[:3] == ["python", "-m", "ballast_common.migrations"]
    env = {k: v for k, v in os.environ.items() if "DATABASE" not in k}
    env.update(database_settings(resolved_env(docs, job)))
    return subprocess.run(
        [sys.executable, *command[1:]],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def _reach(url: str, own: str, others: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        who = await conn.fetchrow(
            "SELECT current_user AS name, rolsuper, rolcreaterole, rolcreatedb,"
            " (SELECT count(*) FROM pg_class WHERE relowner = r.oid) AS owns"
            " FROM pg_roles r WHERE rolname = current_user"
        )
        version = await conn.fetchval(f'SELECT version_num FROM "{own}".alembic_version')
        refused = []
        for schema in others:
            try:
                await conn.fetchval(f'SELECT version_num FROM "{schema}".alembic_version')
            except asyncpg.InsufficientPrivilegeError:
                refused.append(schema)
        return {**dict(who), "version": version, "refused": refused}
    finally:
        await conn.close()


@pytest.mark.integration
def test_the_job_creates_each_role_and_each_pod_reaches_its_own_schema_only(
    rendered: list[dict[str, Any]], service_specs: dict[str, dict[str, Any]], owner_url: str
) -> None:
    first = _run_job(rendered)
    assert first.returncode == 0, first.stdout + first.stderr
    again = _run_job(rendered)  # an upgrade: the roles exist, the schemas are at head
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("already at") == len(service_specs)

    schemas = {name: spec["schema"] for name, spec in service_specs.items()}
    deployments = by_kind(rendered, "Deployment")
    for name in PLATFORM_SERVICES:
        env = database_settings(resolved_env(rendered, deployments[f"ballast-{name}"]))
        assert set(env) == {"BALLAST_DATABASE_URL"}, name
        assert env["BALLAST_DATABASE_URL"] != owner_url
        others = [s for n, s in schemas.items() if n != name]
        seen = asyncio.run(_reach(env["BALLAST_DATABASE_URL"], schemas[name], others))
        assert seen["name"] == role_of(name)
        assert not (seen["rolsuper"] or seen["rolcreaterole"] or seen["rolcreatedb"]), seen
        assert seen["owns"] == 0, f"{name}'s role owns tables: it would bypass the policies"
        [head] = service_specs[name]["heads"]
        assert seen["version"] == head
        assert seen["refused"] == others, f"{name} reaches another service's schema"
