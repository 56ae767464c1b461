"""Wire types: exact decimals travel as JSON strings, never as floats."""

from decimal import Decimal
from typing import Annotated

from pydantic import Field, PlainSerializer, WithJsonSchema

_DECIMAL_PATTERN = r"^-?\d+(\.\d+)?$"


def _decimal_type(description: str, *, ge: int | None = None, gt: int | None = None) -> object:
    return Annotated[
        Decimal,
        Field(ge=ge, gt=gt, allow_inf_nan=False),
        PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
        WithJsonSchema({"type": "string", "pattern": _DECIMAL_PATTERN, "description": description}),
    ]


Money = _decimal_type("an exact amount of money in the account currency, as a decimal string")
NonNegativeMoney = _decimal_type("an exact non-negative amount of money", ge=0)
Price = _decimal_type("a positive price per share, as a decimal string", gt=0)
Quantity = _decimal_type("a non-negative number of shares, as a decimal string", ge=0)
PositiveQuantity = _decimal_type("a positive number of shares, as a decimal string", gt=0)
Weight = _decimal_type("a weight as a fraction of 1 (0.05 = 5%), as a decimal string", ge=0)
SignedWeight = _decimal_type("a signed weight difference as a fraction of 1")
