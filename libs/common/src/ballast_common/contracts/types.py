"""Wire types: exact decimals travel as JSON strings, never as floats.

Events and responses use the types at the top (`Money`, `Price`, ...). Request bodies use the
request types below (`RequestBody`, `RequestDecimal` and the `...In` decimals, `Omittable`):
they refuse unknown fields, a JSON float where a decimal belongs (`0.1` is not exact; `1e308`
is not a price), more decimals than the service stores, amounts beyond documented bounds, and
an explicit null where a field may only be left out.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from annotated_types import GroupedMetadata
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

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


# --- request bodies ---------------------------------------------------------------------------

MAX_DECIMAL_CHARS = 40
_DECIMAL_STRING = re.compile(_DECIMAL_PATTERN)
# Amounts and quantities in a request stay below this (a quadrillion): beyond it is a typo.
MAX_AMOUNT = 10**15


class RequestBody(BaseModel):
    """Base of every request body: an unknown (e.g. misspelt) field is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


def _exact_decimal(value: object) -> object:
    """A decimal as a request may send it: a decimal string or a JSON integer, never a float."""
    if isinstance(value, bool | float):
        raise PydanticCustomError(
            "decimal_not_exact",
            'send decimals as strings, e.g. "12.34": a JSON number with a fraction or an '
            "exponent is not exact",
        )
    if isinstance(value, str) and (
        len(value) > MAX_DECIMAL_CHARS or not _DECIMAL_STRING.match(value)
    ):
        raise PydanticCustomError(
            "decimal_string",
            'expected a decimal string like "12.34" or "-5" (digits with an optional sign and '
            "point, at most {max_chars} characters)",
            {"max_chars": MAX_DECIMAL_CHARS},
        )
    return value


def _plain(value: Decimal) -> str:
    return format(value, "f")


@dataclass(frozen=True)
class RequestDecimal(GroupedMetadata):
    """`Annotated[Decimal, RequestDecimal(...)]`: a decimal field of a request body, sent as a
    string (or a JSON integer) with at most `places` decimals within the bounds, documented
    in its schema and serialized back as a string."""

    description: str
    places: int
    ge: int | None = None
    gt: int | None = None
    le: int | None = None
    lt: int | None = None

    def __iter__(self) -> Iterator[Any]:
        bounds = [
            f"{name} {bound}"
            for name, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
            if bound is not None
        ]
        yield BeforeValidator(_exact_decimal)
        yield Field(
            ge=self.ge,
            gt=self.gt,
            le=self.le,
            lt=self.lt,
            decimal_places=self.places,
            allow_inf_nan=False,
        )
        yield PlainSerializer(_plain, return_type=str, when_used="json")
        yield WithJsonSchema(
            {
                "type": "string",
                "pattern": _DECIMAL_PATTERN,
                "maxLength": MAX_DECIMAL_CHARS,
                "description": f"{self.description}: a decimal string ({', '.join(bounds)}; at "
                f"most {self.places} decimals; a JSON integer is accepted, a JSON float is not)",
            }
        )


NonNegativeMoneyIn = Annotated[
    Decimal, RequestDecimal("a non-negative amount of money", places=2, ge=0, lt=MAX_AMOUNT)
]
PriceIn = Annotated[Decimal, RequestDecimal("a positive price per share", places=6, gt=0, lt=10**9)]
QuantityIn = Annotated[
    Decimal, RequestDecimal("a non-negative number of shares", places=8, ge=0, lt=MAX_AMOUNT)
]
# Model target weights: stored (and published) with up to 10 decimals.
WeightIn = Annotated[
    Decimal, RequestDecimal("a weight as a fraction of 1 (0.05 = 5%)", places=10, ge=0, le=1)
]
# Account settings (sleeve weights, bands, rates): rebalance-svc keeps 8 and 4 decimals.
FractionIn = Annotated[Decimal, RequestDecimal("a fraction of 1 (0.05 = 5%)", places=8, ge=0, le=1)]
PercentIn = Annotated[Decimal, RequestDecimal("a percentage (10 = 10%)", places=4, ge=0, le=100)]
# Numbers whose sign and scale a service's own rules check (naming every problem at once).
DecimalIn = Annotated[
    Decimal, RequestDecimal("a decimal", places=10, gt=-MAX_AMOUNT, lt=MAX_AMOUNT)
]
NonNegativeDecimalIn = Annotated[
    Decimal, RequestDecimal("a non-negative decimal", places=10, ge=0, lt=MAX_AMOUNT)
]
PositiveDecimalIn = Annotated[
    Decimal, RequestDecimal("a positive decimal", places=10, gt=0, lt=MAX_AMOUNT)
]

T = TypeVar("T")


def _refuse_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError(
            "null_refused", "may be left out (to keep the current value) but not null"
        )
    return value


# A field a request may leave out but not set to null (a PATCH's "keep as it is").
Omittable = Annotated[T | SkipJsonSchema[None], BeforeValidator(_refuse_null)]
