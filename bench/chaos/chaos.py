"""The chaos suite's core: drive one model change over a seeded book on a running Ballast,
kill -9 one piece of it at a seeded point of the change, restart it, wait until the change has
settled, and measure the outcome (the book of record, the custodian, what is still open)
against an undisturbed run of the same book.

Only public REST APIs are read (the services' and the custodian simulator's). Used by
`bench/chaos/run_chaos.py` (`make chaos`) and `tests/chaos/test_chaos_short.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from ballast_common.auth import LocalIssuer
from ballast_demo.book import (
    MODELS,
    SECURITIES,
    Account,
    ModelSpec,
    build_accounts,
    changed_core_model,
)
from ballast_demo.driver import Ballast, Urls

ROOT = Path(__file__).resolve().parents[2]

SERVICES = (
    "account-svc",
    "model-hub-svc",
    "rebalance-svc",
    "taxlot-svc",
    "custodian-gateway",
    "reporting-svc",
)
SIMULATOR = "custodian-sim"
INFRASTRUCTURE = ("postgres", "kafka")
FAULTS = (*SERVICES, SIMULATOR, *INFRASTRUCTURE)
CONTROL = "none"  # a second undisturbed run: what differs without any fault (noise)
# Faults known to fail, with why: reported, not counted as a regression. None now: the
# simulator keeps its book in a store of its own (issue 11), so its restart forgets nothing.
EXPECTED_FAILURES: dict[str, str] = {}
# Points of a model change at which the fault strikes: after the k-th proposal is made
# (rebalance-svc's run), the k-th approved trade reaches the gateway, the k-th trade is filled.
STAGES = ("proposals", "orders", "fills")
# The simulator holds work only once orders reach it: strike it while fills come back.
STAGES_OF = {SIMULATOR: ("fills",)}
OPEN_BLOCKS = ("new", "sent", "partially_filled")
OPEN_ALLOCATIONS = ("pending", "blocked")

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- the book ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Book:
    """A seeded book and its model change, its ids prefixed by `label` (several books can then
    share one running system); accounts are compared by position, not by id."""

    seed: int
    label: str
    accounts: list[Account]
    models: list[ModelSpec]
    change: ModelSpec

    @property
    def umas(self) -> int:
        return sum(1 for a in self.accounts if a.is_uma)

    @property
    def following(self) -> int:
        model = self.change.model_id
        return sum(
            1
            for a in self.accounts
            if a.model_id == model or any(m == model for _, m, _ in a.sleeves)
        )


def make_book(seed: int, accounts: int, label: str = "") -> Book:
    """The demo's managed book (UMAs, restrictions, tax lots) of `accounts` for `seed`."""

    def model_id(model: str | None) -> str | None:
        return None if model is None else label + model

    book = [
        dataclasses.replace(
            a,
            account_id=label + a.account_id,
            household_id=label + a.household_id,
            model_id=model_id(a.model_id),
            sleeves=[(s, label + m, w) for s, m, w in a.sleeves],
        )
        for a in build_accounts(accounts, seed, instructions=True)
    ]
    models = [dataclasses.replace(m, model_id=label + m.model_id) for m in MODELS]
    change = changed_core_model()
    return Book(
        seed, label, book, models, dataclasses.replace(change, model_id=label + change.model_id)
    )


# --- where the fault strikes ------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    stage: str  # one of STAGES
    at: int  # the k-th proposal, order or fill
    of: int  # how many the undisturbed run had


def kill_point(seed: int, fault: str, proposals: int, trades: int) -> KillPoint:
    """The seeded point of the change at which `fault` strikes, given the undisturbed run's
    numbers of proposals and trades."""
    rng = random.Random(f"{seed}:{fault}")
    stage = rng.choice(STAGES_OF.get(fault, STAGES))
    total = proposals if stage == "proposals" else trades
    return KillPoint(stage, max(1, math.ceil(rng.uniform(0.2, 0.8) * total)), total)


# --- killing and restarting -------------------------------------------------------------------


def load_launcher() -> ModuleType:
    """scripts/services.py, imported by path (it reads BALLAST_STATE_DIR when imported)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ballast_services", ROOT / "scripts/services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _pid_from(pid_file: Path) -> int:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise RuntimeError(f"chaos: no running process recorded in {pid_file}") from None


@dataclass
class Harness:
    """The running system under test: its services (a profile of scripts/services.py) and,
    when `stack_env` is given, the Kafka broker and PostgreSQL of scripts/stack.py that may
    be killed too (never give it a stack other people use)."""

    launcher: ModuleType
    profile: str
    port_base: int
    stack_env: Mapping[str, str] | None = None
    replicas: Mapping[str, int] = field(default_factory=dict)

    @property
    def urls(self) -> Urls:
        return Urls.on_port_base(self.port_base)

    def start(self, timeout_s: float = 300, migrate_first: bool = True) -> None:
        """Start (or restore) every service instance with the environment of this process."""
        self.launcher.up(
            self.profile,
            self.port_base,
            timeout_s=timeout_s,
            quiet=True,
            replicas=self.replicas,
            migrate_first=migrate_first,
        )

    def stop(self) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # a line per instance stopped
            self.launcher.down(self.profile)

    def kill(self, fault: str) -> list[int]:
        """kill -9 the fault's process(es) and wait until they are gone; the pids killed."""
        if fault in (*SERVICES, SIMULATOR):
            pid = self.launcher.kill(self.profile, fault, 0, signal.SIGKILL)
            # until the launcher sees it dead (it reaps its own children), else `up` would
            # take the dying instance for a running one
            self._wait_gone(lambda: fault in {r.service for r in self._dead()})
            return [pid]
        if self.stack_env is None:
            raise RuntimeError(f"chaos: this harness may not kill {fault} (a shared stack)")
        state = Path(self.stack_env["BALLAST_STATE_DIR"])
        if fault == "kafka":
            pids = [_pid_from(state / "kafka" / "kafka.pid")]
        elif fault == "postgres":
            postmaster = _pid_from(state / "postgres" / "postgres.pid")
            pids = [postmaster, *_children(postmaster)]  # a crash takes every backend with it
        else:
            raise ValueError(f"chaos: unknown fault {fault!r} (known: {', '.join(FAULTS)})")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_gone(lambda: all(_gone(pid) for pid in pids))
        return pids

    @staticmethod
    def _wait_gone(check: Callable[[], bool], timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos: killed processes still there after {timeout_s:.0f} s")
            time.sleep(0.05)

    def _dead(self) -> list[Any]:
        return [r for r in self.launcher.instances(self.profile) if not r.alive]

    def dead_instances(self) -> list[str]:
        return sorted(r.name for r in self._dead())

    def restart(self, fault: str) -> list[str]:
        """Bring back what `fault` took down, as a supervisor would; the service instances
        that had to be started again (those that died of the fault too)."""
        if fault in INFRASTRUCTURE:
            assert self.stack_env is not None
            stack_up(self.stack_env)
        dead = self.dead_instances()
        self.start(timeout_s=240, migrate_first=False)  # the schemas are at head already
        return dead


def stack_up(env: Mapping[str, str], timeout_s: float = 120) -> None:
    """`stack.py up`, tried again while it fails (a killed broker's port may not be free yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts/stack.py"), "up"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"chaos: stack.py up failed:\n{result.stdout}{result.stderr}")
        time.sleep(1)


# --- polling ----------------------------------------------------------------------------------


class Reader:
    """GETs over the public REST APIs that tolerate a service being down (None, not an
    error), for polling while a fault is on."""

    def __init__(self, urls: Urls, headers: Mapping[str, str]) -> None:
        self.urls = urls
        self.http = httpx.AsyncClient(timeout=10, headers=dict(headers))

    async def close(self) -> None:
        await self.http.aclose()

    async def get(self, url: str, **params: Any) -> Any:
        try:
            response = await self.http.get(url, params=params or None)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    async def must(self, url: str, **params: Any) -> Any:
        """A GET that must answer (after the system has settled): retried for a while."""
        deadline = time.monotonic() + 60
        while True:
            body = await self.get(url, **params)
            if body is not None:
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"chaos: GET {url} {params} does not answer")
            await asyncio.sleep(0.5)

    async def pages(self, url: str, limit: int = 1000, **params: Any) -> list[dict[str, Any]]:
        """Every item of a paged list (Page[T]); each page must answer."""
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = await self.must(url, limit=limit, offset=offset, **params)
            items += page["items"]
            offset = page["next_offset"]
        return items

    async def pages_or_none(self, url: str, limit: int = 1000) -> list[dict[str, Any]] | None:
        """Every item of a paged list, or None if a page does not answer (polling)."""
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None:
            page = await self.get(url, limit=limit, offset=offset)
            if page is None:
                return None
            items += page["items"]
            offset = page["next_offset"]
        return items


async def until(check: Callable[[], Awaitable[Any]], timeout_s: float, every_s: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(every_s)


# --- one scenario -----------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run of the book's model change ended with."""

    fault: str
    run: dict[str, Any]
    settled: bool
    timings: dict[str, float]
    kill: dict[str, Any] | None
    open: dict[str, int]  # what was still open when the run settled (or gave up)
    custodian: dict[str, Any]
    book: list[dict[str, Any]]  # per account (in book order): cash, sleeve cash, positions
    book_vs_fills: list[str]  # accounts/symbols whose holdings are not opening + fills


async def _stage_count(reader: Reader, stage: str, run_id: str, accounts: set[str]) -> int | None:
    urls = reader.urls
    if stage == "proposals":
        run = await reader.get(f"{urls.rebalance}/runs/{run_id}")
        return None if run is None else int(run["proposals"])
    allocations = await reader.pages_or_none(f"{urls.gateway}/allocations")
    if allocations is None:
        return None
    mine = [a for a in allocations if a["account_id"] in accounts]
    if stage == "orders":
        return len(mine)
    return sum(1 for a in mine if a["status"] not in OPEN_ALLOCATIONS)


async def _open_work(
    reader: Reader, run: dict[str, Any], accounts: set[str]
) -> dict[str, int] | None:
    """What of the run is not done yet; None while a service does not answer."""
    urls = reader.urls
    run_now = await reader.get(f"{urls.rebalance}/runs/{run['run_id']}")
    progress = await reader.get(f"{urls.reporting}/runs/{run['run_id']}")
    read_model = await reader.get(f"{urls.rebalance}/read-model")
    allocations = await reader.pages_or_none(f"{urls.gateway}/allocations")
    if run_now is None or read_model is None or allocations is None:
        return None
    mine = [a for a in allocations if a["account_id"] in accounts]
    reported = bool(
        progress
        and progress["complete"]
        and progress["trades"] == run_now["trades"]
        and progress["accounts_measured"] == run_now["accounts_evaluated"]
    )
    return {
        "chunks_open": int(run_now["chunks"]) - int(run_now["chunks_done"]),
        "trades_not_at_gateway": max(0, int(run_now["trades"]) - len(mine)),
        "allocations_open": sum(1 for a in mine if a["status"] in OPEN_ALLOCATIONS),
        "trades_in_flight": int(read_model["trades_in_flight"]),
        "run_not_reported": 0 if reported else 1,
    }


async def run_scenario(
    harness: Harness,
    issuer: LocalIssuer,
    book: Book,
    fault: str,
    point: KillPoint | None,
    workdir: Path,
    say: Say = _quiet,
    settle_timeout_s: float = 240,
) -> Outcome:
    """Load `book`, change its model, kill -9 `fault` at `point` (none for the baseline and
    the control), restart it, wait until settled and measure."""
    urls = harness.urls
    ballast = Ballast(urls, issuer, say=say)
    reader = Reader(urls, ballast.headers())
    accounts = {a.account_id for a in book.accounts}
    try:
        await ballast.load_securities()
        await ballast.load_reference_sets()
        for model in book.models:
            await ballast.publish_model(model)
        known = (await ballast.read_model())["accounts_with_holdings"]
        await ballast.load_book(book.accounts, workdir)
        await ballast.wait_until_known(known + len(book.accounts), len(SECURITIES))
        say(f"book of {len(book.accounts)} accounts loaded ({book.umas} UMAs); changing the model")

        started = time.monotonic()
        published = await ballast.publish_model(book.change)

        async def the_run() -> dict[str, Any] | None:
            runs = await reader.get(
                f"{urls.rebalance}/runs",
                model_id=book.change.model_id,
                model_version=published["version"],
            )
            return runs["items"][0] if runs and runs["items"] else None

        run = await until(the_run, 120)
        if run is None:
            raise RuntimeError(f"chaos: no run for {book.change.model_id} after 120 s")

        kill: dict[str, Any] | None = None
        killed_at = started
        if point is not None:
            observed = await until(
                lambda: _reached(reader, point, run["run_id"], accounts),
                180,
                every_s=0.05,
            )
            killed_at = time.monotonic()
            pids = harness.kill(fault)
            say(
                f"kill -9 {fault} (pid {', '.join(map(str, pids))}) at {point.stage} "
                f"{observed} of {point.of}"
            )
            restarted = harness.restart(fault)
            kill = {
                "stage": point.stage,
                "at": point.at,
                "observed": observed,
                "of": point.of,
                "pids": pids,
                "s_after_change": round(killed_at - started, 2),
                "restart_s": round(time.monotonic() - killed_at, 2),
                "also_restarted": [r for r in restarted if r != fault],
            }
            say(f"{fault} back after {kill['restart_s']} s; waiting for the change to settle")

        async def settled() -> bool:
            work = await _open_work(reader, run, accounts)
            return work is not None and not any(work.values())

        done = bool(await until(settled, settle_timeout_s, every_s=0.3))
        ended = time.monotonic()
        run = await reader.must(f"{urls.rebalance}/runs/{run['run_id']}")
        open_work = await _open_work(reader, run, accounts) or {}
        custodian, fills = await _custodian(reader, accounts)
        book_now = [await _holdings(reader, a.account_id) for a in book.accounts]
        timings = {"change_to_settled_s": round(ended - started, 2)}
        if kill is not None:
            timings["kill_to_settled_s"] = round(ended - killed_at, 2)
        return Outcome(
            fault=fault,
            run={k: run[k] for k in ("run_id", "accounts_evaluated", "proposals", "trades")},
            settled=done,
            timings=timings,
            kill=kill,
            open={**open_work, "blocks_open": custodian.pop("blocks_open")},
            custodian=custodian,
            book=book_now,
            book_vs_fills=_book_vs_fills(book.accounts, book_now, fills),
        )
    finally:
        await reader.close()
        await ballast.close()


async def _reached(reader: Reader, point: KillPoint, run_id: str, accounts: set[str]) -> int:
    count = await _stage_count(reader, point.stage, run_id, accounts)
    return count if count is not None and count >= point.at else 0


async def _holdings(reader: Reader, account_id: str) -> dict[str, Any]:
    body = await reader.must(f"{reader.urls.taxlot}/accounts/{account_id}/holdings")
    return {
        "cash": str(Decimal(body["cash"])),
        "sleeve_cash": {
            str(s["sleeve_id"]): str(Decimal(s["amount"])) for s in body["sleeve_cash"]
        },
        "positions": {
            p["symbol"]: [str(Decimal(p["quantity"])), str(Decimal(p["cost_basis"]))]
            for p in body["positions"]
            if Decimal(p["quantity"]) != 0
        },
    }


async def _custodian(
    reader: Reader, accounts: set[str]
) -> tuple[dict[str, Any], dict[tuple[str, str], Decimal]]:
    """Orders and executions of the book's trades at the gateway and at the custodian, and the
    signed filled quantity per (account, symbol)."""
    urls = reader.urls
    allocations = [
        a for a in await reader.pages(f"{urls.gateway}/allocations") if a["account_id"] in accounts
    ]
    blocks_all = await reader.pages(f"{urls.gateway}/orders")
    mine = {a["client_order_id"] for a in allocations if a["client_order_id"]}
    blocks = [b for b in blocks_all if b["client_order_id"] in mine]
    executions: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await reader.must(f"{urls.custodian}/executions", after=after, limit=5000)
        executions += page["executions"]
        if not page["executions"]:
            break
        after = page["last_seq"]
    executed: dict[str, Decimal] = {}
    for e in executions:
        if e["kind"] == "fill":
            executed[e["client_order_id"]] = executed.get(
                e["client_order_id"], Decimal(0)
            ) + Decimal(e["quantity"])
    ordered = {b["client_order_id"]: Decimal(b["quantity"]) for b in blocks}
    known = {b["client_order_id"] for b in blocks_all}
    ids = [e["execution_id"] for e in executions]
    stats = await reader.must(f"{urls.gateway}/stats")
    fills: dict[tuple[str, str], Decimal] = {}
    for a in allocations:
        sign = 1 if a["side"] == "buy" else -1
        key = (a["account_id"], a["symbol"])
        fills[key] = fills.get(key, Decimal(0)) + sign * Decimal(a["filled_quantity"])
    by_status: dict[str, int] = {}
    for a in allocations:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    simulator = await reader.must(f"{urls.custodian}/stats")
    return (
        {
            "blocks": len(blocks),
            "blocks_open": sum(1 for b in blocks if b["status"] in OPEN_BLOCKS),
            "blocks_sent_more_than_once": sum(1 for b in blocks if b["times_sent"] > 1),
            "allocations": len(allocations),
            "allocations_by_status": by_status,
            # the custodian executed more shares of an order than it was given
            "orders_overexecuted": sum(1 for c, q in ordered.items() if executed.get(c, 0) > q),
            "executions_repeated": len(ids) - len(set(ids)),
            # executions of orders the gateway never placed (in this system)
            "executions_of_unknown_orders": sum(
                1 for e in executions if e["client_order_id"] not in known
            ),
            "allocations_overfilled": sum(
                1 for a in allocations if Decimal(a["filled_quantity"]) > Decimal(a["quantity"])
            ),
            "gateway_overfills": int(stats["executions"].get("overfills", 0)),
            "gateway_executions_not_seen": sum(
                1
                for b in blocks
                if executed.get(b["client_order_id"], Decimal(0)) != Decimal(b["filled_quantity"])
            ),
            "simulator_resubmissions_deduplicated": int(simulator["duplicate_submissions"]),
        },
        fills,
    )


def _book_vs_fills(
    accounts: Sequence[Account],
    book: Sequence[dict[str, Any]],
    fills: Mapping[tuple[str, str], Decimal],
) -> list[str]:
    """(account, symbol) whose quantity in the book of record is not its opening quantity plus
    its fills at the gateway: a fill not applied, or applied twice."""
    wrong = []
    for account, held in zip(accounts, book, strict=True):
        expected = dict(account.positions)
        for (account_id, symbol), quantity in fills.items():
            if account_id == account.account_id:
                expected[symbol] = expected.get(symbol, Decimal(0)) + quantity
        have = {s: Decimal(q) for s, (q, _) in held["positions"].items()}
        for symbol in sorted(set(expected) | set(have)):
            if expected.get(symbol, Decimal(0)) != have.get(symbol, Decimal(0)):
                wrong.append(
                    f"{account.account_id} {symbol}: holds {have.get(symbol, 0)}, "
                    f"opening + fills {expected.get(symbol, 0)}"
                )
    return wrong


# --- the verdict ------------------------------------------------------------------------------

DUPLICATE_COUNTS = (
    "orders_overexecuted",
    "executions_repeated",
    "executions_of_unknown_orders",
    "allocations_overfilled",
    "gateway_overfills",
)


LOST_VIEWS = ("trades_in_flight", "run_not_reported")


def differences(baseline: Outcome, outcome: Outcome, accounts: Sequence[Account]) -> list[str]:
    """Per account (by position in the book): every security whose quantity or total cost
    basis differs from the baseline's, and cash (and a UMA's sleeve cash)."""
    found = []
    for account, before, after in zip(accounts, baseline.book, outcome.book, strict=True):
        what = []
        for symbol in sorted(set(before["positions"]) | set(after["positions"])):
            b, a = before["positions"].get(symbol), after["positions"].get(symbol)
            if b != a:
                what.append(f"{symbol} {b} -> {a} (quantity, cost basis)")
        if before["cash"] != after["cash"]:
            what.append(f"cash {before['cash']} -> {after['cash']}")
        if before["sleeve_cash"] != after["sleeve_cash"]:
            what.append(f"sleeve cash {before['sleeve_cash']} -> {after['sleeve_cash']}")
        if what:
            found.append(f"{account.account_id}: {'; '.join(what)}")
    return found


def verdict(baseline: Outcome, outcome: Outcome, accounts: Sequence[Account]) -> dict[str, Any]:
    """The per-fault result: duplicates, lost or stuck work, differing accounts, timings."""
    differing = differences(baseline, outcome, accounts)
    duplicates = sum(int(outcome.custodian[k]) for k in DUPLICATE_COUNTS)
    lost_parts = {
        **outcome.open,
        "executions_not_applied_at_gateway": int(outcome.custodian["gateway_executions_not_seen"]),
        "holdings_not_opening_plus_fills": len(outcome.book_vs_fills),
    }
    # trades_in_flight and run_not_reported are other services' views of the same open
    # trades: they keep the run from settling but are not counted twice here
    lost = sum(v for k, v in lost_parts.items() if k not in LOST_VIEWS)
    run_differs = {
        k: [baseline.run[k], outcome.run[k]]
        for k in ("accounts_evaluated", "proposals", "trades")
        if baseline.run[k] != outcome.run[k]
    }
    clean = outcome.settled and not duplicates and not lost and not differing and not run_differs
    expected = EXPECTED_FAILURES.get(outcome.fault)
    return {
        "fault": outcome.fault,
        "result": "pass" if clean else ("expected_failure" if expected else "FAIL"),
        "expected_failure": expected,
        "kill": outcome.kill,
        "settled": outcome.settled,
        "time_to_recover_s": outcome.timings.get("kill_to_settled_s"),
        "change_to_settled_s": outcome.timings["change_to_settled_s"],
        "duplicates": duplicates,
        "lost": lost,
        "differing_accounts": len(differing),
        "run": outcome.run,
        "run_differs_from_baseline": run_differs,
        "lost_or_stuck": lost_parts,
        "custodian": outcome.custodian,
        "differences": differing[:20],
        "holdings_not_opening_plus_fills": outcome.book_vs_fills[:20],
    }


def table(results: Iterable[Mapping[str, Any]]) -> str:
    """The results as a fixed-width table for the terminal."""
    head = (
        f"{'fault':<18} {'killed at':<17} {'dup':>4} {'lost':>5} {'diff':>5} "
        f"{'recover s':>9} {'settled':<8} {'result':<16}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        kill = r.get("kill") or {}
        at = f"{kill['stage']} {kill['observed']}/{kill['of']}" if kill else "-"
        recover = r.get("time_to_recover_s")
        lines.append(
            f"{r['fault']:<18} {at:<17} {r['duplicates']:>4} {r['lost']:>5} "
            f"{r['differing_accounts']:>5} {recover if recover is not None else '-':>9} "
            f"{'yes' if r['settled'] else 'NO':<8} {r['result']:<16}"
        )
    return "\n".join(lines)
