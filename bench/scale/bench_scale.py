"""`make bench-scale`: a generated book through Ballast on the real stack, stage by stage,
against the floor of Kafka and Postgres measured in the same run. A benchmark, not a test.

    python bench/scale/bench_scale.py [--accounts 100000] [--replicas all=2] [--out ...]
    ACCOUNTS=2000 make bench-scale        # a quick run

Stages (issue 8's table):
  load      `ballast book load` of the book's files, until rebalance-svc and reporting-svc
            hold every account's holdings;
  custodian (`--custodian-day`, `make bench-custodian`) the book as the custodian's daily
            files, checked offline, uploaded and reconciled lot by lot (custodian_day.py);
  scan      POST /scans over the whole book until the run's last chunk is done;
  propose   a model change until every proposal is persisted and published (the run's
            last chunk done);
  orders    until every approved trade is in a block order sent to the custodian;
  settle    until every fill is allocated, applied to lots, and reporting is current.
And the floor: raw Kafka produce+consume of as many messages of the flow's size, raw
Postgres COPY of the book's lots; each stage as a ratio of its floor. The peak RSS of every
process comes from the kernel (VmHWM); the load's CPU seconds per process (each service,
and the database's server processes) from /proc, and the seconds the database spent in
statements (pg_stat_database.active_time), since the machine is often shared; the same CPU
readings for the scan, the proposals and the whole model change, and for the load and the
model change the statements the database spent the most time in (pg_stat_statements, which
scripts/stack.py preloads), with the role that ran them. `--stop-after load|custodian|scan|propose`
ends early. BALLAST_KAFKA_* settings in the environment win over the stack's. Results:
bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from ballast_cli.book import Reporter, load_folder
from ballast_common.auth import Role, local_issuer
from ballast_common.bus import KafkaConnection
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import custodian_day  # noqa: E402
import make_book  # noqa: E402

DATABASE = "ballast_scale"
PROFILE = "scale"


def _launcher() -> Any:
    spec = importlib.util.spec_from_file_location("ballast_services", ROOT / "scripts/services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _stack_env() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "scripts/stack.py", "env"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    env = {}
    for line in out.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    return env


def _stack(*args: str) -> None:
    subprocess.run(
        [sys.executable, "scripts/stack.py", *args], cwd=ROOT, check=True, capture_output=True
    )


class Clock:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def stage(self, name: str, started: float) -> float:
        took = round(time.monotonic() - started, 2)
        self.stages[name] = took
        print(f"  {name:<8} {took:>8.1f} s", flush=True)
        return took


class StepTimes(Reporter):
    """Seconds from the start of the load to the end of each of its steps."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.ends: dict[str, float] = {}

    def step(self, text: str) -> Any:
        self.ends.setdefault("uploaded", round(time.monotonic() - self.started, 2))
        return text

    def step_done(self, handle: Any) -> None:
        self.ends[str(handle)] = round(time.monotonic() - self.started, 2)


async def wait(what: str, check: Any, timeout_s: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-scale: {what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(every)


async def kafka_floor(kafka: KafkaConnection, count: int, size: int) -> dict[str, Any]:
    """Produce then consume `count` messages of `size` bytes (acks=all, idempotent)."""
    topic = f"scalefloor{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )
    await producer.start()
    payload = b"x" * size
    started = time.monotonic()
    try:
        pending = [
            await producer.send(topic, payload, key=str(i % 997).encode()) for i in range(count)
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    produced = time.monotonic() - started
    consumer = AIOKafkaConsumer(
        topic,
        **kafka.client_options(),
        auto_offset_reset="earliest",
        group_id=topic,
        enable_auto_commit=False,
    )
    await consumer.start()
    seen = 0
    started = time.monotonic()
    try:
        while seen < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    consumed = time.monotonic() - started
    return {
        "messages": count,
        "bytes_each": size,
        "produce_s": round(produced, 2),
        "consume_s": round(consumed, 2),
        "messages_per_s": round(count / (produced + consumed)),
    }


async def postgres_floor(dsn: str, lots: Path) -> dict[str, Any]:
    """COPY the book's lots file into a plain table: the most a set-based load can do."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "DROP TABLE IF EXISTS scale_floor; CREATE TABLE scale_floor (account_id text, "
            "symbol text, lot_id text, quantity numeric, acquired_on date, cost_basis numeric, "
            "sleeve_id text)"
        )
        started = time.monotonic()
        with lots.open("rb") as f:
            status = await conn.copy_to_table("scale_floor", source=f, format="csv", header=True)
        took = time.monotonic() - started
        await conn.execute("DROP TABLE scale_floor")
    finally:
        await conn.close()
    rows = int(status.split()[-1])
    return {"rows": rows, "copy_s": round(took, 2), "rows_per_s": round(rows / took)}


def cpu_seconds(launcher: Any, profile: str = PROFILE) -> dict[str, float]:
    """Each process's CPU seconds so far (user + system, its waited-for children included)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for service, replicas in launcher.pids(profile).items():
        for replica, pid in replicas.items():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            name = service if replica == 0 else f"{service}.{replica}"
            out[name] = sum(int(f) for f in fields[11:15]) / tick
    return out


async def database_active_s(dsn: str) -> float:
    """Seconds the database's sessions spent running statements (pg_stat_database)."""
    await asyncio.sleep(11)  # an idle session reports its times within 10 s
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT active_time FROM pg_stat_database WHERE datname = $1", DATABASE
        )
    finally:
        await conn.close()
    return round(float(value or 0) / 1000, 2)


async def reset_statements(dsn: str) -> bool:
    """Start counting the database's statements afresh (pg_stat_statements, which the local
    stack preloads); False when the server has no such module."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def top_statements(
    dsn: str, limit: int = 15, database: str = DATABASE
) -> list[dict[str, Any]]:
    """The statements the benchmark's database spent the most time in since the reset: the
    user (which service), calls, total and mean milliseconds, rows, and the text's start."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT r.rolname AS role, s.calls, s.total_exec_time AS total_ms,
                   s.mean_exec_time AS mean_ms, s.rows, s.query
              FROM pg_stat_statements s
              JOIN pg_database d ON d.oid = s.dbid AND d.datname = $1
              JOIN pg_roles r ON r.oid = s.userid
             ORDER BY s.total_exec_time DESC LIMIT $2
            """,
            database,
            limit,
        )
    except asyncpg.PostgresError:
        return []
    finally:
        await conn.close()
    return [
        {
            "role": r["role"],
            "calls": r["calls"],
            "total_ms": round(r["total_ms"], 1),
            "mean_ms": round(r["mean_ms"], 3),
            "rows": r["rows"],
            "query": " ".join(r["query"].split())[:240],
        }
        for r in rows
    ]


def _cpu_of(pid: int) -> float | None:
    """A process's CPU seconds (user + system) so far, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:13]) / os.sysconf("SC_CLK_TCK")


async def database_cpu(dsn: str, database: str = DATABASE) -> dict[int, float]:
    """CPU seconds of each server process of the benchmark's database (Postgres runs on
    this machine); a backend that ends between two readings is missed."""
    conn = await asyncpg.connect(dsn)
    try:
        pids = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return {r["pid"]: cpu for r in pids if (cpu := _cpu_of(r["pid"])) is not None}


def database_cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    return round(sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), 2)


async def stage_cpu(
    launcher: Any,
    dsn: str,
    before: dict[str, float],
    database_before: dict[int, float],
    profile: str = PROFILE,
    database: str = DATABASE,
) -> dict[str, float]:
    """CPU seconds each process (and PostgreSQL's backends) used since `before`."""
    used = cpu_used(before, cpu_seconds(launcher, profile))
    used["postgres"] = database_cpu_used(database_before, await database_cpu(dsn, database))
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: round(after[name] - before.get(name, 0.0), 2) for name in sorted(after)}


def peak_rss(launcher: Any, profile: str = PROFILE) -> dict[str, int]:
    """Each process's peak resident memory (VmHWM), in MiB."""
    out: dict[str, int] = {}
    for service, replicas in launcher.pids(profile).items():
        for replica, pid in replicas.items():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    name = service if replica == 0 else f"{service}.{replica}"
                    out[name] = int(line.split()[1]) // 1024
    return out


@dataclass
class System:
    """The stack and the services a benchmark runs on, in a database of its own."""

    launcher: Any
    urls: dict[str, str]
    database_url: str
    kafka: KafkaConnection
    issuer: Any
    topic_prefix: str
    replicas: dict[str, str]

    def url(self, name: str) -> str:
        return str(self.urls[name])


async def start_system(
    database: str,
    profile: str,
    port_base: int,
    replicas_given: str,
    log_statements_ms: int | None = None,
    topic_prefix: str = "scale",
) -> System:
    """The stack up, `database` made afresh, and the services of `profile` started on it
    (their Kafka topics under a fresh prefix)."""
    # Kafka settings given to the benchmark win over the stack's (e.g. a plaintext listener)
    given = {k: v for k, v in os.environ.items() if k.startswith("BALLAST_KAFKA_")}
    stack = {**_stack_env(), **given}
    _stack("up")
    launcher = _launcher()
    launcher.down(profile)
    _stack("dropdb", database)
    _stack("createdb", database)
    base = stack["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    database_url = f"{base}/{database}"
    if log_statements_ms is not None:  # into the stack's postgres.log
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                f"ALTER DATABASE {database} SET log_min_duration_statement = "
                f"{int(log_statements_ms)}"
            )
        finally:
            await conn.close()
    bootstrap = stack.get("BALLAST_KAFKA_BOOTSTRAP_SERVERS") or stack["BALLAST_KAFKA_BOOTSTRAP"]
    kafka = KafkaConnection(
        bootstrap,
        stack.get("BALLAST_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper(),
        stack.get("BALLAST_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512").upper(),
        stack.get("BALLAST_KAFKA_USERNAME", ""),
        SecretStr(stack.get("BALLAST_KAFKA_PASSWORD", "")),
    )
    issuer = local_issuer(Path(stack["BALLAST_AUTH_KEYS"]))
    prefix = f"{topic_prefix}{datetime.now(UTC):%H%M%S}."
    # the stack's Kafka settings (under SASL the launcher gives each service its principal)
    os.environ.update({k: v for k, v in stack.items() if k.startswith("BALLAST_KAFKA_")})
    os.environ.update(
        {
            "BALLAST_DATABASE_URL": database_url,
            "BALLAST_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "BALLAST_TOPIC_PREFIX": prefix,
            "BALLAST_LOG_LEVEL": "WARNING",
            "SIM_LATENCY_MS": "20",
            "BALLAST_AUTH_JWKS": str(issuer.jwks_path),
        }
    )
    replicas = dict(r.split("=") for r in replicas_given.split(",")) if replicas_given else {}
    print("starting the services ...", flush=True)
    urls = launcher.up(
        profile,
        port_base,
        timeout_s=300,
        quiet=True,
        replicas={k: int(v) for k, v in replicas.items()},
    )
    return System(launcher, urls, database_url, kafka, issuer, prefix, replicas)


async def publish_models(
    http: httpx.AsyncClient, system: System, book_root: Path, folder: Path
) -> dict[str, Any]:
    """The book's securities (at its prices) and models through model-hub-svc, until
    account-svc knows every model; returns the models."""
    url = system.url
    models: dict[str, Any] = json.loads((book_root / "models.json").read_text())
    securities: list[dict[str, Any]] = []
    for line in (folder / "securities.csv").read_text().splitlines()[1:]:
        symbol, name, asset, sector, _ = line.split(",")
        securities.append(
            {
                "symbol": symbol,
                "name": name,
                "asset_class": asset,
                "sector": sector,
                "price": "1",
                "fractional_eligible": True,
            }
        )
    prices = dict(line.split(",") for line in (folder / "prices.csv").read_text().splitlines()[1:])
    for s in securities:
        s["price"] = prices[s["symbol"]]
    (
        await http.put(f"{url('model-hub-svc')}/securities", json={"securities": securities})
    ).raise_for_status()
    for model_id, model in models.items():
        body = {
            "name": model["name"],
            "targets": [{"symbol": s, "weight": w} for s, w in model["targets"].items()],
        }
        (await http.put(f"{url('model-hub-svc')}/models/{model_id}", json=body)).raise_for_status()
    await models_known(http, system, set(models))
    return models


async def models_known(http: httpx.AsyncClient, system: System, model_ids: set[str]) -> None:
    """Wait until account-svc has learnt every one of the models (from model-changed)."""

    async def known() -> bool:
        listed = await http.get(f"{system.url('account-svc')}/models", params={"limit": 5000})
        return model_ids <= {m["model_id"] for m in listed.json()["items"]}

    await wait("account-svc learning the models", known, max(60, len(model_ids) / 10), 0.2)


async def load_book(
    http: httpx.AsyncClient, system: System, folder: Path, token: str, accounts: int
) -> tuple[float, StepTimes, float]:
    """`ballast book load` of the book's folder until rebalance-svc and reporting-svc hold
    every account's holdings: (seconds the load took to apply, its steps, seconds until
    rebalance-svc held every account)."""
    url = system.url
    book_urls = {s: url(s) for s in ("model-hub-svc", "account-svc", "taxlot-svc")}
    started = time.monotonic()
    steps = StepTimes()
    outcome = await load_folder(folder, book_urls, token=token, reporter=steps)
    if outcome.problems:
        raise SystemExit(f"bench-scale: the book is not valid: {outcome.problems[:5]}")
    applied_s = round(time.monotonic() - started, 2)
    print(f"  book load steps (s from start): {steps.ends}", flush=True)

    async def read_models_current() -> bool:
        state = (await http.get(f"{url('rebalance-svc')}/read-model")).json()
        return bool(state["accounts_with_holdings"] >= accounts)

    await wait("rebalance-svc holding every account", read_models_current, 3600)
    rebalance_current_s = round(time.monotonic() - started, 2)
    print(f"  rebalance-svc held every account's holdings at {rebalance_current_s} s", flush=True)
    reporting_db = await asyncpg.connect(system.database_url.replace("+asyncpg", ""))

    async def reporting_current() -> bool:
        held = await reporting_db.fetchval("SELECT count(*) FROM reporting.holdings")
        return bool(held >= accounts)

    try:
        await wait("reporting-svc holding every account", reporting_current, 3600)
    finally:
        await reporting_db.close()
    return applied_s, steps, rebalance_current_s


async def run(args: argparse.Namespace) -> dict[str, Any]:
    clock = Clock()
    book_root = book_folder(args.accounts, args.seed)
    folder = book_root / make_book.AS_OF
    lots_rows = sum(1 for _ in (folder / "lots.csv").open()) - 1
    positions_rows = sum(1 for _ in (folder / "positions.csv").open()) - 1

    system = await start_system(
        DATABASE, PROFILE, args.port_base, args.replicas, args.log_statements_ms
    )
    launcher, database_url, replicas = system.launcher, system.database_url, system.replicas
    # The benchmark acts as the tenant's operations desk and model manager.
    roles = [Role.OPERATIONS, Role.MODEL_MANAGER, Role.PLATFORM_OPERATOR]  # the book has securities
    token = system.issuer.issue("demo", roles, "bench@demo", 12 * 3600)
    url = system.url

    print("measuring the floor ...", flush=True)
    floor_kafka = await kafka_floor(system.kafka, args.floor_messages, 780)
    floor_pg = await postgres_floor(database_url.replace("+asyncpg", ""), folder / "lots.csv")

    http = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10), headers={"Authorization": f"Bearer {token}"}
    )
    await publish_models(http, system, book_root, folder)

    print(f"book: {args.accounts:,} accounts, {positions_rows:,} positions, {lots_rows:,} lots")
    plain_dsn = database_url.replace("+asyncpg", "")
    cpu_before = cpu_seconds(launcher)
    database_before = await database_active_s(plain_dsn)
    database_cpu_before = await database_cpu(plain_dsn)
    await reset_statements(plain_dsn)
    started = time.monotonic()
    applied_s, steps, rebalance_current_s = await load_book(
        http, system, folder, token, args.accounts
    )
    clock.stage("load", started)
    load_cpu_s = await stage_cpu(launcher, plain_dsn, cpu_before, database_cpu_before)
    load_database_s = round(await database_active_s(plain_dsn) - database_before, 2)
    print(f"  cpu s per process: {load_cpu_s}; database statements {load_database_s} s")
    load_statements = await top_statements(plain_dsn)
    custodian: dict[str, Any] | None = None
    if args.custodian_day:
        print("the custodian's day: files, offline check, upload and reconciliation ...")
        custodian = await custodian_day.measure(
            folder,
            ROOT / ".state" / "bench" / "custodian" / f"{args.accounts}-{args.seed}",
            date.fromisoformat(make_book.AS_OF),
            url("taxlot-svc"),
            token,
            StepTimes,
        )
        print(f"  {json.dumps({k: v for k, v in custodian.items() if k.endswith('_s')})}")

    async def stop_early(stage: str, measured: dict[str, Any]) -> dict[str, Any]:
        """`--stop-after stage`: what was measured so far, the services stopped (not --keep)."""
        memory = peak_rss(launcher)
        await http.aclose()
        if not args.keep:
            launcher.down(PROFILE)
        return {
            "benchmark": "scale",
            "stopped_after": stage,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "book": {"accounts": args.accounts, "positions": positions_rows, "lots": lots_rows},
            "stages_s": clock.stages,
            **measured,
            "load_cpu_s": load_cpu_s,
            "load_top_statements": load_statements,
            "peak_rss_mib": memory,
        }

    if args.stop_after in ("load", "custodian"):
        return await stop_early(
            args.stop_after,
            {
                "book_load_applied_s": applied_s,
                "book_load_steps_s": steps.ends,
                "load_rebalance_current_s": rebalance_current_s,
                "load_database_active_s": load_database_s,
                "floor": {"postgres_copy": floor_pg},
                **({"custodian_day": custodian} if custodian else {}),
            },
        )

    cpu_before = cpu_seconds(launcher)
    database_cpu_before = await database_cpu(plain_dsn)
    started = time.monotonic()
    scan = (await http.post(f"{url('rebalance-svc')}/scans", json={})).json()
    await wait("the scan", lambda: _run_complete(http, url("rebalance-svc"), scan["run_id"]), 3600)
    clock.stage("scan", started)
    scan_cpu_s = await stage_cpu(launcher, plain_dsn, cpu_before, database_cpu_before)
    print(f"  cpu s per process: {scan_cpu_s}")
    if args.stop_after == "scan":
        return await stop_early("scan", {"scan_cpu_s": scan_cpu_s})

    cpu_before = cpu_seconds(launcher)
    database_cpu_before = await database_cpu(plain_dsn)
    await reset_statements(plain_dsn)
    change = make_book.changed_core()
    body = {
        "name": change.name,
        "targets": [{"symbol": s, "weight": w} for s, w in change.targets().items()],
    }
    started = time.monotonic()
    published = (await http.put(f"{url('model-hub-svc')}/models/core", json=body)).json()

    async def the_run() -> dict[str, Any] | None:
        runs = (
            await http.get(
                f"{url('rebalance-svc')}/runs",
                params={"model_id": "core", "model_version": published["version"]},
            )
        ).json()["items"]
        return runs[0] if runs else None

    run_id = (await wait("the model change's run", the_run, 600, 0.2))["run_id"]
    run_out = await wait(
        "every proposal", lambda: _run_complete(http, url("rebalance-svc"), run_id), 3600
    )
    clock.stage("propose", started)
    propose_cpu_s = await stage_cpu(launcher, plain_dsn, cpu_before, database_cpu_before)
    print(f"  cpu s per process: {propose_cpu_s}")
    if args.stop_after == "propose":
        measured = {"scan_cpu_s": scan_cpu_s, "propose_cpu_s": propose_cpu_s, "run": run_out}
        measured["propose_top_statements"] = await top_statements(plain_dsn)
        return await stop_early("propose", measured)

    async def all_sent() -> bool:
        stats = (await http.get(f"{url('custodian-gateway')}/stats")).json()
        allocations = stats["allocations"]
        waiting = allocations["by_status"].get("pending", 0) + allocations["by_status"].get(
            "new", 0
        )
        blocks_new = stats["blocks"]["by_status"].get("new", 0)
        return bool(allocations["total"] >= run_out["trades"] and not waiting and not blocks_new)

    await wait("every trade in a block sent", all_sent, 3600)
    clock.stage("orders", started)

    async def settled() -> bool:
        response = await http.get(f"{url('reporting-svc')}/runs/{run_id}")
        return response.status_code == 200 and bool(response.json().get("complete"))

    await wait("every fill applied and reported", settled, 7200)
    clock.stage("settle", started)
    model_change_cpu_s = await stage_cpu(launcher, plain_dsn, cpu_before, database_cpu_before)
    print(f"  cpu s per process (model change to settled): {model_change_cpu_s}")
    model_change_statements = await top_statements(plain_dsn)
    gateway = (await http.get(f"{url('custodian-gateway')}/stats")).json()
    memory = peak_rss(launcher)
    await http.aclose()
    if not args.keep:
        launcher.down(PROFILE)

    events = run_out["accounts_evaluated"] + run_out["proposals"] * 2 + run_out["trades"] * 2
    kafka_rate = floor_kafka["messages_per_s"]
    return {
        "benchmark": "scale",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "replicas": replicas,
        "book": {
            "accounts": args.accounts,
            "positions": positions_rows,
            "lots": lots_rows,
            "umas": "10%",
            "direct_indexed_300_names": "10%",
        },
        "stages_s": clock.stages,
        "book_load_applied_s": applied_s,
        "load_rebalance_current_s": rebalance_current_s,
        "load_cpu_s": load_cpu_s,
        "load_database_active_s": load_database_s,
        "load_top_statements": load_statements,
        "scan_cpu_s": scan_cpu_s,
        "propose_cpu_s": propose_cpu_s,
        "model_change_cpu_s": model_change_cpu_s,
        # where the database's time went, model change to settled (pg_stat_statements)
        "model_change_top_statements": model_change_statements,
        "run": {
            k: run_out[k]
            for k in (
                "accounts",
                "chunks",
                "accounts_evaluated",
                "accounts_skipped",
                "proposals",
                "trades",
            )
        },
        "custodian": {
            "blocks": gateway["blocks"]["total"],
            "allocations": gateway["allocations"]["total"],
        },
        "floor": {
            "kafka": floor_kafka,
            "postgres_copy": floor_pg,
            "load_vs_copy_of_lots": round(
                clock.stages["load"] / (lots_rows / floor_pg["rows_per_s"]), 1
            ),
            "model_change_events": events,
            "settle_vs_kafka": round(clock.stages["settle"] / (events / kafka_rate), 1),
        },
        **({"custodian_day": custodian} if custodian else {}),
        "peak_rss_mib": memory,
        "peak_rss_max_mib": max(memory.values(), default=0),
    }


async def _run_complete(http: httpx.AsyncClient, base: str, run_id: str) -> dict[str, Any] | None:
    run = (await http.get(f"{base}/runs/{run_id}")).json()
    return run if run["complete"] else None


def book_folder(accounts: int, seed: int, children: int = 0) -> Path:
    """The generated book (made once per size, seed and children of core, then reused)."""
    root = ROOT / ".state" / "bench" / "books" / make_book.book_name(accounts, seed, children)
    if not (root / make_book.AS_OF / "lots.csv").exists():
        print(f"generating a book of {accounts:,} accounts in {root} ...", flush=True)
        subprocess.run(
            [sys.executable, str(Path(__file__).parent / "make_book.py"),
             "--accounts", str(accounts), "--seed", str(seed), "--children", str(children),
             "--out", str(root.parent)],
            check=True,
        )  # fmt: skip
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=int(os.environ.get("ACCOUNTS", 100_000)))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", default=os.environ.get("REPLICAS", ""))
    parser.add_argument("--port-base", type=int, default=8700)
    parser.add_argument("--floor-messages", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="leave the services running")
    parser.add_argument(
        "--stop-after",
        choices=["load", "custodian", "scan", "propose"],
        help="run the stages up to this one (custodian: implies --custodian-day)",
    )
    parser.add_argument(
        "--custodian-day",
        action="store_true",
        help="after the load, reconcile the book's custodian's day (make bench-custodian)",
    )
    parser.add_argument(
        "--log-statements-ms",
        type=int,
        help="log statements slower than this to the stack's postgres.log",
    )
    parser.add_argument("--out", default="bench/results/scale.json")
    args = parser.parse_args()
    args.custodian_day = args.custodian_day or args.stop_after == "custodian"
    book_folder(args.accounts, args.seed)
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
