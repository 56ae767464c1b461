"""The simulator's FIX 4.4 acceptor on the asyncfix engine (docs/fix.md, "The simulator's
acceptor").

The engine does the session layer, as acceptor: it answers the initiator's Logon, keeps the
sequence numbers and every message sent in its SQLite journal (`SIM_FIX_STORE_PATH`), asks
for a resend when the initiator's numbers jump ahead, and answers a ResendRequest with the
stored messages (PossDupFlag=Y) and gap fills. This module adds the custodian:

- NewOrderSingle: the order goes into the simulator's store as an HTTP order does (the same
  checks, the same planned fills, partial fills and rejects) and is acknowledged (New); a
  ClOrdID it already has is no second order: with PossResend=Y or PossDupFlag=Y its status is
  the answer, without them a reject as a duplicate (OrdRejReason 6);
- every execution released for an order taken over FIX is sent as an ExecutionReport (Trade,
  Rejected, Canceled), in sequence, from the store: the last one sent is kept there too, so a
  restarted simulator sends what it had not sent yet (ExecIDs are stable, a copy is harmless);
- OrderStatusRequest: the order's status by ClOrdID (OrdStatus 8 with OrdRejReason 5 when
  unknown); OrderCancelRequest: the rest of the order cancelled, or an OrderCancelReject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from asyncfix import FIXMessage, FMsg, FTag, Journaler
from asyncfix.connection import AsyncFIXConnection, ConnectionRole, ConnectionState
from asyncfix.errors import FIXConnectionError
from asyncfix.protocol import FIXProtocol44
from ballast_common.fix_engine import FramedCodec, IgnoresOldPossDups
from pydantic import ValidationError

from custodian_sim.book import Order, OrderBook, OrderConflictError, OrderRequest
from custodian_sim.order_terms import OrderIn
from custodian_sim.settings import SimSettings
from custodian_sim.store import FixReport

log = logging.getLogger("custodian_sim.fix")

SIDES = {"1": "buy", "2": "sell"}
SIDE_CODES = {name: code for code, name in SIDES.items()}
# The FIX tag of each term of an order (order_terms.OrderIn's fields).
TERM_TAGS = {
    "client_order_id": FTag.ClOrdID,
    "account_id": FTag.Account,
    "symbol": FTag.Symbol,
    "side": FTag.Side,
    "quantity": FTag.OrderQty,
    "reference_price": FTag.Price,
}
# OrdRejReason(103), CxlRejReason(102), SessionRejectReason(373), BusinessRejectReason(380)
REJ_OTHER, REJ_UNKNOWN_ORDER, REJ_DUPLICATE = "99", "5", "6"
CXL_TOO_LATE, CXL_UNKNOWN_ORDER = "0", "1"
SESSION_REQUIRED_TAG_MISSING = "1"
BUSINESS_UNSUPPORTED_MESSAGE_TYPE = "3"
REPORT_BATCH = 500


class _Session(IgnoresOldPossDups, AsyncFIXConnection):
    """The engine's connection in the acceptor role: one initiator at a time."""

    def __init__(self, settings: SimSettings, owner: FixAcceptor) -> None:
        store = settings.fix_session_store()
        if store is not None:
            Path(store).parent.mkdir(parents=True, exist_ok=True)
        journaler = Journaler(store)
        super().__init__(
            protocol=FIXProtocol44(),
            sender_comp_id=settings.fix_sender_comp_id,
            target_comp_id=settings.fix_target_comp_id,
            journaler=journaler,
            host=settings.host,
            port=settings.fix_port or 0,
            heartbeat_period=settings.fix_heartbeat_s,
            logger=logging.getLogger("custodian_sim.fix.engine"),
        )
        self._connection_role = ConnectionRole.ACCEPTOR
        self._codec = FramedCodec(self.protocol)
        self._owner = owner
        self._server: asyncio.Server | None = None
        # As the gateway's: the engine commits each message; WAL makes that ~1 ms, NORMAL
        # survives a killed process (docs/fix.md, defect 6).
        journaler.conn.commit()
        journaler.conn.execute("PRAGMA journal_mode=WAL")
        journaler.conn.execute("PRAGMA synchronous=NORMAL")

    async def listen(self) -> int:
        """Start the engine's reader and heartbeat tasks and listen; returns the port."""
        await super().connect()
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._connection_state > ConnectionState.DISCONNECTED_BROKEN_CONN:
            with contextlib.suppress(OSError, FIXConnectionError):
                await self.disconnect(ConnectionState.DISCONNECTED_WCONN_TODAY)
        tasks = [t for t in (self._aio_task_socket_read, self._aio_task_heartbeat) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._journaler.conn.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._socket_writer is not None:  # type: ignore[has-type]
            log.warning(
                "FIX connection refused: a session is connected already",
                extra={"peer": repr(writer.get_extra_info("peername"))},
            )
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        self._socket_reader, self._socket_writer = reader, writer
        self._connection_role = ConnectionRole.ACCEPTOR
        await self._state_set(ConnectionState.NETWORK_CONN_ESTABLISHED)
        log.info("FIX connection accepted", extra={"peer": repr(writer.get_extra_info("peername"))})

    async def _process_logon(self, logon_msg: FIXMessage) -> None:
        # The initiator's HeartBtInt is the session's (FIX); the engine keeps its own.
        with contextlib.suppress(ValueError, TypeError):
            self._heartbeat_period = max(1, int(logon_msg.get(FTag.HeartBtInt, "0")))
        await super()._process_logon(logon_msg)

    async def on_connect(self) -> None:
        """The acceptor waits for the initiator's Logon."""

    async def on_logon(self, is_healthy: bool) -> None:
        log.info(
            "FIX session logged on",
            extra={
                "in_sync": is_healthy,
                "next_num_in": self._session.next_num_in,
                "next_num_out": self._session.next_num_out,
            },
        )

    async def on_logout(self, msg: FIXMessage) -> None:
        log.info("FIX initiator logged out", extra={"text": msg.get(FTag.Text, "")})

    async def on_disconnect(self) -> None:
        log.info("FIX session disconnected")

    async def on_state_change(self, connection_state: ConnectionState) -> None:
        if connection_state == ConnectionState.ACTIVE:
            self._owner.wake()

    async def on_message(self, msg: FIXMessage) -> None:
        # The engine counts the message as received only after this returns.
        await self._owner.received(msg)

    @property
    def sequence_numbers(self) -> tuple[int, int]:
        """(next expected in, next to send out)."""
        return self._session.next_num_in, self._session.next_num_out


class FixAcceptor:
    """The simulator's FIX session: orders in, executions out, all kept in the book's
    store. start() once, close() at the end; from one event loop."""

    def __init__(self, settings: SimSettings, book: OrderBook) -> None:
        self.settings = settings
        self.book = book
        self._session = _Session(settings, self)
        self._wake = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._ids = 0
        self._run = f"{datetime.now(UTC):%Y%m%d%H%M%S%f}"
        self.port = 0

    @property
    def logged_on(self) -> bool:
        return self._session.connection_state == ConnectionState.ACTIVE

    async def start(self) -> None:
        """Listen on SIM_HOST:SIM_FIX_PORT and start reporting executions."""
        self.port = await self._session.listen()
        self._reporter = asyncio.create_task(self._report_loop())
        next_in, next_out = self._session.sequence_numbers
        log.info(
            "FIX acceptor listening",
            extra={
                "port": self.port,
                "sender_comp_id": self.settings.fix_sender_comp_id,
                "target_comp_id": self.settings.fix_target_comp_id,
                "next_num_in": next_in,
                "next_num_out": next_out,
                "reported_seq": self.book.store.fix_reported_seq(),
            },
        )

    async def close(self) -> None:
        """Stop reporting, close the connection and the session's journal."""
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
        await self._session.stop()

    def wake(self) -> None:
        """Look for executions to report now (an order came, the clock moved)."""
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        next_in, next_out = self._session.sequence_numbers
        return {
            "port": self.port,
            "logged_on": self.logged_on,
            "next_num_in": next_in,
            "next_num_out": next_out,
            "reported_seq": self.book.store.fix_reported_seq(),
        }

    # -- messages in --------------------------------------------------------------------------

    async def received(self, msg: FIXMessage) -> None:
        """An application message from the initiator."""
        fields = _fields(msg)
        msg_type = msg.msg_type
        if msg_type == FMsg.NEWORDERSINGLE:
            await self._new_order(fields)
        elif msg_type == FMsg.ORDERSTATUSREQUEST:
            await self._status_request(fields)
        elif msg_type == FMsg.ORDERCANCELREQUEST:
            await self._cancel_request(fields)
        else:
            log.warning("FIX message of an unsupported type refused", extra={"type": msg_type})
            await self._send(
                FMsg.BUSINESSMESSAGEREJECT,
                {
                    FTag.RefSeqNum: fields.get(FTag.MsgSeqNum, "0"),
                    FTag.RefMsgType: str(msg_type),
                    FTag.BusinessRejectReason: BUSINESS_UNSUPPORTED_MESSAGE_TYPE,
                    FTag.Text: f"MsgType {msg_type} is not taken by this custodian",
                },
            )

    async def _new_order(self, fields: Mapping[str, str]) -> None:
        client_order_id = fields.get(FTag.ClOrdID, "")
        if not client_order_id:
            await self._session_reject(fields, FTag.ClOrdID, "ClOrdID(11) is required")
            return
        flagged = fields.get(FTag.PossResend) == "Y" or fields.get(FTag.PossDupFlag) == "Y"
        try:
            terms = order_in(fields, possible_resend=flagged)
        except ValueError as exc:
            log.info("FIX order refused", extra={"client_order_id": client_order_id})
            await self._send_report(refusal(fields, REJ_OTHER, str(exc), self._exec_id("refused")))
            return
        request = OrderRequest(
            client_order_id=terms.client_order_id,
            account_id=terms.account_id,
            symbol=terms.symbol,
            side=terms.side,
            quantity=terms.quantity,
            reference_price=terms.reference_price,
            possible_resend=terms.possible_resend,
        )
        try:
            result = self.book.submit([request], channel="fix")
        except OrderConflictError as exc:
            await self._send_report(refusal(fields, REJ_DUPLICATE, str(exc), self._exec_id("dup")))
            return
        if result.accepted:
            self.wake()
            await self._send_report(acknowledgement(request))
            return
        order = self.book.get_order(client_order_id)
        if flagged and order is not None:  # sent before: its status is the answer
            log.info(
                "FIX possible resend of a known order", extra={"client_order_id": client_order_id}
            )
            await self._send_report(status_report(order, client_order_id, None, self._exec_id("s")))
            return
        text = f"ClOrdID {client_order_id} is an order this custodian has (no PossResend)"
        await self._send_report(refusal(fields, REJ_DUPLICATE, text, self._exec_id("dup")))

    async def _status_request(self, fields: Mapping[str, str]) -> None:
        client_order_id = fields.get(FTag.ClOrdID, "")
        if not client_order_id:
            await self._session_reject(fields, FTag.ClOrdID, "ClOrdID(11) is required")
            return
        order = self.book.get_order(client_order_id)
        report = status_report(
            order, client_order_id, fields.get(FTag.OrdStatusReqID), self._exec_id("s")
        )
        if order is None:
            report |= {
                FTag.Symbol: fields.get(FTag.Symbol, "NA"),
                FTag.Side: fields.get(FTag.Side, "1"),
            }
        await self._send_report(report)

    async def _cancel_request(self, fields: Mapping[str, str]) -> None:
        order_id, cancel_id = fields.get(FTag.OrigClOrdID, ""), fields.get(FTag.ClOrdID, "")
        if not order_id or not cancel_id:
            missing = FTag.OrigClOrdID if not order_id else FTag.ClOrdID
            await self._session_reject(fields, missing, f"tag {missing} is required")
            return
        result = self.book.cancel(order_id, cancel_id)
        if result.outcome == "canceled":
            self.wake()  # the cancel is an execution, reported in sequence
            return
        if result.outcome == "unknown":
            reason, text, status = CXL_UNKNOWN_ORDER, f"unknown order {order_id}", "8"
        else:
            assert result.order is not None
            reason, status = CXL_TOO_LATE, ord_status(result.order)
            text = f"too late to cancel: the order is {result.order.status}"
        await self._send(
            FMsg.ORDERCANCELREJECT,
            {
                FTag.OrderID: order_id if result.order else "NONE",
                FTag.ClOrdID: cancel_id,
                FTag.OrigClOrdID: order_id,
                FTag.OrdStatus: status,
                FTag.CxlRejResponseTo: "1",
                FTag.CxlRejReason: reason,
                FTag.Text: text,
            },
        )

    async def _session_reject(self, fields: Mapping[str, str], tag: str, text: str) -> None:
        await self._send(
            FMsg.REJECT,
            {
                FTag.RefSeqNum: fields.get(FTag.MsgSeqNum, "0"),
                FTag.RefTagID: str(tag),
                FTag.RefMsgType: fields.get(FTag.MsgType, ""),
                FTag.SessionRejectReason: SESSION_REQUIRED_TAG_MISSING,
                FTag.Text: text,
            },
        )

    # -- executions out -----------------------------------------------------------------------

    async def _report_loop(self) -> None:
        """Send every released execution of a FIX order not reported yet, in sequence."""
        store = self.book.store
        while True:
            try:
                await self._report_due()
                wait = self._until_next_due()
            except (OSError, FIXConnectionError) as exc:  # the link dropped while sending
                log.info("FIX reports wait for the next logon", extra={"error": repr(exc)})
                wait = 1.0
            except Exception:
                log.exception("FIX reports failed; trying again", extra={"store": store.path})
                wait = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _report_due(self) -> None:
        store = self.book.store
        while self.logged_on:
            self.book.release_due()
            reports = store.fix_reports_after(store.fix_reported_seq(), REPORT_BATCH)
            if not reports:
                return
            sent = 0
            try:
                for report in reports:
                    if not self.logged_on:
                        break
                    await self._send_report(execution_report(report))
                    sent = report.execution.seq
            finally:
                if sent:
                    store.set_fix_reported_seq(sent)
            if len(reports) < REPORT_BATCH:
                return

    def _until_next_due(self) -> float:
        """Seconds until the next planned execution falls due (at most one)."""
        due = self.book.store.next_due()
        if due is None:
            return 1.0
        return min(1.0, max(0.005, (due - self.book.clock()).total_seconds()))

    async def _send_report(self, body: Mapping[str, str]) -> None:
        await self._send(FMsg.EXECUTIONREPORT, body)

    async def _send(self, msg_type: str, body: Mapping[str, str]) -> None:
        await self._session.send_msg(FIXMessage(msg_type, dict(body)))

    def _exec_id(self, kind: str) -> str:
        """An ExecID for a report that is no execution (status, refusal): unique per run."""
        self._ids += 1
        return f"{kind}-{self._run}-{self._ids}"


# -- the messages (pure) ----------------------------------------------------------------------


def _fields(msg: FIXMessage) -> dict[str, str]:
    fields = {str(tag): value for tag, value in msg.items() if isinstance(value, str)}
    fields[FTag.MsgType] = str(msg.msg_type)
    return fields


def order_in(fields: Mapping[str, str], *, possible_resend: bool) -> OrderIn:
    """A NewOrderSingle's terms, checked as `POST /orders` checks them; ValueError naming
    the tag of the first bad one."""
    side = fields.get(FTag.Side)
    if side not in SIDES:
        raise ValueError(f"Side(54) must be 1 (buy) or 2 (sell), got {side!r}")
    values: dict[str, Any] = {
        name: fields.get(tag) for name, tag in TERM_TAGS.items() if tag in fields
    }
    values["side"] = SIDES[side]
    try:
        return OrderIn(**values, possible_resend=possible_resend)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        tag = TERM_TAGS.get(name)
        where = f"{tag.name}({tag.value})" if tag else name
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "required"
        raise ValueError(f"{where}: {message}") from None


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def _fix_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def ord_status(order: Order) -> str:
    """OrdStatus(39) of an order."""
    if order.rejected:
        return "4" if order.canceled else "8"
    return {"accepted": "0", "partially_filled": "1", "filled": "2"}[order.status]


def acknowledgement(request: OrderRequest) -> dict[str, str]:
    """ExecutionReport New (150=0) for an order taken."""
    return {
        FTag.OrderID: request.client_order_id,
        FTag.ClOrdID: request.client_order_id,
        FTag.ExecID: f"{request.client_order_id}-new",
        FTag.ExecType: "0",
        FTag.OrdStatus: "0",
        FTag.Account: request.account_id,
        FTag.Symbol: request.symbol,
        FTag.Side: SIDE_CODES[request.side],
        FTag.OrderQty: _plain(request.quantity),
        FTag.LeavesQty: _plain(request.quantity),
        FTag.CumQty: "0",
        FTag.AvgPx: "0",
        FTag.TransactTime: _now(),
    }


def refusal(fields: Mapping[str, str], reason: str, text: str, exec_id: str) -> dict[str, str]:
    """ExecutionReport Rejected (150=8) for a NewOrderSingle not taken (nothing stored)."""
    return {
        FTag.OrderID: "NONE",
        FTag.ClOrdID: fields.get(FTag.ClOrdID, ""),
        FTag.ExecID: exec_id,
        FTag.ExecType: "8",
        FTag.OrdStatus: "8",
        FTag.OrdRejReason: reason,
        FTag.Symbol: fields.get(FTag.Symbol) or "NA",
        FTag.Side: fields.get(FTag.Side) or "1",
        FTag.LeavesQty: "0",
        FTag.CumQty: "0",
        FTag.AvgPx: "0",
        FTag.TransactTime: _now(),
        FTag.Text: text[:200],
    }


def status_report(
    order: Order | None, client_order_id: str, request_id: str | None, exec_id: str
) -> dict[str, str]:
    """ExecutionReport Order Status (150=I): where an order stands, or that it is unknown."""
    report = {FTag.ClOrdID: client_order_id, FTag.ExecID: exec_id, FTag.ExecType: "I"}
    if request_id:
        report[FTag.OrdStatusReqID] = request_id
    if order is None:
        return report | {
            FTag.OrderID: "NONE",
            FTag.OrdStatus: "8",
            FTag.OrdRejReason: REJ_UNKNOWN_ORDER,
            FTag.LeavesQty: "0",
            FTag.CumQty: "0",
            FTag.AvgPx: "0",
            FTag.Text: f"unknown order {client_order_id}",
        }
    r, done = order.request, order.rejected or order.status == "filled"
    filled = order.filled_quantity
    report |= {
        FTag.OrderID: client_order_id,
        FTag.OrdStatus: ord_status(order),
        FTag.Account: r.account_id,
        FTag.Symbol: r.symbol,
        FTag.Side: SIDE_CODES[r.side],
        FTag.OrderQty: _plain(r.quantity),
        FTag.LeavesQty: "0" if done else _plain(r.quantity - filled),
        FTag.CumQty: _plain(filled),
        FTag.AvgPx: _plain(order.filled_value / filled) if filled else "0",
    }
    if order.reject_reason:
        report[FTag.Text] = order.reject_reason[:200]
    return report


def execution_report(report: FixReport) -> dict[str, str]:
    """The ExecutionReport of a released execution: a fill is a Trade (150=F); a reject of
    the whole order Rejected (8); the end of a partly filled order's rest, or a cancel the
    client asked for, Canceled (4, the cancel's ClOrdID with the order's as OrigClOrdID)."""
    e = report.execution
    filled = report.filled
    body = {
        FTag.OrderID: e.client_order_id,
        FTag.ClOrdID: e.client_order_id,
        FTag.ExecID: f"{e.client_order_id}-x{e.piece + 1}",
        FTag.Account: e.account_id,
        FTag.Symbol: e.symbol,
        FTag.Side: SIDE_CODES[e.side],
        FTag.OrderQty: _plain(report.order_quantity),
        FTag.CumQty: _plain(filled),
        FTag.AvgPx: _plain(report.filled_value / filled) if filled else "0",
        FTag.TransactTime: _fix_time(e.executed_at),
    }
    if e.kind == "fill":
        done = filled >= report.order_quantity
        return body | {
            FTag.ExecType: "F",
            FTag.OrdStatus: "2" if done else "1",
            FTag.LastQty: _plain(e.quantity),
            FTag.LastPx: _plain(e.price or Decimal(0)),
            FTag.LeavesQty: _plain(report.order_quantity - filled),
        }
    body |= {FTag.LeavesQty: "0", FTag.Text: (e.reason or "rejected")[:200]}
    if e.cancel_id is not None:
        return body | {
            FTag.ExecType: "4",
            FTag.OrdStatus: "4",
            FTag.ClOrdID: e.cancel_id,
            FTag.OrigClOrdID: e.client_order_id,
        }
    if filled > 0:
        return body | {FTag.ExecType: "4", FTag.OrdStatus: "4"}
    return body | {FTag.ExecType: "8", FTag.OrdStatus: "8", FTag.OrdRejReason: REJ_OTHER}
