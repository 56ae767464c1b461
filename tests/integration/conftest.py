"""Starts the six services and the custodian simulator as separate processes against the
real Kafka broker and PostgreSQL, once for the integration tests of this folder."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from ballast_common.testing import issuer_for_tests
from ballast_demo.driver import Urls

ROOT = Path(__file__).resolve().parents[2]
PORT_BASE = int(os.environ.get("BALLAST_TEST_PORT_BASE", "18600"))


def _launcher():  # scripts/services.py, imported by path
    spec = importlib.util.spec_from_file_location(
        "ballast_services", ROOT / "scripts" / "services.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces") / "spans.jsonl"


@pytest.fixture(scope="session")
def system_topic_prefix(topic_prefix: str) -> str:
    """Topics of the running system, apart from those package tests write to."""
    return f"{topic_prefix}sys."


# Two instances of every consumer service: the flow is proven on consumer groups, and the
# kill test takes one of each away mid-run.
REPLICAS = {"all": 2}


@dataclass(frozen=True)
class System:
    """The running services: their URLs, and the launcher to kill and restart instances."""

    urls: Urls
    launcher: ModuleType
    profile: str

    def instance_urls(self, service: str) -> list[str]:
        """Every instance's URL: a consumer's work lands on whichever instance took it."""
        return [i.url(PORT_BASE) for i in self.launcher.plan(REPLICAS) if i.service.name == service]

    def restore(self) -> None:
        """Start again any instance that is not running (after a kill)."""
        self.launcher.up(self.profile, PORT_BASE, timeout_s=180, quiet=True, replicas=REPLICAS)


@pytest.fixture(scope="session")
def running_services(system: System) -> Urls:
    return system.urls


@pytest.fixture(scope="session")
def system(
    system_database_url: str, kafka_bootstrap: str, system_topic_prefix: str, trace_file: Path
) -> Iterator[System]:
    launcher = _launcher()
    profile = f"itest-{os.getpid()}"
    saved = dict(os.environ)
    os.environ.update(
        {
            "BALLAST_DATABASE_URL": system_database_url,
            "BALLAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "BALLAST_TOPIC_PREFIX": system_topic_prefix,
            "BALLAST_TRACE_FILE": str(trace_file),
            "BALLAST_AUTH_JWKS": str(issuer_for_tests().jwks_path),
            "SIM_LATENCY_MS": "20",
            "SIM_PARTIAL_FILL_PROBABILITY": "0.5",
            "CUSTODIAN_GATEWAY_CUSTODIAN_URL": f"http://127.0.0.1:{PORT_BASE + 9}",
            # small chunks: a run of a few dozen accounts spreads over both instances
            "REBALANCE_SVC_CHUNK_SIZE": "4",
        }
    )
    try:
        launcher.up(profile, PORT_BASE, timeout_s=240, quiet=True, replicas=REPLICAS)
        yield System(Urls.on_port_base(PORT_BASE), launcher, profile)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        launcher.down(profile)


@dataclass(frozen=True)
class OwnSystem:
    """A system of one test module alone (a database, topic prefix and ports of its own): its
    URLs and database, and the launcher and profile to kill and restart its instances."""

    urls: Urls
    database_url: str
    launcher: ModuleType
    profile: str


def _stack(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "stack.py"), *args], check=True)


StartOwnSystem = Callable[[str, int, Mapping[str, str]], AbstractContextManager[OwnSystem]]


@pytest.fixture(scope="session")
def start_own_system(
    stack_env: dict[str, str],
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> StartOwnSystem:
    """`start(label, port_base, env)`: the six services and the custodian simulator as
    processes of one test module, on ports from `port_base`, a database and topic prefix
    named by `label`, `env` over the usual settings; stopped (and the database dropped,
    unless KEEP_TEST_DB) when the block ends."""

    @contextmanager
    def start(label: str, port_base: int, env: Mapping[str, str]) -> Iterator[OwnSystem]:
        launcher = _launcher()
        name = f"ballast_{label}_{os.getpid()}"
        _stack("dropdb", name)
        _stack("createdb", name)
        base_url = stack_env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
        database_url = f"{base_url}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
        profile = f"itest-{label}-{os.getpid()}"
        saved = dict(os.environ)
        os.environ.update(
            {
                "BALLAST_DATABASE_URL": database_url,
                "BALLAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "BALLAST_TOPIC_PREFIX": f"{topic_prefix}{label}.",
                "BALLAST_TRACE_FILE": str(tmp_path_factory.mktemp("traces") / "spans.jsonl"),
                "BALLAST_AUTH_JWKS": str(issuer_for_tests().jwks_path),
                "CUSTODIAN_GATEWAY_CUSTODIAN_URL": f"http://127.0.0.1:{port_base + 9}",
                **env,
            }
        )
        try:
            launcher.up(profile, port_base, timeout_s=240, quiet=True)
            yield OwnSystem(Urls.on_port_base(port_base), database_url, launcher, profile)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            launcher.down(profile)
            if not os.environ.get("KEEP_TEST_DB"):
                _stack("dropdb", name)

    return start
