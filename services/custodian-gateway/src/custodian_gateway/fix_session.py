"""The gateway's FIX 4.4 initiator session on the asyncfix engine (docs/fix.md).

The engine does the session layer: logon, heartbeats and test requests, sequence numbers
kept in its SQLite journal across restarts, ResendRequest when the counterparty's sequence
jumps ahead, and answering its ResendRequests with our stored messages marked PossDupFlag=Y.
This module adds what the gateway needs on top:

- sending block orders as NewOrderSingle (ClOrdID = client order id; PossResend=Y when the
  order may have gone out before), their terms remembered in `FixJournal` first;
- every ExecutionReport's fill or reject written to `FixJournal` before the engine counts the
  message as received (the execution feed the poller reads);
- OrderStatusRequest and OrderCancelRequest as awaitable calls with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from asyncfix import AsyncFIXClient, ConnectionState, FIXMessage, FMsg, FTag, Journaler
from asyncfix.errors import FIXConnectionError
from asyncfix.protocol import FIXProtocol44
from ballast_common.fix_engine import FramedCodec, IgnoresOldPossDups

from custodian_gateway import fix_messages as fm
from custodian_gateway.fix_journal import FixJournal

log = logging.getLogger(__name__)
T = TypeVar("T")


class FixUnavailable(Exception):
    """The FIX session is not logged on, or the counterparty did not answer in time."""


@dataclass(frozen=True)
class FixSessionConfig:
    host: str
    port: int
    sender_comp_id: str
    target_comp_id: str
    heartbeat_s: int
    store_dir: Path
    request_timeout_s: float


@dataclass(frozen=True)
class CancelAnswer:
    """What the counterparty answered to a cancel: `canceled`, or the reject's reason."""

    canceled: bool
    reason: str | None


def message_fields(msg: FIXMessage) -> dict[int, str]:
    """A decoded message's plain fields by tag (repeating groups left out)."""
    fields = {int(tag): value for tag, value in msg.items() if isinstance(value, str)}
    fields[fm.MSG_TYPE] = str(msg.msg_type)
    return fields


class _Connection(IgnoresOldPossDups, AsyncFIXClient):
    """The engine's initiator connection with the gateway's application callbacks."""

    def __init__(self, config: FixSessionConfig, owner: FixSession) -> None:
        config.store_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            protocol=FIXProtocol44(),
            sender_comp_id=config.sender_comp_id,
            target_comp_id=config.target_comp_id,
            journaler=Journaler(str(config.store_dir / "session.sqlite")),
            host=config.host,
            port=config.port,
            heartbeat_period=config.heartbeat_s,
            logger=logging.getLogger("custodian_gateway.fix.engine"),
        )
        self._owner = owner
        self._codec = FramedCodec(self.protocol)
        # The engine commits every message; in its default rollback journal that is ~10 ms
        # each here (25 orders/s), with WAL ~1 ms. NORMAL survives a killed process; an OS
        # crash may lose its last sequence numbers (docs/fix.md).
        self._journaler.conn.commit()  # loading a known session leaves a transaction open
        self._journaler.conn.execute("PRAGMA journal_mode=WAL")
        self._journaler.conn.execute("PRAGMA synchronous=NORMAL")

    async def on_connect(self) -> None:
        logon = FIXMessage(FMsg.LOGON)
        logon[FTag.EncryptMethod] = "0"
        logon[FTag.HeartBtInt] = str(self.heartbeat_period)
        await self.send_msg(logon)

    async def on_logon(self, is_healthy: bool) -> None:
        log.info("FIX session logged on", extra={"in_sync": is_healthy})

    async def on_logout(self, msg: FIXMessage) -> None:
        log.warning("FIX counterparty logged out", extra={"text": msg.get(FTag.Text, "")})

    async def on_disconnect(self) -> None:
        log.warning("FIX session disconnected")

    async def on_state_change(self, connection_state: ConnectionState) -> None:
        self._owner._state_changed(connection_state)

    async def on_message(self, msg: FIXMessage) -> None:
        # The engine persists the message's sequence number only after this returns.
        self._owner._received(message_fields(msg))


class FixSession:
    """One FIX initiator session to the custodian; start() once, close() at the end."""

    def __init__(self, config: FixSessionConfig) -> None:
        self.config = config
        self.journal = FixJournal(config.store_dir / "executions.sqlite")
        self._connection = _Connection(config, self)
        self._active = asyncio.Event()
        self._down = asyncio.Event()
        self._status_waiters: dict[str, asyncio.Future[fm.OrderStatus]] = {}
        self._cancel_waiters: dict[str, asyncio.Future[CancelAnswer]] = {}
        self._ids = itertools.count(1)
        self._run = f"{datetime.now(UTC):%Y%m%d%H%M%S%f}"

    @property
    def logged_on(self) -> bool:
        return self._connection.connection_state == ConnectionState.ACTIVE

    async def start(self) -> None:
        """Connect and log on; the engine reconnects by itself when the link drops."""
        await self._connection.connect()

    async def wait_logged_on(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._active.wait(), timeout_s)
        except TimeoutError:
            raise FixUnavailable(
                f"FIX session to {self.config.host}:{self.config.port} not logged on "
                f"within {timeout_s} s (state {self._connection.connection_state.name})"
            ) from None

    async def close(self) -> None:
        """Log out (waiting briefly for the counterparty's Logout), stop the engine's tasks
        and close the journals."""
        connection = self._connection
        if self.logged_on:
            self._down.clear()
            await connection.send_msg(FIXMessage(FMsg.LOGOUT))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._down.wait(), self.config.request_timeout_s)
        await connection.disconnect(ConnectionState.DISCONNECTED_WCONN_TODAY)
        tasks = [
            task
            for task in (connection._aio_task_socket_read, connection._aio_task_heartbeat)
            if task is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        connection._journaler.conn.close()
        self.journal.close()

    async def send_orders(
        self, orders: Sequence[fm.OrderTerms], possible_resends: set[str]
    ) -> list[str]:
        """Send each order as a NewOrderSingle; returns the ids handed to the session.

        The terms are journaled first. An order handed to a logged-on session is the
        session's to deliver (resent with PossDupFlag=Y if the counterparty missed it).
        Raises FixUnavailable when the session is not logged on or drops meanwhile: the
        caller keeps the orders and sends them again later, as possible resends."""
        self._require_logged_on()
        self.journal.record_sent(list(orders), possible_resends)
        sent: list[str] = []
        for order in orders:
            if not self.logged_on:
                break
            body = fm.new_order_single(
                order, order.client_order_id in possible_resends, datetime.now(UTC)
            )
            await self._send(fm.NEW_ORDER_SINGLE, body)
            sent.append(order.client_order_id)
        return sent

    async def order_status(self, client_order_id: str) -> fm.OrderStatus:
        """Ask the counterparty where an order stands (OrderStatusRequest)."""
        terms = self.journal.sent_order(client_order_id)
        if terms is None:
            raise FixUnavailable(
                f"order {client_order_id} was never sent over this FIX session (its journal "
                f"in {self.config.store_dir} does not have it): its symbol and side, which "
                "OrderStatusRequest needs, are unknown"
            )
        self._require_logged_on()
        request_id = f"S-{self._run}-{next(self._ids)}"
        waiter: asyncio.Future[fm.OrderStatus] = asyncio.get_running_loop().create_future()
        self._status_waiters[request_id] = waiter
        try:
            await self._send(fm.ORDER_STATUS_REQUEST, fm.order_status_request(request_id, terms))
            return await self._answer(waiter, f"OrderStatusRequest for {client_order_id}")
        finally:
            self._status_waiters.pop(request_id, None)

    async def cancel(self, client_order_id: str) -> CancelAnswer:
        """Ask the counterparty to cancel the rest of an order (OrderCancelRequest); the
        cancel itself arrives as an execution (kind reject) in the journal."""
        terms = self.journal.sent_order(client_order_id)
        if terms is None:
            raise FixUnavailable(f"order {client_order_id} was never sent over this session")
        self._require_logged_on()
        cancel_id = f"C-{self._run}-{next(self._ids)}"
        waiter: asyncio.Future[CancelAnswer] = asyncio.get_running_loop().create_future()
        self._cancel_waiters[cancel_id] = waiter
        try:
            body = fm.order_cancel_request(cancel_id, terms, datetime.now(UTC))
            await self._send(fm.ORDER_CANCEL_REQUEST, body)
            return await self._answer(waiter, f"OrderCancelRequest for {client_order_id}")
        finally:
            self._cancel_waiters.pop(cancel_id, None)

    def _require_logged_on(self) -> None:
        if not self.logged_on:
            raise FixUnavailable(
                f"FIX session to {self.config.host}:{self.config.port} is not logged on "
                f"(state {self._connection.connection_state.name})"
            )

    async def _send(self, msg_type: str, body: Mapping[int, str]) -> None:
        try:
            await self._connection.send_msg(FIXMessage(msg_type, dict(body)))
        except (OSError, FIXConnectionError) as exc:  # the link dropped meanwhile
            raise FixUnavailable(f"FIX session lost while sending: {exc!r}") from exc

    async def _answer(self, waiter: asyncio.Future[T], what: str) -> T:
        try:
            return await asyncio.wait_for(waiter, self.config.request_timeout_s)
        except TimeoutError:
            raise FixUnavailable(
                f"no answer to {what} within {self.config.request_timeout_s} s"
            ) from None

    def _state_changed(self, state: ConnectionState) -> None:
        if state == ConnectionState.ACTIVE:
            self._active.set()
        else:
            self._active.clear()
        if state <= ConnectionState.DISCONNECTED_BROKEN_CONN:
            self._down.set()

    def _received(self, fields: dict[int, str]) -> None:
        msg_type = fields.get(fm.MSG_TYPE)
        if msg_type == fm.EXECUTION_REPORT:
            self._execution_report(fields)
        elif msg_type == fm.ORDER_CANCEL_REJECT:
            waiter = self._cancel_waiters.get(fields.get(fm.CL_ORD_ID, ""))
            if waiter is not None and not waiter.done():
                waiter.set_result(CancelAnswer(False, fields.get(fm.TEXT) or "cancel rejected"))
        elif msg_type == fm.SESSION_REJECT:
            log.error(
                "FIX counterparty rejected a message of ours as malformed",
                extra={
                    "ref_seq_num": fields.get(fm.REF_SEQ_NUM),
                    "ref_msg_type": fields.get(fm.REF_MSG_TYPE),
                    "ref_tag": fields.get(fm.REF_TAG_ID),
                    "text": fields.get(fm.TEXT),
                },
            )
        elif msg_type == fm.BUSINESS_MESSAGE_REJECT:
            log.error(
                "FIX counterparty rejected a message",
                extra={
                    "ref_id": fields.get(fm.BUSINESS_REJECT_REF_ID),
                    "text": fields.get(fm.TEXT),
                },
            )
        else:
            log.warning("FIX message of an unexpected type ignored", extra={"type": msg_type})

    def _execution_report(self, fields: dict[int, str]) -> None:
        try:
            status = fm.status_from_report(fields)
            execution = fm.execution_from_report(fields)
        except fm.FixMessageProblem as exc:
            log.error("unreadable ExecutionReport ignored", extra={"problem": str(exc)})
            return
        if status is not None:
            waiter = self._status_waiters.get(status.request_id or "")
            if waiter is not None and not waiter.done():
                waiter.set_result(status)
            return
        if fm.is_duplicate_reject(fields):
            log.warning(
                "counterparty refused a NewOrderSingle as a duplicate ClOrdID; the order "
                "it has stands",
                extra={"client_order_id": fields.get(fm.CL_ORD_ID)},
            )
            return
        if execution is not None:
            if execution.kind == "reject" and fields.get(fm.EXEC_TYPE) == fm.EXEC_CANCELED:
                canceled = self._cancel_waiters.get(fields.get(fm.CL_ORD_ID, ""))
                if canceled is not None and not canceled.done():
                    canceled.set_result(CancelAnswer(True, None))
            new = self.journal.record_execution(execution)
            if not new:
                log.info(
                    "ExecutionReport already journaled (a resend)",
                    extra={"execution_id": execution.execution_id},
                )
