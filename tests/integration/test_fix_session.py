"""The gateway's FIX 4.4 initiator (asyncfix) against an independent engine: a QuickFIX/J
acceptor (tests/integration/fix/BallastFixAcceptor.java, jars from Maven Central, built by
scripts/fix_acceptor.py). Block orders go out through the service's own sending, polling
and settling code over the FIX client; the acceptor's wire log (every message in and out)
is what the assertions read.

Acceptor rules by symbol: REJ is rejected, HOLD... waits for FILL commands, LOSE... drops
the first NewOrderSingle of an order, anything else fills in two executions.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from ballast_common.consumer import Delivery
from ballast_common.contracts.events import TradesApprovedV1, TradeV1
from ballast_common.db import Database
from ballast_common.testing import envelope, eventually, migrated_database, unit_of_work
from custodian_gateway import fix_messages as fm
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.fix_client import FixCustodianClient, FixLink
from custodian_gateway.settings import Settings
from custodian_gateway.tables import Order
from custodian_gateway.workers import Wakeups, background_loops

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "custodian-gateway"
TENANT = "acme"
BLOCK_ACCOUNT = "BLOCK-FIX"
HEARTBEAT_S = 2


def _acceptor_script() -> Any:  # scripts/fix_acceptor.py, imported by path
    spec = importlib.util.spec_from_file_location(
        "fix_acceptor", ROOT / "scripts" / "fix_acceptor.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tags(line: str) -> dict[int, str]:
    """The fields of a logged message line (`IN|OUT 8=FIX.4.4|9=...|`)."""
    _, _, raw = line.partition(" ")
    pairs = (item.split("=", 1) for item in raw.split("|") if "=" in item)
    return {int(tag): value for tag, value in pairs}


class Acceptor:
    """The QuickFIX/J acceptor as a process: its wire log and its stdin commands."""

    def __init__(self, command: list[str], port: int, store: Path) -> None:
        self.port = port
        self.lines: list[str] = []
        self._process = subprocess.Popen(
            [*command, str(port), "CUSTODIAN", "BALLAST", str(store)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(store.parent / f"acceptor-{port}.log").open("w"),
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_line(lambda line: line.startswith("READY"), 60, "the acceptor to listen")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, match: Callable[[str], bool], timeout_s: float, what: str) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match(line):
                    return line
            if self._process.poll() is not None:
                raise AssertionError(f"the acceptor exited ({self._process.returncode})")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last lines: {self.lines[-8:]}")

    async def line(
        self, match: Callable[[str], bool], timeout_s: float, what: str, since: int = 0
    ) -> str:
        """The first logged line (from index `since`) that matches, polled without blocking
        the event loop."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines[since:]:
                if match(line):
                    return line
            if self._process.poll() is not None:
                raise AssertionError(f"the acceptor exited ({self._process.returncode})")
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last lines: {self.lines[-8:]}")

    async def command(self, text: str) -> str:
        """Send a stdin command; its one-line answer."""
        seen = len(self.lines)
        assert self._process.stdin is not None
        self._process.stdin.write(text + "\n")
        self._process.stdin.flush()
        word = text.split()[0]
        return await self.line(lambda line: line.startswith(word), 10, repr(text), since=seen)

    def messages(self, direction: str, msg_type: str) -> list[dict[int, str]]:
        return [
            tags(line)
            for line in list(self.lines)
            if line.startswith(direction + " ") and f"|35={msg_type}|" in line
        ]

    def stop(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write("QUIT\n")
                self._process.stdin.flush()
                self._process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=15)


@pytest.fixture(scope="session")
def acceptor_command() -> list[str]:
    """Fetch the QuickFIX/J jars and compile the acceptor once (cached under .state/)."""
    return list(_acceptor_script().prepare())


@pytest.fixture
def acceptor(acceptor_command: list[str], tmp_path: Path) -> Iterator[Acceptor]:
    process = Acceptor(acceptor_command, _free_port(), tmp_path / "acceptor-store")
    yield process
    process.stop()


@pytest.fixture(scope="session")
async def gateway_db(database_url: str) -> AsyncIterator[Database]:
    from custodian_gateway.main import spec

    db = await migrated_database(spec, database_url)
    yield db
    await db.dispose()


@pytest.fixture
def gateway(gateway_db: Database, acceptor: Acceptor, tmp_path: Path) -> SimpleNamespace:
    """Settings and helpers of one gateway whose orders go over FIX to `acceptor`, under a
    custodian name of its own (its own blocks and cursor)."""
    custodian = f"fix-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        order_protocol="fix",
        custodian_id=custodian,
        custodian_url="http://127.0.0.1:9",  # bookings are not part of these tests
        block_account_id=BLOCK_ACCOUNT,
        fix_port=acceptor.port,
        fix_store_dir=str(tmp_path / "gateway-fix"),
        fix_heartbeat_s=HEARTBEAT_S,
        fix_request_timeout_s=5,
        poll_interval_s=0.05,
        idle_poll_max_s=0.5,
        max_backoff_s=0.5,
        reset_check_interval_s=0.5,
    )
    runtime = SimpleNamespace(settings=settings, uow=lambda: unit_of_work(gateway_db, SOURCE))
    return SimpleNamespace(settings=settings, custodian=custodian, db=gateway_db, runtime=runtime)


@asynccontextmanager
async def fix_client(gateway: SimpleNamespace) -> AsyncIterator[FixCustodianClient]:
    """A FIX client on a new session (as a freshly started gateway has), logged on."""
    async with httpx.AsyncClient() as http, FixLink().session(gateway.settings) as session:
        await session.wait_logged_on(30)
        yield FixCustodianClient(http, session)


async def approve(gateway: SimpleNamespace, orders: dict[str, str]) -> None:
    """Approve one trade per symbol (symbol -> quantity)."""
    trades = [
        TradeV1(
            trade_id=uuid.uuid4(),
            symbol=symbol,
            side="buy",
            quantity=Decimal(quantity),
            estimated_price=Decimal("50.25"),
            estimated_value=Decimal(quantity) * Decimal("50.25"),
            reason="model-change",
            explanation="Buy to target.",
        )
        for symbol, quantity in orders.items()
    ]
    payload = TradesApprovedV1(
        proposal_id=uuid.uuid4(),
        account_id=f"ACC-{uuid.uuid4().hex[:6]}",
        approved_by="policy:auto-approve",
        trades=trades,
    )
    delivery = Delivery(envelope(payload, tenant=TENANT, source="account-svc"), payload)
    async with unit_of_work(gateway.db, SOURCE) as uow:
        await service.record_approved_trades(uow, [delivery], gateway.custodian)


async def approve_and_block(gateway: SimpleNamespace, orders: dict[str, str]) -> dict[str, str]:
    """Approve one trade per symbol (symbol -> quantity) and block them: symbol -> the
    block's client order id."""
    await approve(gateway, orders)
    async with unit_of_work(gateway.db, SOURCE) as uow:
        await service.block_pending(
            uow,
            custodian=gateway.custodian,
            block_account=BLOCK_ACCOUNT,
            window_s=0,
            max_wait_s=60,
            limit=1000,
        )
    blocks = await block_orders(gateway)
    assert {o.symbol for o in blocks.values()} == set(orders)
    return {o.symbol: o.client_order_id for o in blocks.values()}


async def block_orders(gateway: SimpleNamespace) -> dict[str, Order]:
    async with gateway.db.sessions() as session:
        orders = await repo.list_orders(session, TENANT, limit=1000, offset=0)
    return {
        o.client_order_id: o
        for o in orders
        if o.account_id == BLOCK_ACCOUNT and o.custodian == gateway.custodian
    }


async def send(gateway: SimpleNamespace, client: FixCustodianClient) -> service.SendOutcome:
    async with unit_of_work(gateway.db, SOURCE) as uow:
        return await service.send_new_orders(uow, client, 100, gateway.custodian)


async def poll_until(
    gateway: SimpleNamespace,
    client: FixCustodianClient,
    done: Callable[[dict[str, Order]], bool],
    what: str,
) -> dict[str, Order]:
    async def polled() -> dict[str, Order] | None:
        async with unit_of_work(gateway.db, SOURCE) as uow:
            await service.poll_executions(uow, client, 100, gateway.custodian)
        orders = await block_orders(gateway)
        return orders if done(orders) else None

    return await eventually(what, polled, 30, 0.05)


async def executions(gateway: SimpleNamespace, client_order_id: str) -> list[Any]:
    async with gateway.db.sessions() as session:
        return list(await repo.executions_of(session, TENANT, client_order_id))


async def test_logon_and_heartbeats_with_an_idle_session(acceptor: Acceptor, gateway: Any) -> None:
    async with fix_client(gateway) as client:
        await acceptor.line(lambda line: line.startswith("LOGON"), 10, "the logon")
        # Idle for a few heartbeat intervals: both engines keep the session alive.

        async def heartbeats() -> bool:
            return len(acceptor.messages("OUT", "0")) >= 2

        async def initiator_alive() -> bool:
            return bool(acceptor.messages("IN", "1") or acceptor.messages("IN", "0"))

        await eventually("the acceptor's heartbeats", heartbeats, 6 * HEARTBEAT_S, 0.05)
        await eventually(
            "the initiator's test request or heartbeat", initiator_alive, 6 * HEARTBEAT_S, 0.05
        )
        assert client.session.logged_on
    logon_in = acceptor.messages("IN", "A")[0]
    assert logon_in[49] == "BALLAST" and logon_in[56] == "CUSTODIAN"
    assert logon_in[108] == str(HEARTBEAT_S) and logon_in[34] == "1"
    # The initiator logs out when it closes, and the acceptor answers.
    await acceptor.line(lambda line: line.startswith("IN") and "|35=5|" in line, 10, "logout")
    await acceptor.line(lambda line: line.startswith("OUT") and "|35=5|" in line, 10, "logout")
    # A test request is answered with a heartbeat naming it.
    for request in acceptor.messages("IN", "1"):
        assert any(h.get(112) == request[112] for h in acceptor.messages("OUT", "0"))


async def test_partial_fill_then_fill_and_a_reject_become_the_blocks_executions(
    acceptor: Acceptor, gateway: Any
) -> None:
    ids = await approve_and_block(gateway, {"AAPL": "10", "REJ": "3"})
    async with fix_client(gateway) as client:
        outcome = await send(gateway, client)
        assert sorted(outcome.sent) == sorted(ids.values())
        orders = await poll_until(
            gateway,
            client,
            lambda o: o[ids["AAPL"]].status == "filled" and o[ids["REJ"]].status == "rejected",
            "AAPL filled and REJ rejected",
        )

    filled = orders[ids["AAPL"]]
    assert filled.filled_quantity == Decimal("10")
    assert filled.average_price == Decimal("50.25")
    fills = await executions(gateway, ids["AAPL"])
    assert [(e.kind, e.quantity) for e in fills] == [("fill", Decimal("5")), ("fill", Decimal("5"))]
    reports = [r for r in acceptor.messages("OUT", "8") if r[11] == ids["AAPL"] and r[150] == "F"]
    assert [e.execution_id for e in fills] == [r[17] for r in reports]  # ExecID kept
    assert [r[39] for r in reports] == ["1", "2"]  # partially filled, then filled

    rejected = orders[ids["REJ"]]
    assert rejected.filled_quantity == 0
    assert "symbol REJ is not traded here" in (rejected.reject_reason or "")
    [reject] = await executions(gateway, ids["REJ"])
    assert reject.kind == "reject"

    new_orders = {m[11]: m for m in acceptor.messages("IN", "D")}
    assert set(new_orders) == set(ids.values())  # ClOrdID = client order id, each sent once
    aapl = new_orders[ids["AAPL"]]
    assert (aapl[1], aapl[55], aapl[54], aapl[38], aapl[40]) == (
        BLOCK_ACCOUNT,
        "AAPL",
        "1",
        "10",
        "1",
    )
    assert 97 not in aapl  # a first send is no possible resend


async def test_a_sequence_gap_is_filled_by_a_resend_marked_poss_dup(
    acceptor: Acceptor, gateway: Any
) -> None:
    ids = await approve_and_block(gateway, {"HOLDGAP": "10"})
    order_id = ids["HOLDGAP"]
    async with fix_client(gateway) as client:
        await send(gateway, client)
        await acceptor.line(
            lambda line: line.startswith("OUT") and "|150=0|" in line, 10, "the ack"
        )
    await acceptor.line(lambda line: line.startswith("LOGOUT"), 10, "the session to end")

    # While the gateway is away the custodian fills the order: both reports are stored.
    first = await acceptor.command(f"FILL {order_id} 4 50.25")
    second = await acceptor.command(f"FILL {order_id} 6 50.30")
    assert "loggedOn=false" in first and "loggedOn=false" in second

    async with fix_client(gateway) as client:  # the restarted gateway
        orders = await poll_until(
            gateway, client, lambda o: o[order_id].status == "filled", "the order filled"
        )
        journaled = client.session.journal.executions_after(0, 10)

    [resend_request] = acceptor.messages("IN", "2")
    gap_start = int(resend_request[7])
    reports = [m for m in acceptor.messages("OUT", "8") if m[11] == order_id and m[150] == "F"]
    stored, resent = reports[:2], reports[2:]  # made while away; sent again on request
    assert all(43 not in m for m in stored)
    assert [m[34] for m in resent] == [m[34] for m in stored]  # the same sequence numbers
    assert int(stored[0][34]) >= gap_start
    assert all(m.get(43) == "Y" and 122 in m for m in resent)  # PossDupFlag, OrigSendingTime
    assert [(e["quantity"], e["poss_dup"]) for e in journaled] == [("4", True), ("6", True)]
    order = orders[order_id]
    assert order.filled_quantity == Decimal("10")
    assert order.filled_notional == Decimal("4") * Decimal("50.25") + Decimal("6") * Decimal(
        "50.30"
    )
    assert len(await executions(gateway, order_id)) == 2


async def test_a_restarted_gateway_asks_the_status_of_sent_orders_and_resends_a_lost_one(
    acceptor: Acceptor, gateway: Any
) -> None:
    ids = await approve_and_block(gateway, {"HOLDKEPT": "5", "LOSEONE": "7"})
    async with fix_client(gateway) as client:
        outcome = await send(gateway, client)
        assert sorted(outcome.sent) == sorted(ids.values())
        await acceptor.line(lambda line: line == f"DROPPED {ids['LOSEONE']}", 10, "the lost order")
    assert {o.status for o in (await block_orders(gateway)).values()} == {"sent"}

    # The gateway restarts (its order sender and execution poller, sharing one session):
    # the poller settles the sent orders first; a trade approved now goes out as usual.
    order_sender_loop, execution_poller_loop, _ = background_loops(Wakeups())
    loops = [
        asyncio.create_task(order_sender_loop(gateway.runtime)),
        asyncio.create_task(execution_poller_loop(gateway.runtime)),
    ]
    try:
        await approve(gateway, {"AFTER": "3"})

        def settled(o: dict[str, Order]) -> bool:
            after = [x for x in o.values() if x.symbol == "AFTER"]
            done = after and after[0].status == "filled"
            return bool(done) and o[ids["LOSEONE"]].status == "filled"

        orders = await eventually(
            "the lost order resent and filled, and the new one filled",
            lambda: _when(block_orders(gateway), settled),
            45,
            0.05,
        )
    finally:
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    asked = {m[11] for m in acceptor.messages("IN", "H")}
    assert asked == set(ids.values())  # an OrderStatusRequest for each sent order
    logons = acceptor.messages("IN", "A")
    assert len(logons) == 2  # one session for both loops
    answers = {m[11]: m for m in acceptor.messages("OUT", "8") if m[150] == "I"}
    assert answers[ids["HOLDKEPT"]][39] == "0"  # known, new: left to its executions
    assert answers[ids["LOSEONE"]][103] == "5"  # unknown order
    sends = [m for m in acceptor.messages("IN", "D") if m[11] == ids["LOSEONE"]]
    assert [m.get(97) for m in sends] == [None, "Y"]  # the same ClOrdID, a possible resend
    assert [m[11] for m in acceptor.messages("IN", "D")].count(ids["HOLDKEPT"]) == 1
    assert orders[ids["HOLDKEPT"]].status == "sent"
    assert orders[ids["LOSEONE"]].filled_quantity == Decimal("7")


async def test_a_cancel_ends_the_rest_of_a_partly_filled_order(
    acceptor: Acceptor, gateway: Any
) -> None:
    ids = await approve_and_block(gateway, {"HOLDCXL": "10", "DONE": "2"})
    async with fix_client(gateway) as client:
        await send(gateway, client)
        await poll_until(
            gateway, client, lambda o: o[ids["DONE"]].status == "filled", "DONE filled"
        )
        assert "FILL OK" in await acceptor.command(f"FILL {ids['HOLDCXL']} 4 50.25")
        answer = await client.session.cancel(ids["HOLDCXL"])
        too_late = await client.session.cancel(ids["DONE"])
        orders = await poll_until(
            gateway,
            client,
            lambda o: o[ids["HOLDCXL"]].status == "rejected",  # done: 4 filled, the rest not
            "the rest canceled",
        )
    assert answer.canceled and not too_late.canceled
    order = orders[ids["HOLDCXL"]]
    assert order.filled_quantity == Decimal("4")
    assert "canceled by the counterparty" in (order.reject_reason or "")
    [cancel] = acceptor.messages("IN", "F")[:1]
    assert cancel[41] == ids["HOLDCXL"]
    assert acceptor.messages("OUT", "9")[0][41] == ids["DONE"]


async def _when(read: Awaitable[dict[str, Order]], done: Callable[[dict[str, Order]], bool]) -> Any:
    orders = await read
    return orders if done(orders) else None


async def test_a_burst_of_orders_streams_back_without_a_gap(
    acceptor: Acceptor, gateway: Any
) -> None:
    """Hundreds of execution reports back to back: each one read, none asked again."""
    orders = [
        fm.OrderTerms(f"BURST-{i}", BLOCK_ACCOUNT, f"S{i % 25}", "buy", "10", "20.5")
        for i in range(300)
    ]
    async with fix_client(gateway) as client:
        for start in range(0, len(orders), 100):
            await client.session.send_orders(orders[start : start + 100], set())

        async def all_filled() -> bool:
            return client.session.journal.last_seq() >= 2 * len(orders)

        await eventually("every order filled", all_filled, 60, 0.05)
        fills = client.session.journal.executions_after(0, 1000)
    assert len(fills) == 2 * len(orders)
    assert not acceptor.messages("IN", "2")  # no ResendRequest: no message lost on the way
    assert not any(f["poss_dup"] for f in fills)
