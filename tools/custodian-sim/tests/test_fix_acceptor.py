"""The simulator's FIX 4.4 acceptor (asyncfix) with an asyncfix initiator on a real socket:
logon, orders to fills, rejects, status requests, cancels, possible resends, and a restart
that keeps the orders and the session's sequence numbers. The fake clock drives the fills'
latency; the acceptor is woken after each move of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from asyncfix import FMsg, FTag
from custodian_sim.book import OrderBook
from custodian_sim.fix_acceptor import FixAcceptor
from custodian_sim.settings import SimSettings

from .conftest import FakeClock
from .fix_initiator import Fields, Initiator

SPLIT = {"partial_fill_probability": 1.0, "max_fills": 3}


@dataclass
class Custodian:
    acceptor: FixAcceptor
    book: OrderBook
    clock: FakeClock

    def advance(self, ms: float) -> None:
        self.clock.advance(ms)
        self.acceptor.wake()


Factory = Callable[..., Any]


@pytest.fixture
def custodian(clock: FakeClock, tmp_path: Path) -> Factory:
    """``async with custodian(**settings) as sim``: a simulator's book and its FIX acceptor
    on a free port, store files under tmp_path (the same ones each time: a restart)."""

    @asynccontextmanager
    async def _make(**overrides: Any) -> AsyncIterator[Custodian]:
        settings = SimSettings(
            **{
                "latency_ms": 50,
                "latency_jitter_ms": 0,
                "store_path": str(tmp_path / "sim" / "book.sqlite3"),
                "fix_port": 0,
                **overrides,
            }
        )
        book = OrderBook(settings, clock)
        acceptor = FixAcceptor(settings, book)
        await acceptor.start()
        try:
            yield Custodian(acceptor, book, clock)
        finally:
            await acceptor.close()
            book.close()

    return _make


@asynccontextmanager
async def initiator(sim: Custodian, tmp_path: Path) -> AsyncIterator[Initiator]:
    client = Initiator(sim.acceptor.port, tmp_path / "initiator.sqlite")
    await client.start()
    try:
        yield client
    finally:
        await client.close()


def new_order(
    coid: str, *, symbol: str = "AAPL", side: str = "1", quantity: str = "90"
) -> dict[str, str]:
    return {
        FTag.ClOrdID: coid,
        FTag.Account: "BLOCK-1",
        FTag.Symbol: symbol,
        FTag.Side: side,
        FTag.TransactTime: "20260105-14:30:00.000",
        FTag.OrderQty: quantity,
        FTag.OrdType: "1",
        FTag.Price: "187.42",
        FTag.TimeInForce: "0",
    }


def filled(client: Initiator, coid: str) -> bool:
    """The order's last Trade report says filled."""
    trades = reports(client, coid, "F")
    return bool(trades) and trades[-1][FTag.OrdStatus] == "2"


def reports(client: Initiator, coid: str, exec_type: str) -> list[Fields]:
    return [
        m
        for m in client.received
        if m[FTag.MsgType] == FMsg.EXECUTIONREPORT
        and coid in (m.get(FTag.ClOrdID), m.get(FTag.OrigClOrdID))
        and m.get(FTag.ExecType) == exec_type
    ]


async def test_logon_as_the_gateway_expects_it(custodian: Factory, tmp_path: Path) -> None:
    async with custodian() as sim, initiator(sim, tmp_path) as client:
        assert client.logon[FTag.SenderCompID] == "CUSTODIAN"
        assert client.logon[FTag.TargetCompID] == "BALLAST"
        assert client.logon[FTag.HeartBtInt] == "5"
        assert client.logon[FTag.MsgSeqNum] == "1"
        assert sim.acceptor.stats() | {"port": 0} == {
            "port": 0,
            "logged_on": True,
            "next_num_in": 2,
            "next_num_out": 2,
            "reported_seq": 0,
        }


async def test_an_order_is_acknowledged_then_filled_in_pieces(
    custodian: Factory, tmp_path: Path
) -> None:
    async with custodian(**SPLIT) as sim, initiator(sim, tmp_path) as client:
        await client.send(FMsg.NEWORDERSINGLE, new_order("o1"))
        new = await client.answer(lambda m: m.get(FTag.ExecType) == "0", "the order's New")
        assert (new[FTag.ClOrdID], new[FTag.OrdStatus], new[FTag.LeavesQty]) == ("o1", "0", "90")
        sim.advance(10_000)
        await client.until("o1 filled", lambda: filled(client, "o1"))
        trades = reports(client, "o1", "F")
        assert len(trades) >= 2  # partial fills
        assert [t[FTag.OrdStatus] for t in trades] == ["1"] * (len(trades) - 1) + ["2"]
        quantities = [Decimal(t[FTag.LastQty]) for t in trades]
        assert sum(quantities) == 90
        cumulative = [sum(quantities[: i + 1]) for i in range(len(quantities))]
        assert [Decimal(t[FTag.CumQty]) for t in trades] == cumulative
        assert [Decimal(t[FTag.LeavesQty]) for t in trades] == [90 - c for c in cumulative]
        assert {t[FTag.LastPx] for t in trades} == {"187.42"}
        assert {t[FTag.AvgPx] for t in trades} == {"187.42"}
        # the same executions as the HTTP feed's, by id
        page, _ = sim.book.executions_after(0, 100)
        assert [t[FTag.ExecID] for t in trades] == [e.execution_id for e in page]
        assert sim.acceptor.stats()["reported_seq"] == page[-1].seq


async def test_rejects_as_over_http(custodian: Factory, tmp_path: Path) -> None:
    async with custodian(reject_symbols="REJ") as sim, initiator(sim, tmp_path) as client:
        await client.send(FMsg.NEWORDERSINGLE, new_order("r1", symbol="REJ"))
        await client.answer(lambda m: m.get(FTag.ExecType) == "0", "the New")
        sim.advance(100)
        rejected = await client.answer(lambda m: m.get(FTag.ExecType) == "8", "the reject")
        assert rejected[FTag.ClOrdID] == "r1" and rejected[FTag.OrdStatus] == "8"
        assert rejected[FTag.Text] == "symbol REJ is not tradable at this custodian"
        assert rejected[FTag.ExecID] == "r1-x1"


async def test_a_bad_order_is_refused_naming_its_tag_and_nothing_is_stored(
    custodian: Factory, tmp_path: Path
) -> None:
    async with custodian() as sim, initiator(sim, tmp_path) as client:
        await client.send(FMsg.NEWORDERSINGLE, new_order("bad", quantity="-5"))
        await client.send(FMsg.NEWORDERSINGLE, new_order("bad-side", side="7"))
        await client.send(FMsg.ORDERSTATUSREQUEST, {FTag.OrdStatusReqID: "q", FTag.Symbol: "X"})
        refused = await client.answer(lambda m: m.get(FTag.ClOrdID) == "bad", "the refusal")
        assert (refused[FTag.ExecType], refused[FTag.OrdStatus]) == ("8", "8")
        assert refused[FTag.Text] == "OrderQty(38): Input should be greater than 0"
        side = await client.answer(lambda m: m.get(FTag.ClOrdID) == "bad-side", "the refusal")
        assert side[FTag.Text] == "Side(54) must be 1 (buy) or 2 (sell), got '7'"
        reject = await client.answer(lambda m: m[FTag.MsgType] == FMsg.REJECT, "a session reject")
        assert (reject[FTag.RefTagID], reject[FTag.RefMsgType]) == ("11", "H")
        assert sim.book.stats()["orders_received"] == 0
        assert client.logged_on


async def test_status_request_by_clordid(custodian: Factory, tmp_path: Path) -> None:
    async with custodian(**SPLIT) as sim, initiator(sim, tmp_path) as client:
        await client.send(FMsg.NEWORDERSINGLE, new_order("s1"))
        await client.answer(lambda m: m.get(FTag.ExecType) == "0", "the New")
        sim.advance(50)  # the first piece only
        await client.answer(lambda m: m.get(FTag.ExecType) == "F", "the first fill")
        first = Decimal(reports(client, "s1", "F")[0][FTag.LastQty])
        for request_id, coid in (("q1", "s1"), ("q2", "nope")):
            await client.send(
                FMsg.ORDERSTATUSREQUEST,
                {
                    FTag.OrdStatusReqID: request_id,
                    FTag.ClOrdID: coid,
                    FTag.Symbol: "AAPL",
                    FTag.Side: "1",
                },
            )
        known = await client.answer(lambda m: m.get(FTag.OrdStatusReqID) == "q1", "status of s1")
        assert (known[FTag.ExecType], known[FTag.OrdStatus]) == ("I", "1")
        assert Decimal(known[FTag.CumQty]) == first
        assert Decimal(known[FTag.LeavesQty]) == 90 - first
        unknown = await client.answer(
            lambda m: m.get(FTag.OrdStatusReqID) == "q2", "status of nope"
        )
        assert (unknown[FTag.OrdStatus], unknown[FTag.OrdRejReason]) == ("8", "5")


async def test_cancel_ends_the_rest_and_is_refused_when_too_late_or_unknown(
    custodian: Factory, tmp_path: Path
) -> None:
    async with custodian(**SPLIT) as sim, initiator(sim, tmp_path) as client:
        for coid in ("c1", "c2"):
            await client.send(FMsg.NEWORDERSINGLE, new_order(coid))
        await client.until("the New of c2", lambda: reports(client, "c2", "0"))
        sim.advance(50)
        await client.until("c1's first fill", lambda: reports(client, "c1", "F"))
        first = Decimal(reports(client, "c1", "F")[0][FTag.LastQty])
        await client.send(FMsg.ORDERCANCELREQUEST, _cancel("x1", "c1"))
        canceled = await client.answer(lambda m: m.get(FTag.ClOrdID) == "x1", "the cancel")
        assert (canceled[FTag.ExecType], canceled[FTag.OrdStatus]) == ("4", "4")
        assert canceled[FTag.OrigClOrdID] == "c1"
        assert Decimal(canceled[FTag.CumQty]) == first and canceled[FTag.LeavesQty] == "0"
        order = sim.book.get_order("c1")
        assert order is not None and order.filled_quantity == first and order.canceled

        sim.advance(10_000)  # c2 fills; c1 gets nothing more
        await client.until("c2 filled", lambda: filled(client, "c2"))
        assert len(reports(client, "c1", "F")) == 1
        await client.send(FMsg.ORDERCANCELREQUEST, _cancel("x2", "c2"))
        await client.send(FMsg.ORDERCANCELREQUEST, _cancel("x3", "ghost"))
        late = await client.answer(lambda m: m.get(FTag.ClOrdID) == "x2", "the cancel reject")
        assert late[FTag.MsgType] == FMsg.ORDERCANCELREJECT
        assert (late[FTag.CxlRejReason], late[FTag.OrdStatus]) == ("0", "2")
        ghost = await client.answer(lambda m: m.get(FTag.ClOrdID) == "x3", "the cancel reject")
        assert ghost[FTag.CxlRejReason] == "1"


def _cancel(cancel_id: str, coid: str) -> dict[str, str]:
    return {
        FTag.OrigClOrdID: coid,
        FTag.ClOrdID: cancel_id,
        FTag.Symbol: "AAPL",
        FTag.Side: "1",
        FTag.TransactTime: "20260105-14:30:00.000",
        FTag.OrderQty: "90",
    }


async def test_a_possible_resend_of_a_known_order_is_no_second_order(
    custodian: Factory, tmp_path: Path
) -> None:
    async with custodian() as sim, initiator(sim, tmp_path) as client:
        await client.send(FMsg.NEWORDERSINGLE, new_order("p1"))
        await client.answer(lambda m: m.get(FTag.ExecType) == "0", "the New")
        sim.advance(100)
        await client.answer(lambda m: m.get(FTag.ExecType) == "F", "the fill")
        await client.send(FMsg.NEWORDERSINGLE, new_order("p1") | {FTag.PossResend: "Y"})
        status = await client.answer(lambda m: m.get(FTag.ExecType) == "I", "its status")
        assert (status[FTag.ClOrdID], status[FTag.OrdStatus], status[FTag.CumQty]) == (
            "p1",
            "2",
            "90",
        )
        await client.send(FMsg.NEWORDERSINGLE, new_order("p1"))  # no PossResend: a duplicate
        dup = await client.answer(lambda m: m.get(FTag.OrdRejReason) == "6", "the duplicate reject")
        assert dup[FTag.ClOrdID] == "p1" and dup[FTag.ExecType] == "8"
        sim.advance(10_000)
        stats = sim.book.stats()
        assert stats["orders_received"] == 1 and stats["fills"] == 1
        assert stats["orders_by_times_submitted"] == {"3": 1}
        assert stats["possible_resends"] == 1
        assert len(reports(client, "p1", "F")) == 1


async def test_a_restart_keeps_orders_sequence_numbers_and_unsent_reports(
    custodian: Factory, tmp_path: Path
) -> None:
    async with custodian(**SPLIT, latency_ms=100) as sim, initiator(sim, tmp_path) as client:
        for i in range(5):
            await client.send(FMsg.NEWORDERSINGLE, new_order(f"k{i}"))
        await client.until("the last New", lambda: reports(client, "k4", "0"))
        sim.advance(100)  # the first piece of each
        await client.until(
            "first fills", lambda: all(reports(client, f"k{i}", "F") for i in range(5))
        )
        before = client.next_numbers
        acceptor_numbers = sim.acceptor.stats()
    # the simulator stopped (its session and book closed); the initiator's link is gone
    async with custodian(**SPLIT, latency_ms=100) as sim:
        assert sim.book.stats()["orders_received"] == 5
        assert sim.acceptor.stats()["next_num_in"] >= acceptor_numbers["next_num_in"]
        assert sim.acceptor.stats()["next_num_out"] == acceptor_numbers["next_num_out"]
        again = Initiator(sim.acceptor.port, tmp_path / "initiator.sqlite")
        await again.start()  # the numbers go on: a logon at 1 would be refused as too low
        try:
            assert int(again.logon[FTag.MsgSeqNum]) == before[0]
            sim.advance(10_000)
            await again.until(
                "the rest of every order", lambda: all(filled(again, f"k{i}") for i in range(5))
            )
            await again.send(FMsg.NEWORDERSINGLE, new_order("k0") | {FTag.PossResend: "Y"})
            await again.answer(lambda m: m.get(FTag.ExecType) == "I", "k0's status")
        finally:
            await again.close()
        executions = [*client.received, *again.received]
        trades = [m[FTag.ExecID] for m in executions if m.get(FTag.ExecType) == "F"]
        assert len(trades) == len(set(trades))  # none reported twice across the restart
        page, _ = sim.book.executions_after(0, 100)
        assert sorted(trades) == sorted(e.execution_id for e in page)
        assert sim.book.stats()["orders_received"] == 5
