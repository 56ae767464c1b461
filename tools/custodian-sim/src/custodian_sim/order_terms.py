"""An order's terms as the simulator accepts them, over HTTP (`POST /orders`) and FIX
(NewOrderSingle): one set of checks for both."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool


def _exact_decimal(value: object) -> object:
    """Accept a decimal string (or an integer); refuse floats, which are not exact."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('must be a decimal string such as "12.50"')
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


ExactDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    client_order_id: Identifier
    account_id: Identifier
    symbol: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-/]+$")]
    side: Literal["buy", "sell"]
    quantity: Annotated[ExactDecimal, Field(gt=0, le=Decimal("1E12"), decimal_places=8)]
    reference_price: Annotated[ExactDecimal, Field(gt=0, le=Decimal("1E9"), decimal_places=8)]
    possible_resend: StrictBool = Field(
        default=False,
        description="The sender may have sent this order before (FIX PossResend): a known "
        "client_order_id is a duplicate, an unknown one a new order. Recorded either way.",
    )
