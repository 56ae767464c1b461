"""The short chaos suite (issue 10): kill -9 the custodian gateway at a seeded point of a
model change over a tiny book, restart it, and compare the final book with an undisturbed run
of the same seed: no order executed twice, nothing lost or stuck, every account identical.
`make chaos` runs every fault (PostgreSQL and Kafka too) on a stack of its own.

Both runs share one running system on the shared stack; each book has ids of its own (the
same seeded book under another prefix), and accounts are compared by position.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from ballast_common.testing import issuer_for_tests

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PORT_BASE = int(os.environ.get("BALLAST_CHAOS_TEST_PORT_BASE", "18700"))
SEED = 6  # 8 accounts, 2 of them UMAs, 5 following the changed model
ACCOUNTS = 8
FAULTS = ("custodian-gateway",)  # orders out, fills in: where a duplicate would show


def _chaos() -> ModuleType:  # bench/chaos/chaos.py, imported by path
    spec = importlib.util.spec_from_file_location("ballast_chaos", ROOT / "bench/chaos/chaos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chaos = _chaos()


def _stack(*args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts/stack.py"), *args], check=True)


@pytest.fixture(scope="module")
def harness(stack_env: dict[str, str], kafka_bootstrap: str, topic_prefix: str) -> Iterator:
    """The six services and the simulator on a database and topic prefix of their own."""
    database = f"ballast_chaos_{os.getpid()}"
    _stack("dropdb", database)
    _stack("createdb", database)
    base = stack_env["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    harness = chaos.Harness(chaos.load_launcher(), f"chaos-{os.getpid()}", PORT_BASE)
    saved = dict(os.environ)
    os.environ.update(
        {
            "BALLAST_DATABASE_URL": f"{base}/{database}",
            "BALLAST_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "BALLAST_TOPIC_PREFIX": f"{topic_prefix}chaos.",
            "BALLAST_LOG_LEVEL": "WARNING",
            "BALLAST_AUTH_JWKS": str(issuer_for_tests().jwks_path),
            "CUSTODIAN_GATEWAY_CUSTODIAN_URL": harness.urls.custodian,
            "REBALANCE_SVC_CHUNK_SIZE": "2",
            "SIM_SEED": str(SEED),
            "SIM_LATENCY_MS": "100",
            "SIM_PARTIAL_FILL_PROBABILITY": "0.5",
        }
    )
    try:
        harness.start(timeout_s=240)
        yield harness
    finally:
        os.environ.clear()
        os.environ.update(saved)
        harness.stop()
        if not os.environ.get("KEEP_TEST_DB"):
            _stack("dropdb", database)


async def test_killing_the_gateway_mid_change_ends_as_the_undisturbed_run(
    harness, tmp_path: Path
) -> None:
    issuer = issuer_for_tests()
    say = print
    book = chaos.make_book(SEED, ACCOUNTS, label="CHB-")
    assert book.umas and book.following
    baseline = await chaos.run_scenario(
        harness, issuer, book, "baseline", None, tmp_path / "baseline", say=say
    )
    assert baseline.settled, baseline.open
    assert baseline.run["trades"] > 0
    results = []
    for number, fault in enumerate(FAULTS, 1):
        disturbed = chaos.make_book(SEED, ACCOUNTS, label=f"CH{number}-")
        point = chaos.kill_point(SEED, fault, baseline.run["proposals"], baseline.run["trades"])
        outcome = await chaos.run_scenario(
            harness, issuer, disturbed, fault, point, tmp_path / fault, say=say
        )
        results.append(chaos.verdict(baseline, outcome, disturbed.accounts))
    print(chaos.table(results))
    for result in results:
        assert result["kill"]["observed"], result  # the seeded point was reached
        assert (result["duplicates"], result["lost"], result["differing_accounts"]) == (0, 0, 0), (
            result
        )
        assert result["result"] == "pass", result
