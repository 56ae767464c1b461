"""Errors of the tax engine. Every one names what was wrong and where it came from."""

from __future__ import annotations


class TaxError(Exception):
    """Base of the tax engine's errors. ``ref`` names the input (a row, an event id)."""

    def __init__(self, problem: str, *, ref: str = "", field: str = "") -> None:
        self.problem = problem
        self.ref = ref
        self.field = field
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [p for p in (self.ref, f"field '{self.field}'" if self.field else "") if p]
        where = ", ".join(parts)
        return f"{where}: {self.problem}" if where else self.problem


class TaxInputError(TaxError):
    """Malformed or impossible input (bad number, unknown side, future date, ...)."""


class InsufficientQuantityError(TaxError):
    """A sell or move larger than the open position (or than the lots it names)."""


class UnknownLotError(TaxError):
    """A lot named in an order does not exist in the position."""


class CorporateActionError(TaxError):
    """A corporate action that cannot be applied (security not held, bad ratio, ...)."""
