"""Typed errors that render as RFC 9457 problem+json and as dead-letter reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldProblem:
    """One named problem with one input field (`field` is a dotted path)."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass
class BallastError(Exception):
    """Base of every error a service reports to a caller. Subclasses fix status and title."""

    detail: str
    errors: list[FieldProblem] = field(default_factory=list)
    status = 500
    title = "Internal error"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://ballast.dev/problems/{self.slug()}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [e.as_dict() for e in self.errors]
        return body

    @classmethod
    def slug(cls) -> str:
        return cls.title.lower().replace(" ", "-")

    def response_headers(self) -> dict[str, str] | None:
        """Headers the error's HTTP answer carries (a 401's `WWW-Authenticate`)."""
        return None


class NotFound(BallastError):
    status = 404
    title = "Not found"


class Conflict(BallastError):
    status = 409
    title = "Conflict"


class InvalidInput(BallastError):
    """Input that is well-formed but breaks a rule (unknown security, weights not 100%...)."""

    status = 422
    title = "Invalid input"


class Forbidden(BallastError):
    status = 403
    title = "Forbidden"


class TransientError(Exception):
    """A failure worth retrying (a dependency not ready yet); consumers back off and retry."""


class PermanentMessageError(Exception):
    """A message that can never be processed; consumers dead-letter it with this reason."""
