"""`make chaos`: kill -9 each service, the custodian simulator, PostgreSQL and Kafka at a
seeded point of a model change, restart it, and compare the final book with an undisturbed run
of the same seed.

    .venv/bin/python bench/chaos/run_chaos.py [--seed 7] [--faults taxlot-svc,kafka]
        [--accounts 48] [--out bench/results/chaos.json] [--keep-stack]

Everything runs on a stack of its own (state in /tmp/ballast-chaos, Kafka on 29392/29393,
PostgreSQL on 25632, services from port 28700), never on the shared one, and is stopped at
the end. Every scenario (the baseline, then each fault) gets a fresh database and topic prefix,
the same book and the same model change. The fault `none` (run last by default) is a control:
a second undisturbed run, which shows what differs between two runs without any fault. JSON
results go to --out; the exit status is 1 if a fault that is not a known failure lost,
duplicated or changed anything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ballast_common.auth import local_issuer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos

ROOT = chaos.ROOT
PROFILE = "chaos"
SIM_SETTINGS = {
    # each piece of a fill 0.5-1.5 s after the last: the fills of a change spread over seconds,
    # so a fault can strike between them (with 0.2-0.3 s they came in one burst)
    "SIM_LATENCY_MS": "500",
    "SIM_LATENCY_JITTER_MS": "1000",
    "SIM_PARTIAL_FILL_PROBABILITY": "0.5",
}
REBALANCE_CHUNK_SIZE = "4"  # a run of a few dozen accounts is several chunks


def stack(args: argparse.Namespace) -> dict[str, str]:
    """The environment that points scripts/stack.py at the chaos suite's own stack."""
    return {
        "BALLAST_STATE_DIR": args.state_dir,
        "BALLAST_KAFKA_PORT": str(args.kafka_port),
        "BALLAST_KAFKA_CONTROLLER_PORT": str(args.controller_port),
        "BALLAST_PG_PORT": str(args.pg_port),
        "BALLAST_KAFKA_SASL_PORT": str(args.kafka_sasl_port),
        # Durable, as in production: with fsync off stack.py also turns synchronous_commit
        # off, and a kill -9 of PostgreSQL then loses commits it had acknowledged (consumers
        # had committed their Kafka offsets after them): a fault of the test cluster.
        "BALLAST_PG_FSYNC": "on",
    }


def stack_command(env: dict[str, str], *command: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/stack.py"), *command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"chaos: stack.py {' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


KAFKA_SETTINGS = (
    "BALLAST_KAFKA_BOOTSTRAP_SERVERS",
    "BALLAST_KAFKA_SECURITY_PROTOCOL",
    "BALLAST_KAFKA_SASL_MECHANISM",
    "BALLAST_KAFKA_USERNAME",
    "BALLAST_KAFKA_PASSWORD",
)


def kafka_settings(env: dict[str, str]) -> dict[str, str]:
    """The chaos stack's Kafka settings (SASL as its admin; scripts/services.py then gives
    each service its own principal)."""
    exported = {}
    for line in stack_command(env, "env").splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        exported[name] = shlex.split(value)[0] if value else ""
    return {name: exported[name] for name in KAFKA_SETTINGS}


class Progress:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def line(self, scenario: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f} s] {scenario:<18} {text}", flush=True)


async def scenario(
    args: argparse.Namespace,
    env: dict[str, str],
    number: int,
    fault: str,
    point: chaos.KillPoint | None,
    book: chaos.Book,
    progress: Progress,
) -> chaos.Outcome:
    """One run on a fresh database and topic prefix, with fresh services."""
    launcher = chaos.load_launcher()
    harness = chaos.Harness(launcher, PROFILE, args.port_base, stack_env=env)
    harness.stop()
    database = f"chaos_{number}"
    stack_command(env, "dropdb", database)
    stack_command(env, "createdb", database)
    # The simulator's book, kept across its kill -9 and restart, fresh for each scenario.
    sim_store = Path(args.state_dir) / "custodian-sim" / f"{database}.sqlite3"
    for stale in (sim_store, *(sim_store.with_name(sim_store.name + s) for s in ("-wal", "-shm"))):
        stale.unlink(missing_ok=True)
    issuer = local_issuer(Path(args.state_dir) / "auth")
    os.environ.update(
        {
            **env,
            "BALLAST_DATABASE_URL": f"postgresql://ballast:ballast@127.0.0.1:{args.pg_port}/{database}",
            **kafka_settings(env),
            "BALLAST_TOPIC_PREFIX": f"chaos{number}{uuid.uuid4().hex[:6]}.",
            "BALLAST_LOG_LEVEL": "WARNING",
            "BALLAST_AUTH_JWKS": str(issuer.jwks_path),
            "CUSTODIAN_GATEWAY_CUSTODIAN_URL": harness.urls.custodian,
            "REBALANCE_SVC_CHUNK_SIZE": REBALANCE_CHUNK_SIZE,
            "SIM_SEED": str(args.seed),
            "SIM_STORE_PATH": str(sim_store),
            **SIM_SETTINGS,
        }
    )
    progress.line(fault, f"starting the services on database {database}")
    try:
        harness.start()
        with tempfile.TemporaryDirectory(prefix="chaos-book-") as workdir:
            return await chaos.run_scenario(
                harness,
                issuer,
                book,
                fault,
                point,
                Path(workdir),
                say=lambda text: progress.line(fault, text),
                # a known failure never settles: no need to wait the whole timeout for it
                settle_timeout_s=min(args.settle_timeout, 90)
                if fault in chaos.EXPECTED_FAILURES
                else args.settle_timeout,
            )
    finally:
        harness.stop()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - {*chaos.FAULTS, chaos.CONTROL})
    if unknown:
        raise SystemExit(
            f"chaos: unknown fault(s) {unknown}; known: {', '.join(chaos.FAULTS)}, none"
        )
    env = stack(args)
    os.environ.update(env)  # scripts/services.py keeps its state under BALLAST_STATE_DIR
    progress = Progress()
    progress.line("stack", f"starting the chaos stack in {args.state_dir}")
    # The suite's broker is throwaway: fresh storage every run (so a stack left by an older
    # version, e.g. one formatted before the broker had principals, never stands in the way).
    stack_command(env, "down")
    shutil.rmtree(Path(args.state_dir) / "kafka" / "data", ignore_errors=True)
    stack_command(env, "up")
    book = chaos.make_book(args.seed, args.accounts)
    progress.line(
        "book",
        f"seed {args.seed}: {len(book.accounts)} accounts, {book.umas} UMAs, "
        f"{book.following} follow {book.change.model_id}",
    )
    results: list[dict[str, Any]] = []
    try:
        baseline = await scenario(args, env, 0, "baseline", None, book, progress)
        if not baseline.settled:
            raise SystemExit(f"chaos: the undisturbed run did not settle: {baseline.open}")
        progress.line(
            "baseline",
            f"settled in {baseline.timings['change_to_settled_s']} s: "
            f"{baseline.run['proposals']} proposals, {baseline.run['trades']} trades",
        )
        for number, fault in enumerate(faults, 1):
            point = None
            if fault != chaos.CONTROL:
                point = chaos.kill_point(
                    args.seed, fault, baseline.run["proposals"], baseline.run["trades"]
                )
            outcome = await scenario(args, env, number, fault, point, book, progress)
            result = chaos.verdict(baseline, outcome, book.accounts)
            results.append(result)
            progress.line(
                fault,
                f"{result['result']}: {result['duplicates']} duplicates, {result['lost']} lost, "
                f"{result['differing_accounts']} differing accounts",
            )
    finally:
        if not args.keep_stack:
            progress.line("stack", "stopping the chaos stack")
            stack_command(env, "down")

    failed = [r["fault"] for r in results if r["result"] == "FAIL"]
    report = {
        "benchmark": "chaos",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "seed": args.seed,
        "book": {
            "accounts": len(book.accounts),
            "umas": book.umas,
            "following_the_change": book.following,
            "change": book.change.model_id,
        },
        "settings": {**SIM_SETTINGS, "REBALANCE_SVC_CHUNK_SIZE": REBALANCE_CHUNK_SIZE},
        "compared": "per account: each security's quantity and total cost basis, cash and a "
        "UMA's cash per sleeve (lot counts may differ with partial fills, so are not compared)",
        "baseline": {
            "run": baseline.run,
            "change_to_settled_s": baseline.timings["change_to_settled_s"],
            "custodian": baseline.custodian,
        },
        "faults": results,
        "summary": {
            "passed": [r["fault"] for r in results if r["result"] == "pass"],
            "failed": failed,
            "expected_failures": [r["fault"] for r in results if r["result"] == "expected_failure"],
        },
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 7))
    parser.add_argument(
        "--faults",
        default=os.environ.get("FAULTS") or ",".join((*chaos.FAULTS, chaos.CONTROL)),
        help=f"comma-separated, of: {', '.join(chaos.FAULTS)}, none (a control run); all by "
        "default",
    )
    parser.add_argument("--accounts", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "bench/results/chaos.json"))
    parser.add_argument("--port-base", type=int, default=28700)
    parser.add_argument("--state-dir", default="/tmp/ballast-chaos")
    parser.add_argument("--kafka-port", type=int, default=29392)
    parser.add_argument("--controller-port", type=int, default=29393)
    parser.add_argument("--kafka-sasl-port", type=int, default=29394)
    parser.add_argument("--pg-port", type=int, default=25632)
    parser.add_argument("--settle-timeout", type=float, default=240.0)
    parser.add_argument("--keep-stack", action="store_true", help="leave the chaos stack running")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(chaos.table(report["faults"]))
    print(f"\nresults in {out}")
    return 1 if report["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
