"""The conditions of a filter: which fields of an account and of its latest proposal a filter
may test, with which operators and values, and their validation (naming the field).

A filter holds when ALL its conditions hold. `ne` and `not_in` hold for a field that has no
value (no advisor, no such attribute, no proposal); the other comparisons do not.
The SQL they compile to is filters_repository.py's."""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from ballast_common.contracts.types import MAX_DECIMAL_CHARS, RequestBody
from ballast_common.errors import FieldProblem
from pydantic import Field

Op = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "not_exists"]
Kind = Literal["text", "choice", "bool", "number", "integer", "attribute"]

ATTRIBUTE_PREFIX = "attribute."
ATTRIBUTE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
MAX_CONDITIONS = 50
MAX_VALUES = 1000  # members of an `in` / `not_in` list
MAX_TEXT = 200

EQUALITY: tuple[Op, ...] = ("eq", "ne", "in", "not_in")
ORDERING: tuple[Op, ...] = ("gt", "gte", "lt", "lte")
PRESENCE: tuple[Op, ...] = ("exists", "not_exists")
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


class Condition(RequestBody):
    """One test of a field: e.g. `{"field": "proposal.turnover_percent", "op": "gt",
    "value": "20"}`, `{"field": "attribute.client_tier", "op": "in", "value": ["gold"]}`."""

    field: str = Field(min_length=1, max_length=64, description="a field of the catalogue")
    op: Op
    value: Any = Field(
        default=None,
        description="a scalar; a list for in/not_in; none for exists/not_exists; numbers as "
        'decimal strings ("12.5") or integers',
    )


@dataclass(frozen=True)
class FieldSpec:
    """A field a condition may test: its kind, whether it may have no value, its choices."""

    kind: Kind
    nullable: bool = False
    choices: tuple[str, ...] = ()

    @property
    def ops(self) -> tuple[Op, ...]:
        by_kind: dict[Kind, tuple[Op, ...]] = {
            "text": EQUALITY,
            "choice": EQUALITY,
            "bool": ("eq", "ne"),
            "number": ("eq", "ne", *ORDERING),
            "integer": ("eq", "ne", *ORDERING),
            "attribute": (*EQUALITY, *ORDERING),
        }
        return (*by_kind[self.kind], *(PRESENCE if self.nullable else ()))


_PROPOSAL_NUMBER = FieldSpec("number", nullable=True)

FIELDS: dict[str, FieldSpec] = {
    "status": FieldSpec("choice", choices=("active", "suspended", "closed", "opening")),
    "account_type": FieldSpec("choice", choices=("taxable", "ira")),
    "household_id": FieldSpec("text"),
    "model_id": FieldSpec("text", nullable=True),
    "advisor_id": FieldSpec("text", nullable=True),
    "auto_approve": FieldSpec("bool"),
    "proposal.status": FieldSpec(
        "choice", nullable=True, choices=("pending", "approved", "rejected")
    ),
    "proposal.account_value": _PROPOSAL_NUMBER,
    "proposal.cash_before": _PROPOSAL_NUMBER,
    "proposal.turnover_percent": _PROPOSAL_NUMBER,
    "proposal.estimated_tax": _PROPOSAL_NUMBER,
    "proposal.drift_percent": _PROPOSAL_NUMBER,
    "proposal.trade_count": FieldSpec("integer", nullable=True),
    "proposal.trade_value": _PROPOSAL_NUMBER,
}
_ATTRIBUTE = FieldSpec("attribute", nullable=True)


def field_spec(name: str) -> FieldSpec | None:
    """The catalogue's entry for a field name (`attribute.<name>` for any valid name)."""
    if name.startswith(ATTRIBUTE_PREFIX):
        return _ATTRIBUTE if attribute_name(name) is not None else None
    return FIELDS.get(name)


def attribute_name(field: str) -> str | None:
    """The attribute a field `attribute.<name>` names, if the name is a valid one."""
    name = field.removeprefix(ATTRIBUTE_PREFIX)
    return name if re.fullmatch(ATTRIBUTE_NAME_PATTERN, name) else None


def exact_number(value: Any) -> Decimal | None:
    """A condition's number: a decimal string or an integer (not a float, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    if isinstance(value, str) and (len(value) > MAX_DECIMAL_CHARS or not _DECIMAL.match(value)):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def validate_conditions(conditions: Sequence[Condition], prefix: str) -> list[FieldProblem]:
    """Every problem of the conditions, named `<prefix>[i].field|op|value`."""
    problems: list[FieldProblem] = []
    if len(conditions) > MAX_CONDITIONS:
        problems.append(FieldProblem(prefix, f"at most {MAX_CONDITIONS} conditions"))
    for i, condition in enumerate(conditions):
        where = f"{prefix}[{i}]"
        spec = field_spec(condition.field)
        if spec is None:
            problems.append(FieldProblem(f"{where}.field", _unknown_field(condition.field)))
            continue
        if condition.op not in spec.ops:
            problems.append(
                FieldProblem(
                    f"{where}.op",
                    f"{condition.op} is not an operator for {condition.field} "
                    f"(use {', '.join(spec.ops)})",
                )
            )
            continue
        message = _value_problem(spec, condition.op, condition.value)
        if message is not None:
            problems.append(FieldProblem(f"{where}.value", message))
    return problems


def _unknown_field(name: str) -> str:
    if name.startswith(ATTRIBUTE_PREFIX):
        return (
            f"{name}: an attribute name is lower case letters, digits and _ "
            f"(pattern {ATTRIBUTE_NAME_PATTERN})"
        )
    return f"unknown field {name} (fields: {', '.join(FIELDS)}, attribute.<name>)"


def _value_problem(spec: FieldSpec, op: Op, value: Any) -> str | None:
    if op in PRESENCE:
        return None if value is None else f"{op} takes no value"
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            return f"{op} takes a non-empty list of values"
        if len(value) > MAX_VALUES:
            return f"{op} takes at most {MAX_VALUES} values"
        for j, member in enumerate(value):
            message = _scalar_problem(spec, op, member)
            if message is not None:
                return f"value {j}: {message}"
        return None
    return _scalar_problem(spec, op, value)


def _scalar_problem(spec: FieldSpec, op: Op, value: Any) -> str | None:
    if spec.kind in ("text", "choice"):
        if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
            return f"expected text of 1 to {MAX_TEXT} characters"
        if spec.choices and value not in spec.choices:
            return f"{value} is not one of {', '.join(spec.choices)}"
        return None
    if spec.kind == "bool":
        return None if isinstance(value, bool) else "expected true or false"
    if spec.kind in ("number", "integer"):
        number = exact_number(value)
        if number is None:
            return 'expected a decimal string like "12.5" or an integer'
        if spec.kind == "integer" and number != number.to_integral_value():
            return "expected a whole number"
        return None
    # an attribute: text, a number or a boolean; ordering compares numbers only
    if op in ORDERING:
        if exact_number(value) is None:
            return f'{op} compares numbers: expected a decimal string like "12.5" or an integer'
        return None
    if isinstance(value, bool | int):
        return None
    if isinstance(value, str) and 1 <= len(value) <= MAX_TEXT:
        return None
    return f"expected text of 1 to {MAX_TEXT} characters, an integer, true or false"
