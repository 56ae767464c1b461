"""The custodian over FIX, behind the same calls as the HTTP client (`CustodianClient`), so
the service's sending, polling and settling work unchanged (docs/fix.md):

- `submit_orders`: NewOrderSingle per order (PossResend=Y for a possible resend); an order
  handed to the logged-on session counts as accepted (the session delivers it);
- `executions_after` / `last_seq`: the fills and rejects the session journaled;
- `order`: OrderStatusRequest; an "unknown order" answer is None, as a 404 is over HTTP;
- `book_allocations`: still POST /allocations over HTTP.

`FixLink` shares one session among the gateway's loops of one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from custodian_gateway import fix_messages as fm
from custodian_gateway.custodian import (
    CustodianClient,
    CustodianOrder,
    CustodianUnavailable,
    ExecutionsPage,
    OrderRequest,
    RawExecution,
    SubmitAck,
)
from custodian_gateway.fix_session import FixSession, FixSessionConfig, FixUnavailable
from custodian_gateway.settings import Settings


def session_config(settings: Settings) -> FixSessionConfig:
    """The FIX session's configuration; its store is per custodian and pair of comp ids."""
    store = (
        Path(settings.fix_store_dir)
        / settings.custodian_id
        / f"{settings.fix_sender_comp_id}-{settings.fix_target_comp_id}"
    )
    return FixSessionConfig(
        host=settings.fix_host,
        port=settings.fix_port,
        sender_comp_id=settings.fix_sender_comp_id,
        target_comp_id=settings.fix_target_comp_id,
        heartbeat_s=settings.fix_heartbeat_s,
        store_dir=store,
        request_timeout_s=settings.fix_request_timeout_s,
    )


class FixCustodianClient(CustodianClient):
    """Orders, executions and status over a FIX session; bookings over HTTP."""

    def __init__(self, http: httpx.AsyncClient, session: FixSession) -> None:
        super().__init__(http)
        self.session = session

    async def submit_orders(
        self, orders: Sequence[OrderRequest], headers: Mapping[str, str] | None = None
    ) -> SubmitAck:
        terms = [
            fm.OrderTerms(
                client_order_id=o.client_order_id,
                account_id=o.account_id,
                symbol=o.symbol,
                side=o.side,
                quantity=o.quantity,
                reference_price=o.reference_price,
            )
            for o in orders
        ]
        resends = {o.client_order_id for o in orders if o.possible_resend}
        try:
            sent = await self.session.send_orders(terms, resends)
        except FixUnavailable as exc:
            raise CustodianUnavailable(str(exc)) from exc
        return SubmitAck(accepted=sent, duplicates=[])

    async def executions_after(self, after: int, limit: int) -> ExecutionsPage:
        rows = self.session.journal.executions_after(after, limit)
        executions = [RawExecution.model_validate(row) for row in rows]
        return ExecutionsPage(
            executions=executions, last_seq=executions[-1].seq if executions else after
        )

    async def order(self, client_order_id: str) -> CustodianOrder | None:
        try:
            status = await self.session.order_status(client_order_id)
        except FixUnavailable as exc:
            raise CustodianUnavailable(str(exc)) from exc
        if status.status is None:
            return None
        return CustodianOrder(
            client_order_id=client_order_id,
            status=status.status,
            filled_quantity=status.filled_quantity,
        )

    async def last_seq(self) -> int:
        return self.session.journal.last_seq()


class FixLink:
    """One FIX session per gateway process, opened by the first loop that needs it and
    closed when the last one leaves."""

    def __init__(self) -> None:
        self._session: FixSession | None = None
        self._users = 0

    @asynccontextmanager
    async def session(self, settings: Settings) -> AsyncIterator[FixSession]:
        self._users += 1
        if self._session is None:
            self._session = FixSession(session_config(settings))
            await self._session.start()  # others may use it meanwhile: not yet logged on
        try:
            yield self._session
        finally:
            self._users -= 1
            if self._users == 0 and self._session is not None:
                session, self._session = self._session, None
                await session.close()
