"""The custodian's HTTP API as the gateway uses it (the only module that speaks HTTP to it).

Failures are sorted in two kinds: `CustodianUnavailable` (connection errors, timeouts, 5xx,
429, an answer that is not the contract: try again later, nothing is lost) and
`CustodianRefused` (400, 409 or 422: the request's content is refused and resending it
unchanged will not help). Other 4xx answers (401, 404...) are configuration problems and
count as unavailable, so a wrong URL never turns orders into rejects. The one 404 that means
something is GET /orders/{id}'s "Unknown order" (a problem+json of that title): the
custodian does not know the order; any other 404 there is still unavailable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Answers that refuse the request's content (bad or conflicting orders).
REFUSALS = frozenset({400, 409, 422})
PROBLEM_JSON = "application/problem+json"
UNKNOWN_ORDER = "Unknown order"  # the title of GET /orders/{id}'s 404


class CustodianUnavailable(Exception):
    """The custodian could not be reached or answered with a server error."""


class CustodianRefused(Exception):
    """The custodian refused the request (4xx); `detail` is its explanation."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"custodian refused the request ({status}): {detail}")
        self.status = status
        self.detail = detail


class OrderRequest(BaseModel):
    """One order as POST /orders takes it (decimals as strings)."""

    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: str
    reference_price: str
    # We may have sent it before (FIX PossResend): the custodian takes a known id as a
    # duplicate, an unknown one as a new order.
    possible_resend: bool = False


class AllocationBooking(BaseModel):
    """One account's share of a block's fills as POST /allocations takes it: which account
    gets it and, for a sell, the lots to relieve in order (none: the custodian's method)."""

    fill_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: str
    price: str
    executed_at: str
    lot_ids: list[str]


class BookingResult(BaseModel):
    """What the custodian did with one allocation (`duplicate`: it had it already)."""

    model_config = ConfigDict(extra="ignore")

    fill_id: str
    outcome: Literal["booked", "refused"]
    reason: str | None = None
    duplicate: bool = False


class BookingAck(BaseModel):
    model_config = ConfigDict(extra="ignore")

    results: list[BookingResult]


class CustodianOrder(BaseModel):
    """An order as GET /orders/{client_order_id} reports it (what the gateway reads of it)."""

    model_config = ConfigDict(extra="ignore")

    client_order_id: str
    status: str
    filled_quantity: str
    times_submitted: int = 0


class SubmitAck(BaseModel):
    model_config = ConfigDict(extra="ignore")

    accepted: list[str]
    duplicates: list[str]


class RawExecution(BaseModel):
    """An execution as reported. Only seq and id are required to store it; the rest is
    checked by the service, so one bad execution does not stop the feed."""

    model_config = ConfigDict(extra="allow")

    seq: int = Field(ge=1)
    execution_id: str = Field(min_length=1, max_length=200)
    client_order_id: Any = None
    account_id: Any = None
    symbol: Any = None
    side: Any = None
    kind: Any = None
    quantity: Any = None
    price: Any = None
    reason: Any = None
    executed_at: Any = None


class ExecutionsPage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    executions: list[RawExecution]
    last_seq: int = Field(ge=0)


class CustodianClient:
    """Typed calls to the custodian over one httpx client (owned by the caller)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def submit_orders(
        self, orders: Sequence[OrderRequest], headers: Mapping[str, str] | None = None
    ) -> SubmitAck:
        body = {"orders": [o.model_dump() for o in orders]}
        data = await self._call("POST", "/orders", json=body, headers=dict(headers or {}))
        return _parse(SubmitAck, data, "POST /orders")

    async def book_allocations(
        self, allocations: Sequence[AllocationBooking], headers: Mapping[str, str] | None = None
    ) -> BookingAck:
        body = {"allocations": [a.model_dump() for a in allocations]}
        data = await self._call("POST", "/allocations", json=body, headers=dict(headers or {}))
        return _parse(BookingAck, data, "POST /allocations")

    async def executions_after(self, after: int, limit: int) -> ExecutionsPage:
        data = await self._call("GET", "/executions", params={"after": after, "limit": limit})
        return _parse(ExecutionsPage, data, "GET /executions")

    async def order(self, client_order_id: str) -> CustodianOrder | None:
        """The custodian's view of one order; None if it does not know the order."""
        path = f"/orders/{quote(client_order_id, safe='')}"
        response = await self._request("GET", path)
        if response.status_code == 404 and _is_unknown_order(response):
            return None
        if response.status_code in REFUSALS:  # a status query has no content to refuse
            raise CustodianUnavailable(
                f"GET {path} answered {response.status_code}: {response.text[:300]}"
            )
        data = self._checked("GET", "/orders/{client_order_id}", response)
        order: CustodianOrder = _parse(CustodianOrder, data, "GET /orders/{client_order_id}")
        if order.client_order_id != client_order_id:
            raise CustodianUnavailable(
                f"GET {path} answered for another order ({order.client_order_id!r})"
            )
        return order

    async def last_seq(self) -> int:
        """The custodian's latest execution sequence number (from GET /stats)."""
        data = await self._call("GET", "/stats")
        value = data.get("last_seq") if isinstance(data, dict) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise CustodianUnavailable("GET /stats answered without an integer last_seq")
        return value

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._checked(method, path, await self._request(method, path, **kwargs))

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # connect, read, timeout, protocol errors
            raise CustodianUnavailable(f"{method} {path} failed: {exc!r}") from exc

    @staticmethod
    def _checked(method: str, path: str, response: httpx.Response) -> Any:
        if response.status_code in REFUSALS:
            raise CustodianRefused(response.status_code, _detail(response))
        if response.status_code >= 400:
            # 5xx, 429, and also 401/403/404...: a server or configuration problem, never a
            # verdict on the orders themselves. Retry later; an operator can fix it meanwhile.
            raise CustodianUnavailable(
                f"{method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise CustodianUnavailable(f"{method} {path} answered with invalid JSON") from exc


def _parse(model: type[Any], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CustodianUnavailable(f"{what} answered outside the contract: {exc}") from exc


def _is_unknown_order(response: httpx.Response) -> bool:
    if not response.headers.get("content-type", "").startswith(PROBLEM_JSON):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("title") == UNKNOWN_ORDER


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:500]
    return str(body)[:500]
