"""Shared facts for the offline checks of docker-compose.yml, deploy/Dockerfile and the chart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
CHART_DIR = REPO / "deploy" / "helm" / "ballast"

# The lead's conventions: service -> (ASGI app, port, source folder of the package).
SERVICES: dict[str, tuple[str, int, str]] = {
    "account-svc": ("account_svc.main:app", 8001, "services/account-svc/src"),
    "model-hub-svc": ("model_hub_svc.main:app", 8002, "services/model-hub-svc/src"),
    "rebalance-svc": ("rebalance_svc.main:app", 8003, "services/rebalance-svc/src"),
    "taxlot-svc": ("taxlot_svc.main:app", 8004, "services/taxlot-svc/src"),
    "custodian-gateway": ("custodian_gateway.main:app", 8005, "services/custodian-gateway/src"),
    "reporting-svc": ("reporting_svc.main:app", 8006, "services/reporting-svc/src"),
    "custodian-sim": ("custodian_sim.main:app", 8009, "tools/custodian-sim/src"),
}
PLATFORM_SERVICES = [name for name in SERVICES if name != "custodian-sim"]


def database_role(service: str) -> str:
    """The PostgreSQL role a service connects as in the deployments (scripts/services.py too)."""
    return "ballast_" + service.replace("-", "_")


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Resolve compose's ``${VAR:-default}`` the way compose would, VAR taken from ``env``
    (unset when ``env`` lacks it, or when no ``env`` is given). A required ``${VAR:?error}``
    takes VAR from ``env`` and stays as written while VAR is unset (compose would refuse)."""
    given = env or {}

    def resolve(match: re.Match[str]) -> str:
        name, operator, default = match.groups()
        if operator == "?":
            return given.get(name) or match.group(0)
        return given.get(name) or default or ""

    return _INTERPOLATION.sub(resolve, value)


_REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?")


def required_variables(text: str) -> list[str]:
    """The variables compose refuses to start without (``${VAR:?error}``), in order."""
    return list(dict.fromkeys(_REQUIRED.findall(text)))


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def module_source(app: str, src: str) -> Path:
    """Where the module of ``pkg.mod:attr`` lives under ``src`` (file may not exist yet)."""
    module = app.split(":")[0]
    return REPO / src / (module.replace(".", "/") + ".py")


_IMPORT_ALL = """
import importlib, json, sys, traceback
out = {}
for spec in sys.argv[1:]:
    module, attr = spec.split(":")
    try:
        app = getattr(importlib.import_module(module), attr, None)
        out[spec] = None if callable(app) else f"{module} has no callable ASGI app {attr!r}"
    except BaseException:
        out[spec] = traceback.format_exc()[-3000:]
print("@@IMPORTS@@" + json.dumps(out))
"""


def import_apps(
    apps: list[str], env: dict[str, str], python: str = sys.executable
) -> dict[str, str]:
    """Import every ``module:attr`` and return ``{app: error}`` for those that failed.

    All apps are imported in one fresh interpreter (each import costs seconds on 2 cores);
    an app that fails there is tried again alone, so two apps' globals cannot clash into a
    false failure.
    """
    result = subprocess.run(
        [python, "-c", _IMPORT_ALL, *apps],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("@@IMPORTS@@")]
    assert result.returncode == 0 and lines, f"importing {apps} crashed:\n{result.stderr[-3000:]}"
    outcome: dict[str, str | None] = json.loads(lines[-1].removeprefix("@@IMPORTS@@"))
    failed: dict[str, str] = {}
    for app, error in outcome.items():
        if error is None:
            continue
        alone = subprocess.run(
            [python, "-c", _IMPORT_ALL, app],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        if f'"{app}": null' not in alone.stdout:
            failed[app] = error
    return failed


_SPECS = """
import json
from alembic.script import ScriptDirectory
from ballast_common.migrations import alembic_config
from ballast_common.migrations.runner import SERVICE_PACKAGES, load_spec
out = {}
for package in SERVICE_PACKAGES:
    spec = load_spec(package)
    config = alembic_config(spec.schema, spec.migrations_dir, spec.metadata)
    out[spec.name] = {
        "package": package,
        "schema": spec.schema,
        "heads": sorted(ScriptDirectory.from_config(config).get_heads()),
        "consumer": bool(spec.subscriptions),
        "lanes": sorted({s.lane for s in spec.subscriptions if s.lane is not None}),
        "env_prefix": spec.settings_type.model_config.get("env_prefix", ""),
    }
print("@@SPECS@@" + json.dumps(out))
"""


@pytest.fixture(scope="session")
def service_specs() -> dict[str, dict[str, Any]]:
    """What each service's `main.spec` says (name, schema, migration heads, consumer lanes,
    settings prefix), read in a fresh interpreter from the packages `upgrade --all` migrates."""
    result = subprocess.run(
        [sys.executable, "-c", _SPECS],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    lines = [x for x in result.stdout.splitlines() if x.startswith("@@SPECS@@")]
    assert result.returncode == 0 and lines, f"reading the specs failed:\n{result.stderr[-3000:]}"
    specs: dict[str, dict[str, Any]] = json.loads(lines[-1].removeprefix("@@SPECS@@"))
    return specs
