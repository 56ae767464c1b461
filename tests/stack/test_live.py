"""scripts/stack.py against the real, running stack (`python3 scripts/stack.py up` first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STACK = [sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "stack.py")]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STACK, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module", autouse=True)
def _up() -> None:
    result = _run("up")
    assert result.returncode == 0, result.stderr


def test_status_reports_both_ready() -> None:
    result = _run("status")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["kafka", "running"], ["postgres", "running"]]
    assert all(ln.endswith("ready yes") for ln in lines)


def test_second_up_reuses() -> None:
    result = _run("up")
    assert result.returncode == 0, result.stderr
    assert all(ln.endswith("already running") for ln in result.stdout.splitlines())
    assert "fetching" not in result.stderr


def test_broker_is_registered(stack) -> None:
    cfg = stack.load_config()
    assert stack.kafka_probe("127.0.0.1", cfg.kafka_port) == [(1, "127.0.0.1", cfg.kafka_port)]


def test_createdb_dropdb_are_idempotent() -> None:
    name = f"stack_test_{os.getpid()}"
    assert _run("createdb", name).stdout.split()[-1] == "created"
    assert _run("createdb", name).stdout.split()[-2:] == ["already", "exists"]
    assert _run("dropdb", name).stdout.split()[-1] == "dropped"
    assert _run("dropdb", name).stdout.split()[-2:] == ["not", "exist"]
