"""Fixtures for tests that need the real stack: PostgreSQL and Kafka from scripts/stack.py.

Any test using `database_url` or `kafka_bootstrap` must be marked `integration`. The stack is
started (or reused) once per session; each session gets a fresh database and topic prefix.

Property tests (hypothesis) are derandomized when CI=true: the same examples every run, so
CI fails only on a change, never by luck. Locally they search at random and keep what they
find in .hypothesis/; HYPOTHESIS_PROFILE=deep searches ten times longer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("deep", max_examples=1000, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "default")
)

ROOT = Path(__file__).parent
STACK = [sys.executable, str(ROOT / "scripts" / "stack.py")]


def _stack(*args: str) -> str:
    result = subprocess.run([*STACK, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"stack.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


# The stack's Kafka principal settings (the admin on the SASL listener): exported into this
# process so every ServiceSettings and every service launched by scripts/services.py sees them.
KAFKA_AUTH_SETTINGS = (
    "BALLAST_KAFKA_SECURITY_PROTOCOL",
    "BALLAST_KAFKA_SASL_MECHANISM",
    "BALLAST_KAFKA_USERNAME",
    "BALLAST_KAFKA_PASSWORD",
    "BALLAST_STATE_DIR",
)


@pytest.fixture(scope="session")
def stack_env() -> dict[str, str]:
    """Start (or reuse) the local Kafka broker and PostgreSQL; return their settings."""
    _stack("up")
    env: dict[str, str] = {}
    for line in _stack("env").splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    os.environ.update({k: env[k] for k in KAFKA_AUTH_SETTINGS if k in env})
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_env: dict[str, str]) -> str:
    return stack_env.get("BALLAST_KAFKA_BOOTSTRAP_SERVERS") or stack_env["BALLAST_KAFKA_BOOTSTRAP"]


@pytest.fixture(scope="session")
def kafka_connection(stack_env: dict[str, str], kafka_bootstrap: str) -> Any:
    """The stack's admin principal as a `ballast_common.bus.KafkaConnection`."""
    from ballast_common.bus import KafkaConnection
    from pydantic import SecretStr

    return KafkaConnection(
        kafka_bootstrap,
        stack_env.get("BALLAST_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        stack_env.get("BALLAST_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        stack_env.get("BALLAST_KAFKA_USERNAME", ""),
        SecretStr(stack_env.get("BALLAST_KAFKA_PASSWORD", "")),
    )


@pytest.fixture(scope="session")
def kafka_client_options(kafka_connection: Any) -> dict[str, Any]:
    """Keyword arguments for a raw aiokafka client of a test (the stack's admin)."""
    return dict(kafka_connection.client_options())


def _fresh_database(stack_env: dict[str, str], name: str) -> str:
    _stack("dropdb", name)
    _stack("createdb", name)
    base = stack_env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(scope="session")
def database_url(stack_env: dict[str, str]) -> Iterator[str]:
    """A fresh database for this test session's package tests (dropped at the end unless
    KEEP_TEST_DB=1). Tests of different packages share it, each in its service's schema."""
    name = f"ballast_test_{os.getpid()}"
    yield _fresh_database(stack_env, name)
    if not os.environ.get("KEEP_TEST_DB"):
        _stack("dropdb", name)


@pytest.fixture(scope="session")
def system_database_url(stack_env: dict[str, str]) -> Iterator[str]:
    """A database of its own for the whole running system (tests/integration), so no state
    left by package tests (a poll cursor, an inbox) can leak into it."""
    name = f"ballast_system_{os.getpid()}"
    yield _fresh_database(stack_env, name)
    if not os.environ.get("KEEP_TEST_DB"):
        _stack("dropdb", name)


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}."
