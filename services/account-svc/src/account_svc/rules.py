"""Rules an account's instructions obey, whether they come over REST or in the book files.

Each rule is defined once here: the REST bodies (schemas.py) and checks (service.py) use it,
and so do the book-load checks (book_load.py), which apply the same limits, patterns and
formulas to staged rows in SQL.
"""

from decimal import Decimal
from typing import Any, Literal, TypeVar

WEIGHT_TOLERANCE = Decimal("0.0001")  # sleeve weights add up to 1 within ±0.01 point (engine's)
BAND_EPS = Decimal("1e-12")
MAX_FRACTION = Decimal(1)  # weights, band widths and tax rates are fractions of 1
MAX_PERCENT = Decimal(100)
MAX_SLEEVES = 20
MAX_RESTRICTIONS = 500
IDENTIFIER_PATTERN = r"^[A-Za-z0-9_.\-]+$"  # account, household and sleeve ids
SYMBOL_PATTERN = r"^\S{1,16}$"  # what a restriction of scope security names
BAND_KINDS: tuple[Literal["absolute", "relative"], ...] = ("absolute", "relative")

Number = TypeVar("Number", bound=Any)


def band_bounds(kind: str, width: Number, target: Number) -> tuple[Number, Number]:
    """The lowest and highest weight a band allows around its target. Works on Decimals and
    on SQL expressions alike, so the book-load check compiles this very formula."""
    if kind == "absolute":
        return target - width, target + width
    return target * (1 - width), target * (1 + width)


def band_too_wide(kind: str, width: Any, target: Any, low: Any, high: Any) -> str:
    return (
        f"{kind} band ±{width} around target {target} gives {low}–{high}, outside 0–1: "
        "the band is wider than the target allows"
    )


def weights_do_not_add_up(total: Any) -> str:
    return f"sleeve weights add up to {total}, not 1"


def model_has_two_sleeves(model_id: str) -> str:
    return f"model {model_id} has two sleeves: one per model"


def unknown_model(model_id: str) -> str:
    return f"unknown model {model_id}"


def unknown_list(list_id: str) -> str:
    return f"unknown security list {list_id}: PUT /security-lists/{list_id} first"


def not_an_identifier(value: str) -> str:
    return f"{value!r} may have only letters, digits and the characters _ . -"


def not_a_symbol(value: str) -> str:
    return f"{value!r} is not a symbol (1 to 16 characters, no spaces)"


def restriction_twice(kind: str, scope: str, value: str) -> str:
    return f"{kind} on {scope} {value} given twice"


UMA_HAS_NO_MODEL = "a UMA (with sleeves) has no model_id"
