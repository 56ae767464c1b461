"""A FIX 4.4 initiator for the acceptor's tests: asyncfix's client with a journal file of its
own, logging on as the gateway does (BALLAST -> CUSTODIAN), keeping every application
message it receives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from asyncfix import AsyncFIXClient, ConnectionState, FIXMessage, FMsg, FTag, Journaler
from asyncfix.protocol import FIXProtocol44
from ballast_common.fix_engine import FramedCodec
from ballast_common.testing import eventually

Fields = dict[str, str]


class Initiator(AsyncFIXClient):
    def __init__(self, port: int, journal: Path, heartbeat_s: int = 5) -> None:
        self.journal_file = Journaler(str(journal))
        super().__init__(
            protocol=FIXProtocol44(),
            sender_comp_id="BALLAST",
            target_comp_id="CUSTODIAN",
            journaler=self.journal_file,
            host="127.0.0.1",
            port=port,
            heartbeat_period=heartbeat_s,
            logger=logging.getLogger("tests.fix.initiator"),
        )
        self._codec = FramedCodec(self.protocol)
        self.received: list[Fields] = []
        self.logon: Fields = {}

    @property
    def logged_on(self) -> bool:
        return self.connection_state == ConnectionState.ACTIVE

    @property
    def next_numbers(self) -> tuple[int, int]:
        return self._session.next_num_in, self._session.next_num_out

    async def start(self) -> None:
        await self.connect()

        async def active() -> bool:
            return self.logged_on

        await eventually("the FIX session logging on", active, timeout_s=10, every_s=0.02)

    async def on_connect(self) -> None:
        logon = FIXMessage(FMsg.LOGON)
        logon[FTag.EncryptMethod] = "0"
        logon[FTag.HeartBtInt] = str(self.heartbeat_period)
        await self.send_msg(logon)

    async def _process_logon(self, logon_msg: FIXMessage) -> None:
        self.logon = fields_of(logon_msg)
        await super()._process_logon(logon_msg)

    async def on_message(self, msg: FIXMessage) -> None:
        self.received.append(fields_of(msg))

    async def send(self, msg_type: str, body: Mapping[str, str]) -> None:
        await self.send_msg(FIXMessage(msg_type, dict(body)))

    async def answer(self, match: Callable[[Fields], bool], what: str) -> Fields:
        """The first message received that `match`es (waiting for it)."""

        async def found() -> Fields | None:
            return next((m for m in self.received if match(m)), None)

        result: Fields = await eventually(what, found, timeout_s=10, every_s=0.02)
        return result

    async def until(self, what: str, condition: Callable[[], object]) -> None:
        """Wait until `condition` holds (of what was received)."""

        async def holds() -> bool:
            return bool(condition())

        await eventually(what, holds, timeout_s=10, every_s=0.02)

    async def close(self) -> None:
        """Log out, stop the engine's tasks and close the journal."""
        if self.logged_on:
            with contextlib.suppress(Exception):
                await self.send_msg(FIXMessage(FMsg.LOGOUT))
        await self.disconnect(ConnectionState.DISCONNECTED_WCONN_TODAY)
        tasks = [t for t in (self._aio_task_socket_read, self._aio_task_heartbeat) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.journal_file.conn.close()


def fields_of(msg: FIXMessage) -> Fields:
    fields = {str(tag): value for tag, value in msg.items() if isinstance(value, str)}
    fields[FTag.MsgType] = str(msg.msg_type)
    return fields
