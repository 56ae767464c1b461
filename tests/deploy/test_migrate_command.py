"""`python -m ballast_common.migrations upgrade`: the one migration step that runs before the
services (docker compose's `migrate`, the chart's Job, scripts/services.py `up`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from ballast_common.app import ServiceSpec
from ballast_common.migrations.__main__ import parse_args
from ballast_common.migrations.runner import (
    SERVICE_PACKAGES,
    MigrationError,
    Outcome,
    describe,
    load_spec,
    package_of,
    safe_url,
    upgrade_services,
)
from ballast_common.settings import ServiceSettings
from sqlalchemy import MetaData

from .conftest import PLATFORM_SERVICES, REPO

MIGRATE = [sys.executable, "-m", "ballast_common.migrations"]
STACK = [sys.executable, str(REPO / "scripts" / "stack.py")]


# -- without a database -----------------------------------------------------------------------


def test_every_service_package_of_the_workspace_is_migrated() -> None:
    mains = sorted(p.parent.name for p in REPO.glob("services/*/src/*/main.py"))
    assert sorted(SERVICE_PACKAGES) == mains
    assert sorted(map(package_of, PLATFORM_SERVICES)) == mains


@pytest.mark.parametrize(
    ("argv", "services", "everyone"),
    [
        (["upgrade", "--all"], [], True),
        (["upgrade", "rebalance-svc", "taxlot_svc"], ["rebalance-svc", "taxlot_svc"], False),
        (["revision", "rebalance_svc", "-m", "add x"], ["rebalance_svc"], False),
    ],
)
def test_arguments(argv: list[str], services: list[str], everyone: bool) -> None:
    args = parse_args(argv)
    assert (args.services, args.all) == (services, everyone)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["upgrade"], "service names or --all"),
        (["upgrade", "--all", "rebalance-svc"], "service names or --all"),
        (["revision", "--all"], "exactly one service"),
        (["revision", "a_svc", "b_svc"], "exactly one service"),
        (["downgrade", "--all"], "invalid choice"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("nope-svc", "no service package 'nope_svc' (known: account_svc"),
        ("custodian-sim", "custodian_sim.main has no ServiceSpec `spec`"),
        ("rebalance svc", "is not a service name or package"),
    ],
)
def test_unknown_services_are_named(name: str, needle: str) -> None:
    with pytest.raises(MigrationError) as info:
        load_spec(name)
    assert needle in str(info.value)


def test_outcome_lines_say_what_happened() -> None:
    upgraded = Outcome("taxlot-svc", "taxlot", None, "abc123", 0.42)
    assert " ".join(upgraded.line().split()) == (
        "taxlot-svc schema taxlot upgraded (empty) -> abc123 (0.4 s)"
    )
    current = Outcome("taxlot-svc", "taxlot", "abc123", "abc123", 0.0)
    assert "already at abc123" in current.line()
    failed = Outcome("taxlot-svc", "taxlot", None, None, 0.1, "ProgrammingError: boom")
    assert failed.line().endswith("FAILED: ProgrammingError: boom")


def test_urls_in_messages_hide_the_password() -> None:
    assert safe_url("postgresql://ballast:s3cret@db:5432/x") == (
        "postgresql+asyncpg://ballast:***@db:5432/x"
    )
    assert "s3cret" not in describe(ValueError("no   such\nthing"))
    assert describe(ValueError("no   such\nthing")) == "ValueError: no such thing"


def test_revision_still_autogenerates_into_the_service_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ballast_common.migrations import __main__ as cli

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(cli.command, "revision", lambda config, **kw: calls.append((config, kw)))
    monkeypatch.setenv("BALLAST_DATABASE_URL", "postgresql://u:p@db:5432/scratch")
    assert cli.main(["revision", "taxlot_svc", "-m", "add a column"]) == 0
    [(config, kwargs)] = calls
    spec = load_spec("taxlot-svc")
    assert kwargs == {
        "message": "add a column",
        "autogenerate": True,
        "version_path": str(spec.migrations_dir),
    }
    assert config.get_main_option("sqlalchemy.url") == "postgresql://u:p@db:5432/scratch"
    assert config.attributes["schema"] == "taxlot"


# -- against the real PostgreSQL ----------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch_database(stack_env: dict[str, str]) -> Iterator[str]:
    """A database of this module's own, empty at the start."""
    name = f"ballast_migrate_{os.getpid()}"
    for action in ("dropdb", "createdb"):
        subprocess.run([*STACK, action, name], check=True, capture_output=True, timeout=120)
    base = stack_env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    yield f"{base}/{name}"
    if not os.environ.get("KEEP_TEST_DB"):
        subprocess.run([*STACK, "dropdb", name], check=True, capture_output=True, timeout=120)


def _migrate(url: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BALLAST_DATABASE_URL": url}
    return subprocess.Popen(
        [*MIGRATE, *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _versions(url: str, schemas: list[str]) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return {
            schema: [
                r["version_num"]
                for r in await conn.fetch(f'SELECT version_num FROM "{schema}".alembic_version')
            ]
            for schema in schemas
        }
    finally:
        await conn.close()


@pytest.mark.integration
def test_upgrade_all_twice_at_once_then_again(
    scratch_database: str, service_specs: dict[str, dict[str, Any]]
) -> None:
    # Two migrators race on an empty database: each schema is upgraded by exactly one.
    racers = [_migrate(scratch_database, "upgrade", "--all") for _ in range(2)]
    outputs = [racer.communicate(timeout=300) for racer in racers]
    for racer, (out, err) in zip(racers, outputs, strict=True):
        assert racer.returncode == 0, out + err
    for name, spec in service_specs.items():
        lines = [ln for out, _ in outputs for ln in out.splitlines() if f" {name} " in ln]
        assert len(lines) == 2, lines
        upgraded = [ln for ln in lines if "upgraded (empty) -> " in ln]
        assert len(upgraded) == 1, f"{name}: {lines}"
        [head] = spec["heads"]
        assert upgraded[0].split("-> ")[1].startswith(head)
        assert f"schema {spec['schema']}" in upgraded[0]
    schemas = [spec["schema"] for spec in service_specs.values()]
    versions = asyncio.run(_versions(scratch_database, schemas))
    assert versions == {spec["schema"]: spec["heads"] for spec in service_specs.values()}

    again = _migrate(scratch_database, "upgrade", "--all")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    assert out.count("already at") == len(service_specs)
    assert out.splitlines()[-1].startswith(f"migrations: {len(service_specs)} schema(s) at head")


@pytest.mark.integration
def test_unreachable_database_fails_naming_the_service_and_hiding_the_password() -> None:
    proc = _migrate("postgresql://ballast:s3cret@127.0.0.1:1/nowhere", "upgrade", "taxlot-svc")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "taxlot-svc" in err and "FAILED" in err and "127.0.0.1:1" in err
    assert "s3cret" not in out + err
    assert err.strip().splitlines()[-1] == "migrations: failed at taxlot-svc (schema taxlot)"


def _spec(tmp_path: Path, schema: str, statement: str) -> ServiceSpec:
    """A service of one revision that runs `statement`."""
    versions = tmp_path / schema
    versions.mkdir()
    (versions / f"{schema}_0001.py").write_text(
        "from alembic import op\n"
        f"revision = '{schema}0001'\n"
        "down_revision = None\n"
        "branch_labels = None\n"
        "depends_on = None\n"
        f"def upgrade():\n    op.execute({statement!r})\n"
        "def downgrade():\n    pass\n"
    )
    return ServiceSpec(
        name=f"{schema.replace('_', '-')}-svc",
        schema=schema,
        settings_type=ServiceSettings,
        metadata=MetaData(),
        migrations_dir=versions,
    )


@pytest.mark.integration
async def test_a_failing_revision_stops_the_step_and_rolls_back_its_schema(
    scratch_database: str, tmp_path: Path
) -> None:
    tag = f"m{os.getpid()}"
    good = _spec(tmp_path, f"{tag}_good", "CREATE TABLE thing (id int)")
    bad = _spec(tmp_path, f"{tag}_bad", "SELECT * FROM no_such_table")
    never = _spec(tmp_path, f"{tag}_never", "CREATE TABLE thing (id int)")
    seen: list[Outcome] = []
    outcomes = await upgrade_services(
        [good, bad, never], url_of=lambda spec: scratch_database, report=seen.append
    )
    assert seen == outcomes
    assert [o.service for o in outcomes] == [good.name, bad.name], "stops at the failure"
    assert outcomes[0].error is None and outcomes[0].after == f"{tag}_good0001"
    error = outcomes[1].error or ""
    assert error.startswith("UndefinedTableError: ") and "no_such_table" in error
    assert "ballast:***@" in error, "names the database, not its password"

    conn = await asyncpg.connect(scratch_database)
    try:
        schemas = {
            r["nspname"]
            for r in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1", f"{tag}%"
            )
        }
        assert schemas == {good.schema}, "the failed schema's transaction is rolled back"
        await conn.execute(f'DROP SCHEMA "{good.schema}" CASCADE')
    finally:
        await conn.close()
