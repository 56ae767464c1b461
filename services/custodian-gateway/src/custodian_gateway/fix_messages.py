"""FIX 4.4 application messages as the gateway speaks them, as plain tag -> value maps.

Pure: no engine, no I/O. `fix_session.py` turns these maps into the engine's messages and
back. Quantities and prices travel as decimal strings, never floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

# Tags the gateway reads or writes.
ACCOUNT = 1
AVG_PX = 6
CL_ORD_ID = 11
CUM_QTY = 14
EXEC_ID = 17
LAST_PX = 31
LAST_QTY = 32
MSG_SEQ_NUM = 34
MSG_TYPE = 35
ORDER_ID = 37
ORDER_QTY = 38
ORD_STATUS = 39
ORD_TYPE = 40
ORIG_CL_ORD_ID = 41
POSS_DUP_FLAG = 43
PRICE = 44
REF_SEQ_NUM = 45
SIDE = 54
SYMBOL = 55
TEXT = 58
TIME_IN_FORCE = 59
TRANSACT_TIME = 60
POSS_RESEND = 97
ORD_REJ_REASON = 103
EXEC_TYPE = 150
LEAVES_QTY = 151
BUSINESS_REJECT_REF_ID = 379
ORD_STATUS_REQ_ID = 790

NEW_ORDER_SINGLE = "D"
ORDER_STATUS_REQUEST = "H"
ORDER_CANCEL_REQUEST = "F"
EXECUTION_REPORT = "8"
ORDER_CANCEL_REJECT = "9"
BUSINESS_MESSAGE_REJECT = "j"
SESSION_REJECT = "3"
REF_TAG_ID = 371
REF_MSG_TYPE = 372

SIDES = {"buy": "1", "sell": "2"}
SIDE_NAMES = {code: name for name, code in SIDES.items()}
MARKET = "1"
DAY = "0"

# ExecType(150) values of FIX 4.4.
EXEC_NEW = "0"
EXEC_CANCELED = "4"
EXEC_REPLACED = "5"
EXEC_PENDING_CANCEL = "6"
EXEC_REJECTED = "8"
EXEC_EXPIRED = "C"
EXEC_TRADE = "F"
EXEC_ORDER_STATUS = "I"

# OrdStatus(39) as the gateway names an order's state (same names as the HTTP custodian).
ORDER_STATUSES = {
    "0": "new",
    "1": "partially_filled",
    "2": "filled",
    "4": "canceled",
    "6": "pending_cancel",
    "8": "rejected",
    "A": "pending_new",
    "C": "expired",
}
ORD_REJ_UNKNOWN_ORDER = "5"
ORD_REJ_DUPLICATE_ORDER = "6"


class FixMessageProblem(ValueError):
    """A message from the counterparty that the gateway cannot read (names the tag)."""


@dataclass(frozen=True)
class OrderTerms:
    """What a NewOrderSingle says: a block order as the gateway sends it."""

    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: str
    reference_price: str


@dataclass(frozen=True)
class Execution:
    """A fill or the end of an order's rest (reject, cancel, expiry) from an ExecutionReport,
    in the shape of the HTTP custodian's executions (`kind` fill or reject)."""

    execution_id: str
    client_order_id: str
    kind: str
    symbol: str | None
    side: str | None
    account_id: str | None
    quantity: str | None
    price: str | None
    reason: str | None
    executed_at: str | None
    poss_dup: bool
    msg_seq_num: int


@dataclass(frozen=True)
class OrderStatus:
    """The answer to an OrderStatusRequest: None `status` means the counterparty does not
    know the order."""

    client_order_id: str
    request_id: str | None
    status: str | None
    filled_quantity: str
    text: str | None


def new_order_single(terms: OrderTerms, possible_resend: bool, now: datetime) -> dict[int, str]:
    """The fields of a NewOrderSingle for a block order (market, day; the reference price
    is sent as Price(44) for the counterparty's information). PossResend is a header field:
    it comes first, right after the header the engine writes."""
    fields = {POSS_RESEND: "Y"} if possible_resend else {}
    fields |= {
        CL_ORD_ID: terms.client_order_id,
        ACCOUNT: terms.account_id,
        SYMBOL: terms.symbol,
        SIDE: side_code(terms.side),
        TRANSACT_TIME: fix_time(now),
        ORDER_QTY: terms.quantity,
        ORD_TYPE: MARKET,
        PRICE: terms.reference_price,
        TIME_IN_FORCE: DAY,
    }
    return fields


def order_status_request(request_id: str, terms: OrderTerms) -> dict[int, str]:
    """The body of an OrderStatusRequest (FIX 4.4 requires the order's symbol and side)."""
    return {
        ORD_STATUS_REQ_ID: request_id,
        CL_ORD_ID: terms.client_order_id,
        SYMBOL: terms.symbol,
        SIDE: side_code(terms.side),
    }


def order_cancel_request(cancel_id: str, terms: OrderTerms, now: datetime) -> dict[int, str]:
    """The body of an OrderCancelRequest for the whole rest of an order."""
    return {
        ORIG_CL_ORD_ID: terms.client_order_id,
        CL_ORD_ID: cancel_id,
        SYMBOL: terms.symbol,
        SIDE: side_code(terms.side),
        TRANSACT_TIME: fix_time(now),
        ORDER_QTY: terms.quantity,
    }


def side_code(side: str) -> str:
    try:
        return SIDES[side]
    except KeyError:
        raise ValueError(f"side must be buy or sell, got {side!r}") from None


def fix_time(moment: datetime) -> str:
    """UTCTimestamp with milliseconds."""
    return moment.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S.%f")[:-3]


def parse_fix_time(value: str | None) -> str | None:
    """A UTCTimestamp as ISO 8601 (UTC), or None when absent or unreadable."""
    if not value:
        return None
    for pattern in ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S"):
        try:
            return datetime.strptime(value, pattern).replace(tzinfo=UTC).isoformat()
        except ValueError:
            continue
    return None


def _required(fields: Mapping[int, str], tag: int) -> str:
    value = fields.get(tag)
    if value is None or value == "":
        raise FixMessageProblem(f"ExecutionReport without tag {tag}")
    return value


def _decimal(fields: Mapping[int, str], tag: int) -> str | None:
    value = fields.get(tag)
    if value is None:
        return None
    try:
        Decimal(value)
    except InvalidOperation:
        raise FixMessageProblem(f"tag {tag} is not a decimal: {value!r}") from None
    return value


def is_duplicate_reject(fields: Mapping[int, str]) -> bool:
    """A reject of a NewOrderSingle whose ClOrdID the counterparty already has: the order
    itself stands, so this is no reject of it."""
    return (
        fields.get(EXEC_TYPE) == EXEC_REJECTED
        and fields.get(ORD_REJ_REASON) == ORD_REJ_DUPLICATE_ORDER
    )


def execution_from_report(fields: Mapping[int, str]) -> Execution | None:
    """The execution an ExecutionReport carries: a fill (Trade), or the end of the order's
    rest (Rejected, Canceled, Expired) as a reject; None for reports that change no
    quantity (New, Pending..., OrderStatus answers, duplicate-ClOrdID rejects)."""
    exec_type = _required(fields, EXEC_TYPE)
    execution_id = _required(fields, EXEC_ID)
    poss_dup = fields.get(POSS_DUP_FLAG) == "Y"
    seq = int(fields.get(MSG_SEQ_NUM) or 0)
    side = fields.get(SIDE)
    common = {
        "execution_id": execution_id,
        "symbol": fields.get(SYMBOL),
        "side": SIDE_NAMES.get(side, side) if side is not None else None,
        "account_id": fields.get(ACCOUNT),
        "executed_at": parse_fix_time(fields.get(TRANSACT_TIME)),
        "poss_dup": poss_dup,
        "msg_seq_num": seq,
    }
    if exec_type == EXEC_TRADE:
        return Execution(
            client_order_id=_required(fields, CL_ORD_ID),
            kind="fill",
            quantity=_decimal(fields, LAST_QTY),
            price=_decimal(fields, LAST_PX),
            reason=None,
            **common,  # type: ignore[arg-type]
        )
    if exec_type in (EXEC_REJECTED, EXEC_CANCELED, EXEC_EXPIRED):
        if is_duplicate_reject(fields):
            return None
        # A cancel names the order it cancels in OrigClOrdID.
        order_id = fields.get(ORIG_CL_ORD_ID) or _required(fields, CL_ORD_ID)
        what = {EXEC_REJECTED: "rejected", EXEC_CANCELED: "canceled", EXEC_EXPIRED: "expired"}
        text = fields.get(TEXT)
        reason = f"{what[exec_type]} by the counterparty" + (f": {text}" if text else "")
        return Execution(
            client_order_id=order_id,
            kind="reject",
            quantity=None,
            price=None,
            reason=reason,
            **common,  # type: ignore[arg-type]
        )
    return None


def status_from_report(fields: Mapping[int, str]) -> OrderStatus | None:
    """The order status an ExecutionReport answers with (ExecType I), else None."""
    if fields.get(EXEC_TYPE) != EXEC_ORDER_STATUS:
        return None
    client_order_id = _required(fields, CL_ORD_ID)
    ord_status = _required(fields, ORD_STATUS)
    unknown = ord_status == "8" and fields.get(ORD_REJ_REASON) == ORD_REJ_UNKNOWN_ORDER
    return OrderStatus(
        client_order_id=client_order_id,
        request_id=fields.get(ORD_STATUS_REQ_ID),
        status=None if unknown else ORDER_STATUSES.get(ord_status, ord_status),
        filled_quantity=_decimal(fields, CUM_QTY) or "0",
        text=fields.get(TEXT),
    )
