"""`make bench-workflow`: the overlay manager's workflow (issue 13) measured on one book, on
the real stack. A benchmark, not a test.

    python bench/workflow/bench_workflow.py [--accounts 100000] [--children 1000] [--out ...]
    ACCOUNTS=2000 make bench-workflow        # a quick run

The book is bench-scale's (bench/scale/make_book.py, loaded with `ballast book load` through
the running services, bench_scale.py's helpers), made with `--children N`: the SMAs that
would follow the "core" model follow its N child models in turn (UMAs keep a core sleeve).
Before the load the benchmark publishes core's children with
`model_hub_svc.service.publish_children` (in this process, as model-hub-svc's database
role; the running model-hub-svc relays their model-changed), each removing or reweighting
one of core's names. Then, through the running services' REST API:

  bulk_change  "do not buy S510" over the whole book (`POST /bulk-changes`, selection `[]`):
               preview, a page of its accounts, one exemption, apply; then until
               rebalance-svc holds the restriction for every changed account;
  filters      20 routing filters (`PUT /filters/{id}`, all `review`, the last holding
               every proposal so nothing trades while proposals are measured), after the
               client tier set on a tenth of the children's accounts by a bulk change;
  cascade      `PUT /models/core` (two names swapped) until the last `model-changed` of
               the parent and every child on Kafka, every run of them complete (polling
               rebalance-svc's `GET /runs`), the last `trades-proposed` on Kafka (a plain
               aiokafka consumer; times are the records' timestamps) and the last proposal
               stored (and routed) by account-svc;
  filter       `GET /filters/platinum-turnover/accounts` (attribute.client_tier eq
               platinum AND proposal.turnover_percent gt 5: first page and total) over the
               book with its proposals, three times;
  routing      the statement that routes a batch of proposals (`filters_repository.
               first_matching_filters`: 500 proposals of the book's accounts, not stored,
               against the tenant's 20 filters and against one), in this process.

Between stages the benchmark waits until the system is quiet (no unpublished outbox row, no
consumer group of the run's topics behind). Results: bench/results/workflow.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from account_svc import filters_repository
from account_svc.tables import Account, Proposal
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from ballast_common.auth import Role
from ballast_common.contracts.envelope import decode_envelope
from ballast_common.db import Database
from ballast_common.uow import UnitOfWork
from model_hub_svc import service
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import OverridesIn, ReweightIn
from sqlmodel import col, select

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "scale"))
import bench_scale  # noqa: E402
import make_book  # noqa: E402

DATABASE = "ballast_workflow"
PROFILE = "workflow"
TENANT = "demo"
RESTRICTED = "S510"  # a security of the book in no model: the bulk change leaves proposals be
PLATINUM_SHARE = 10  # one child in this many: its accounts' client_tier is platinum
MEASURED_FILTER = "platinum-turnover"
ROUTING_BATCH = 500
ROUTING_REPEATS = 5
SERVICE_SCHEMAS = ("account", "model_hub", "rebalance", "reporting", "taxlot", "custodian_gateway")
UNPUBLISHED = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL)"
    for schema in SERVICE_SCHEMAS
)


class Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def done(self, name: str, started: float, detail: str = "") -> float:
        took = round(time.monotonic() - started, 2)
        self.seconds[name] = took
        print(f"  {name:<12} {took:>8.1f} s  {detail}", flush=True)
        return took


async def poll(
    what: str, check: Callable[[], Awaitable[Any]], timeout_s: float, every: float
) -> Any:
    """`check()` until it answers something truthy; exits naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-workflow: {what} did not happen within {timeout_s:.0f} s")
        await asyncio.sleep(every)


def service_database(system: bench_scale.System, service: str, schema: str) -> Database:
    """A connection pool to `schema` as the service's own database role (as deployed)."""
    roles = system.launcher.database_roles()
    role = "ballast_" + service.replace("-", "_")
    url = system.launcher.with_role(system.database_url, role, roles[role])
    return Database(url, schema, pool_size=2)


def child_overrides(index: int, core: list[str]) -> OverridesIn:
    """Child `index` of core: removes one of core's names (even) or reweights it (odd); never
    the two names the benchmark's change of core drops."""
    symbol = core[2 + index % (len(core) - 2)]
    if index % 2 == 0:
        return OverridesIn(remove=[symbol])
    return OverridesIn(reweight=[ReweightIn(symbol=symbol, weight=Decimal("0.03"))])


async def publish_children(system: bench_scale.System, core: list[str], children: int) -> float:
    """Core's children in one transaction (publish_children); returns the seconds it took."""
    family = [
        (make_book.core_child(i), f"Core child {i + 1}", child_overrides(i, core))
        for i in range(children)
    ]
    db = service_database(system, "model-hub-svc", "model_hub")
    started = time.monotonic()
    try:
        async with UnitOfWork(db.sessions(), "model-hub-svc") as uow:
            await service.publish_children(
                uow, PostgresModelHubRepository(uow.session), TENANT, "core", family, "bench"
            )
    finally:
        await db.dispose()
    return round(time.monotonic() - started, 2)


class Quiet:
    """Whether the system has nothing left to do: no unpublished outbox row in any service's
    schema and no consumer group of the run's topics behind the end of a partition."""

    def __init__(self, system: bench_scale.System, dsn: str) -> None:
        self.system, self.dsn = system, dsn
        options = system.kafka.client_options()
        self.admin = AIOKafkaAdminClient(**options)
        self.ends = AIOKafkaConsumer(**options, enable_auto_commit=False)

    async def start(self) -> None:
        await self.admin.start()
        await self.ends.start()

    async def stop(self) -> None:
        await self.ends.stop()
        await self.admin.close()

    async def backlog(self) -> tuple[int, int]:
        """(outbox rows not yet published, messages consumer groups have still to read)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            unpublished = int(await conn.fetchval(UNPUBLISHED))
        finally:
            await conn.close()
        prefix = self.system.topic_prefix
        behind = 0
        for group in await self.admin.list_consumer_groups():
            if not group[0].startswith(prefix):
                continue
            committed = await self.admin.list_consumer_group_offsets(group[0])
            ends = await self.ends.end_offsets(list(committed))
            behind += sum(
                max(0, ends[tp] - at.offset) for tp, at in committed.items() if at.offset >= 0
            )
        return unpublished, behind

    async def wait(self, timeout_s: float) -> float:
        """Until two readings a second apart find nothing to do; returns the seconds waited."""
        started = time.monotonic()
        calm = 0
        while calm < 2:
            calm = calm + 1 if await self.backlog() == (0, 0) else 0
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"bench-workflow: the system was not quiet within {timeout_s} s")
            await asyncio.sleep(1)
        return round(time.monotonic() - started, 2)


class TopicWatch:
    """A plain consumer of model-changed and trades-proposed from their ends (no group):
    what each topic received, with the records' timestamps (ms since the epoch)."""

    def __init__(self, system: bench_scale.System) -> None:
        self.prefix = system.topic_prefix
        topics = [self.prefix + t for t in ("model-changed", "trades-proposed")]
        self.consumer = AIOKafkaConsumer(
            *topics, **system.kafka.client_options(), enable_auto_commit=False
        )
        self.model_changed: dict[tuple[str, int], int] = {}  # (model, version): timestamp
        self.trades_proposed: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()

        async def assigned() -> bool:
            return bool(self.consumer.assignment())

        await poll("the topics' partitions assigned", assigned, 60, 0.1)
        partitions = list(self.consumer.assignment())
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:
            await self.consumer.position(tp)  # the end is read now, before anything happens
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        model_changed = self.prefix + "model-changed"
        while True:
            batches = await self.consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if tp.topic == model_changed:
                        _, payload = decode_envelope(record.value)
                        key = (str(payload.model_id), int(payload.version))
                        self.model_changed[key] = record.timestamp
                    else:
                        self.trades_proposed.append(record.timestamp)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def measure_bulk_change(
    http: httpx.AsyncClient, url: Callable[[str], str], dsn: str
) -> dict[str, Any]:
    """Stage 2: "do not buy S510" over every account of the tenant, previewed, one account
    exempted, applied; then until rebalance-svc holds it for every changed account."""
    account_svc = url("account-svc")
    body = {
        "selection": {"conditions": []},
        "change": {
            "kind": "add_restriction",
            "restriction": {
                "kind": "do_not_buy",
                "scope": "security",
                "value": RESTRICTED,
                "source": "firm",
                "reason": "investment committee view",
            },
        },
        "note": "bench-workflow: the whole book",
    }
    seconds: dict[str, float] = {}
    started = time.monotonic()
    preview = await _ok(await http.post(f"{account_svc}/bulk-changes", json=body))
    seconds["preview"] = round(time.monotonic() - started, 3)
    bulk_change_id = preview["bulk_change_id"]
    selected = preview["counts"]["selected"]
    started = time.monotonic()
    page = await _ok(
        await http.get(
            f"{account_svc}/bulk-changes/{bulk_change_id}/accounts",
            params={"limit": 100, "offset": selected // 2},
        )
    )
    seconds["read_a_page_of_accounts"] = round(time.monotonic() - started, 3)
    exempted = page["items"][0]["account_id"]
    started = time.monotonic()
    await _ok(
        await http.post(
            f"{account_svc}/bulk-changes/{bulk_change_id}/exemptions",
            json={"account_id": exempted, "reason": "client holds S510 through an employer plan"},
        )
    )
    seconds["exempt_one"] = round(time.monotonic() - started, 3)
    started = time.monotonic()
    applied = await _ok(await http.post(f"{account_svc}/bulk-changes/{bulk_change_id}/apply"))
    seconds["apply"] = round(time.monotonic() - started, 3)
    changed = applied["changed"]
    conn = await asyncpg.connect(dsn)
    restricted = json.dumps([{"value": RESTRICTED}])

    async def rebalance_holds_it() -> bool:
        held = await conn.fetchval(
            "SELECT count(*) FROM rebalance.accounts WHERE restrictions @> $1::jsonb", restricted
        )
        return bool(held >= changed)

    try:
        await poll("rebalance-svc holding the bulk change", rebalance_holds_it, 3600, 0.5)
    finally:
        await conn.close()
    seconds["apply_until_rebalance_svc_holds_it"] = round(time.monotonic() - started, 2)
    return {
        "via": "REST through the running account-svc",
        "change": f"add_restriction do_not_buy {RESTRICTED}, selection: every account",
        "bulk_change_id": bulk_change_id,
        "counts": preview["counts"],
        "exempted": exempted,
        "changed": changed,
        "seconds": seconds,
    }


async def set_client_tiers(
    http: httpx.AsyncClient, url: Callable[[str], str], children: int
) -> dict[str, Any]:
    """client_tier platinum (and discretionary) for the accounts of every tenth child model:
    a bulk change over a selection by model_id."""
    platinum = [make_book.core_child(i) for i in range(0, children, PLATINUM_SHARE)]
    body = {
        "selection": {"conditions": [{"field": "model_id", "op": "in", "value": platinum}]},
        "change": {
            "kind": "set_attributes",
            "attributes": {"client_tier": "platinum", "discretionary": True},
        },
        "note": "bench-workflow: platinum clients",
    }
    account_svc = url("account-svc")
    started = time.monotonic()
    preview = await _ok(await http.post(f"{account_svc}/bulk-changes", json=body))
    preview_s = round(time.monotonic() - started, 3)
    started = time.monotonic()
    applied = await _ok(
        await http.post(f"{account_svc}/bulk-changes/{preview['bulk_change_id']}/apply")
    )
    return {
        "models": len(platinum),
        "selected": preview["counts"]["selected"],
        "changed": applied["changed"],
        "seconds": {"preview": preview_s, "apply": round(time.monotonic() - started, 3)},
    }


def routing_filters() -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The tenant's 20 filters (id, name, conditions), in evaluation order; all hold for
    review, the last every proposal the others leave."""
    cond = lambda field, op, value=None: {"field": field, "op": op, "value": value}  # noqa: E731
    households = [f"HH-{i:06d}" for i in range(1, 201)]
    return [
        (MEASURED_FILTER, "Platinum, turnover over 5%", [
            cond("attribute.client_tier", "eq", "platinum"),
            cond("proposal.turnover_percent", "gt", "5")]),
        ("large-tax", "Estimated tax over $5,000", [cond("proposal.estimated_tax", "gt", "5000")]),
        ("ira-large-trades", "IRA trading over $100,000", [
            cond("account_type", "eq", "ira"), cond("proposal.trade_value", "gt", "100000")]),
        ("drifted", "Drift over 10 points", [cond("proposal.drift_percent", "gt", "10")]),
        ("many-trades", "More than 30 trades", [cond("proposal.trade_count", "gt", 30)]),
        ("big-accounts", "Accounts over $2M", [cond("proposal.account_value", "gt", "2000000")]),
        ("low-cash", "Cash under $500", [cond("proposal.cash_before", "lt", "500")]),
        ("watched-households", "Households on the watch list", [
            cond("household_id", "in", households)]),
        ("index-turnover", "Direct index, turnover over 20%", [
            cond("model_id", "eq", "index"), cond("proposal.turnover_percent", "gt", "20")]),
        ("not-discretionary", "Not discretionary", [
            cond("attribute.discretionary", "eq", False)]),
        ("no-advisor", "No advisor, large trades", [
            cond("advisor_id", "not_exists"), cond("proposal.trade_value", "gt", "500000")]),
        ("gold-tax", "Gold clients with tax over $1,000", [
            cond("attribute.client_tier", "eq", "gold"),
            cond("proposal.estimated_tax", "gt", "1000")]),
        ("tax-saving", "Harvests saving over $2,000", [
            cond("proposal.estimated_tax", "lt", "-2000")]),
        ("suspended", "Suspended accounts", [cond("status", "eq", "suspended")]),
        ("manual-approval", "Accounts without auto-approval", [cond("auto_approve", "eq", False)]),
        ("growth-turnover", "Growth, turnover over 15%", [
            cond("model_id", "eq", "growth"), cond("proposal.turnover_percent", "gt", "15")]),
        ("balanced-drift", "Balanced, drift over 5 points", [
            cond("model_id", "eq", "balanced"), cond("proposal.drift_percent", "gt", "5")]),
        ("tier-set", "Any client tier, turnover over 40%", [
            cond("attribute.client_tier", "exists"),
            cond("proposal.turnover_percent", "gt", "40")]),
        ("small-trades", "Trading under $1,000", [cond("proposal.trade_value", "lt", "1000")]),
        ("hold-the-rest", "Everything else, for review (the benchmark trades nothing)", []),
    ]  # fmt: skip


async def create_filters(http: httpx.AsyncClient, url: Callable[[str], str]) -> int:
    """The filters through `PUT /filters/{id}`, in order; returns how many."""
    filters = routing_filters()
    for filter_id, name, conditions in filters:
        body = {
            "name": name,
            "action": "review",
            "enabled": True,
            "conditions": [{k: v for k, v in c.items() if v is not None} for c in conditions],
        }
        await _ok(await http.put(f"{url('account-svc')}/filters/{filter_id}", json=body))
    return len(filters)


async def measure_filter(http: httpx.AsyncClient, url: Callable[[str], str]) -> dict[str, Any]:
    """Stage 1: the first page and total of the measured filter's accounts, three times."""
    times, total = [], 0
    for _ in range(3):
        started = time.monotonic()
        page = await _ok(
            await http.get(
                f"{url('account-svc')}/filters/{MEASURED_FILTER}/accounts", params={"limit": 100}
            )
        )
        times.append(round(time.monotonic() - started, 3))
        total = page["total"]
    return {
        "via": "REST: GET /filters/{id}/accounts?limit=100 (first page + total)",
        "filter_id": MEASURED_FILTER,
        "conditions": "attribute.client_tier eq platinum AND proposal.turnover_percent gt 5",
        "selected": total,
        "seconds": times,
    }


async def measure_routing(system: bench_scale.System) -> dict[str, Any]:
    """The statement that routes a batch: ROUTING_BATCH proposals of the book's accounts (not
    stored) against the tenant's enabled filters, and against the first alone."""
    db = service_database(system, "account-svc", "account")
    try:
        async with db.sessions() as session:
            filters = await filters_repository.enabled_filters(session, [TENANT])
            first = select(Account.account_id).order_by(col(Account.account_id))
            account_ids = list(await session.exec(first.limit(ROUTING_BATCH)))
        proposals = [
            Proposal(
                proposal_id=str(uuid.uuid4()),
                account_id=account_id,
                run_id=str(uuid.uuid4()),
                model_id="core",
                model_version=2,
                status="pending",
                trades=[{"symbol": "S000", "side": "buy"}] * (1 + i % 12),
                account_value=Decimal(100_000 + 997 * i),
                cash_before=Decimal(200 + 13 * i),
                buy_value=Decimal(1_000 + 37 * i),
                sell_value=Decimal(900 + 31 * i),
                turnover_percent=Decimal(i % 25),
                estimated_tax=Decimal(i % 40 * 250 - 3000),
                drift_before_percent=Decimal(i % 15),
            )
            for i, account_id in enumerate(account_ids)
        ]
        out: dict[str, Any] = {
            "via": "filters_repository.first_matching_filters in this process, account-svc's role",
            "proposals": len(proposals),
        }
        for label, given in (("all_filters", filters), ("one_filter", filters[:1])):
            times = []
            for _ in range(ROUTING_REPEATS):
                async with db.sessions() as session:
                    started = time.perf_counter()
                    chosen = await filters_repository.first_matching_filters(
                        session, proposals, given
                    )
                    times.append((time.perf_counter() - started) * 1000)
            out[label] = {
                "filters": len(given),
                "routed_by_a_filter": len(chosen),
                "median_ms": round(statistics.median(times), 1),
                "min_ms": round(min(times), 1),
            }
        return out
    finally:
        await db.dispose()


async def measure_cascade(
    http: httpx.AsyncClient, system: bench_scale.System, dsn: str, children: int
) -> dict[str, Any]:
    """Stage 3: core changed; until its and every child's model-changed are on Kafka, every
    run of them is complete, every trades-proposed is on Kafka and stored by account-svc."""
    url = system.url
    watch = TopicWatch(system)
    await watch.start()
    conn = await asyncpg.connect(dsn)
    proposals_before = int(await conn.fetchval("SELECT count(*) FROM account.proposals"))
    change = make_book.changed_core()
    body = {
        "name": change.name,
        "targets": [{"symbol": s, "weight": w} for s, w in change.targets().items()],
    }
    try:
        began = time.time()
        started = time.monotonic()
        published = await _ok(await http.put(f"{url('model-hub-svc')}/models/core", json=body))
        put_s = round(time.monotonic() - started, 3)
        expected_models = len(published["children_changed"]) + 1
        print(
            f"    PUT /models/core: {put_s} s, {expected_models - 1} children changed", flush=True
        )

        async def every_model_changed() -> bool:
            return len(watch.model_changed) >= expected_models

        await poll("every model-changed on Kafka", every_model_changed, 3600, 0.2)
        last_model_changed_s = round(max(watch.model_changed.values()) / 1000 - began, 3)
        print(f"    last model-changed on Kafka at {last_model_changed_s} s", flush=True)
        wanted = set(watch.model_changed)

        async def runs_complete() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = []
            offset: int | None = 0
            while offset is not None and len(found) < len(wanted):
                page = await _ok(
                    await http.get(
                        f"{url('rebalance-svc')}/runs", params={"limit": 500, "offset": offset}
                    )
                )
                found += [r for r in page["items"] if (r["model_id"], r["model_version"]) in wanted]
                offset = page["next_offset"]
            if len(found) < len(wanted) or not all(r["complete"] for r in found):
                return None
            return found

        runs = await poll("every run of the cascade complete", runs_complete, 7200, 1.0)
        runs_seen_s = round(time.monotonic() - started, 2)
        last_finished = max(datetime.fromisoformat(r["finished_at"]) for r in runs)
        runs_complete_s = round(last_finished.timestamp() - began, 3)
        proposals = sum(r["proposals"] for r in runs)
        print(f"    every run complete at {runs_complete_s} s: {proposals:,} proposals", flush=True)

        async def every_trades_proposed() -> bool:
            return len(watch.trades_proposed) >= proposals

        await poll("every trades-proposed on Kafka", every_trades_proposed, 600, 0.2)
        last_trades_proposed_s = (
            round(max(watch.trades_proposed) / 1000 - began, 3) if proposals else None
        )
        print(f"    last trades-proposed on Kafka at {last_trades_proposed_s} s", flush=True)

        async def every_proposal_stored() -> Any:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, max(received_at) AS last FROM account.proposals"
            )
            return row if row["n"] - proposals_before >= proposals else None

        stored = await poll("account-svc storing every proposal", every_proposal_stored, 600, 0.5)
        last_stored_s = round(stored["last"].timestamp() - began, 3) if proposals else None
        routed = await conn.fetch(
            "SELECT routed_by, count(*) AS n FROM account.proposals GROUP BY routed_by "
            "ORDER BY count(*) DESC"
        )
    finally:
        await conn.close()
        await watch.stop()
    follow = [r for r in runs if r["model_id"] != "core"]
    return {
        "via": "PUT /models/core; model-changed and trades-proposed read with a plain aiokafka "
        "consumer (record timestamps); runs polled with GET /runs (finished_at); proposals "
        "stored: account.proposals.received_at",
        "children": children,
        "children_changed": len(published["children_changed"]),
        "children_outside_limits": len(published.get("children_outside_limits", [])),
        "model_changed_events": len(watch.model_changed),
        "runs": len(runs),
        "runs_with_accounts": sum(1 for r in runs if r["accounts"]),
        "accounts": sum(r["accounts"] for r in runs),
        "accounts_on_children": sum(r["accounts"] for r in follow),
        "accounts_evaluated": sum(r["accounts_evaluated"] for r in runs),
        "accounts_skipped": sum(r["accounts_skipped"] for r in runs),
        "chunks": sum(r["chunks"] for r in runs),
        "proposals": proposals,
        "trades": sum(r["trades"] for r in runs),
        "trades_proposed_events": len(watch.trades_proposed),
        "routed_by": {r["routed_by"]: r["n"] for r in routed},
        "seconds": {
            "put": put_s,
            "to_last_model_changed": last_model_changed_s,
            "to_last_run_complete": runs_complete_s,
            "to_last_trades_proposed": last_trades_proposed_s,
            "to_last_proposal_stored": last_stored_s,
            "until_seen_complete_by_polling": runs_seen_s,
        },
    }


async def _ok(response: httpx.Response) -> Any:
    if response.is_error:
        raise SystemExit(
            f"bench-workflow: {response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:600]}"
        )
    return response.json()


def book_counts(folder: Path) -> dict[str, int]:
    """The book's accounts, positions and lots, and the accounts following core's children."""
    on_children = sum(1 for line in (folder / "accounts.csv").open() if ",core-c" in line)
    return {
        "accounts": sum(1 for _ in (folder / "accounts.csv").open()) - 1,
        "positions": sum(1 for _ in (folder / "positions.csv").open()) - 1,
        "lots": sum(1 for _ in (folder / "lots.csv").open()) - 1,
        "accounts_on_core_children": on_children,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stages = Stages()
    book_root = bench_scale.book_folder(args.accounts, args.seed, args.children)
    folder = book_root / make_book.AS_OF
    book = book_counts(folder)
    system = await bench_scale.start_system(
        DATABASE, PROFILE, args.port_base, args.replicas, topic_prefix="workflow"
    )
    roles = [Role.OVERLAY_MANAGER, Role.MODEL_MANAGER, Role.OPERATIONS, Role.PLATFORM_OPERATOR]
    token = system.issuer.issue(TENANT, roles, "bench@demo", 12 * 3600)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10), headers={"Authorization": f"Bearer {token}"}
    )
    dsn = system.database_url.replace("+asyncpg", "")
    quiet = Quiet(system, dsn)
    await quiet.start()
    setup: dict[str, Any] = {}
    try:
        print(
            f"book: {book['accounts']:,} accounts ({book['accounts_on_core_children']:,} on "
            f"{args.children:,} children of core), {book['positions']:,} positions, "
            f"{book['lots']:,} lots",
            flush=True,
        )
        started = time.monotonic()
        models = await bench_scale.publish_models(http, system, book_root, folder)
        setup["children_published_s"] = await publish_children(
            system, list(models["core"]["targets"]), args.children
        )
        children = {make_book.core_child(i) for i in range(args.children)}
        await bench_scale.models_known(http, system, children)
        stages.done("models", started, f"5 models and {args.children:,} children of core")

        started = time.monotonic()
        applied_s, steps, rebalance_current_s = await bench_scale.load_book(
            http, system, folder, token, book["accounts"]
        )
        setup["book_load"] = {
            "applied_s": applied_s,
            "steps_s": steps.ends,
            "rebalance_current_s": rebalance_current_s,
        }
        stages.done("load", started)
        setup["quiet_after_load_s"] = await quiet.wait(3600)

        started = time.monotonic()
        bulk_change = await measure_bulk_change(http, system.url, dsn)
        stages.done(
            "bulk_change",
            started,
            f"{bulk_change['changed']:,} accounts changed, "
            f"apply {bulk_change['seconds']['apply']} s",
        )
        setup["quiet_after_bulk_change_s"] = await quiet.wait(3600)

        started = time.monotonic()
        setup["client_tiers"] = await set_client_tiers(http, system.url, args.children)
        setup["filters"] = await create_filters(http, system.url)
        setup["quiet_after_filters_s"] = await quiet.wait(3600)
        stages.done(
            "filters",
            started,
            f"{setup['filters']} filters; {setup['client_tiers']['changed']:,} platinum accounts",
        )
        filter_before = await measure_filter(http, system.url)

        cpu_before = bench_scale.cpu_seconds(system.launcher, PROFILE)
        database_cpu_before = await bench_scale.database_cpu(dsn, DATABASE)
        await bench_scale.reset_statements(dsn)
        started = time.monotonic()
        cascade = await measure_cascade(http, system, dsn, args.children)
        cascade["cpu_s"] = await bench_scale.stage_cpu(
            system.launcher, dsn, cpu_before, database_cpu_before, PROFILE, DATABASE
        )
        cascade["top_statements"] = await bench_scale.top_statements(dsn, 10, DATABASE)
        stages.done(
            "cascade",
            started,
            f"{cascade['model_changed_events']:,} model-changed, {cascade['proposals']:,} "
            "proposals",
        )
        setup["quiet_after_cascade_s"] = await quiet.wait(3600)

        started = time.monotonic()
        filtered = await measure_filter(http, system.url)
        filtered["before_the_cascade"] = {
            "selected": filter_before["selected"],
            "seconds": filter_before["seconds"],
        }
        stages.done("filter", started, f"{filtered['selected']:,} accounts selected")

        started = time.monotonic()
        routing = await measure_routing(system)
        stages.done(
            "routing",
            started,
            f"{routing['proposals']} proposals x {routing['all_filters']['filters']} filters: "
            f"{routing['all_filters']['median_ms']} ms",
        )
        memory = bench_scale.peak_rss(system.launcher, PROFILE)
    finally:
        await quiet.stop()
        await http.aclose()
        if not args.keep:
            system.launcher.down(PROFILE)
    return {
        "benchmark": "workflow",
        "command": shlex.join(["python", *sys.argv]),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "replicas": system.replicas,
        "book": {**book, "core_children": args.children, "seed": args.seed},
        "stages_s": stages.seconds,
        "filter": filtered,
        "routing": routing,
        "bulk_change": bulk_change,
        "cascade": cascade,
        "setup": setup,
        "peak_rss_mib": memory,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=int(os.environ.get("ACCOUNTS", 100_000)))
    parser.add_argument("--children", type=int, default=1000, help="child models of core")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replicas", default=os.environ.get("REPLICAS", ""))
    parser.add_argument("--port-base", type=int, default=8800)
    parser.add_argument("--keep", action="store_true", help="leave the services running")
    parser.add_argument("--out", default="bench/results/workflow.json")
    args = parser.parse_args()
    bench_scale.book_folder(args.accounts, args.seed, args.children)
    result = asyncio.run(run(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("stages_s", "filter", "routing")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
