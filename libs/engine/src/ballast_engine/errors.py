"""Typed errors of the rebalancing engine.

Every input error names where the problem is (account, sleeve, security, field) so a service
can render it as problem+json or a dead letter and a person can fix the data.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class EngineInputError(EngineError, ValueError):
    """The input is wrong; nothing was computed.

    Attributes:
        message: what is wrong, in plain English.
        account: the account id, when the problem is inside an account.
        sleeve: the sleeve id, when the problem is inside a sleeve.
        security: the security symbol involved, if any.
        field: the name of the offending field (``"weight"``, ``"quantity"``, ...).
    """

    code = "invalid_input"

    def __init__(
        self,
        message: str,
        *,
        account: str | None = None,
        sleeve: str | None = None,
        security: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.account = account
        self.sleeve = sleeve
        self.security = security
        self.field = field
        super().__init__(self.one_line())

    def where(self) -> str:
        parts = []
        if self.account is not None:
            parts.append(f"account {self.account}")
        if self.sleeve is not None:
            parts.append(f"sleeve {self.sleeve}")
        if self.security is not None:
            parts.append(f"security {self.security}")
        if self.field is not None:
            parts.append(f"field {self.field}")
        return ", ".join(parts)

    def one_line(self) -> str:
        where = self.where()
        return f"{where}: {self.message}" if where else self.message

    def located(self, *, account: str | None = None, sleeve: str | None = None) -> EngineInputError:
        """Fill in the account/sleeve if they were not known where the error was raised."""
        if self.account is None and account is not None:
            self.account = account
        if self.sleeve is None and sleeve is not None:
            self.sleeve = sleeve
        self.args = (self.one_line(),)
        return self

    def to_dict(self) -> dict[str, str | None]:
        return {
            "code": self.code,
            "message": self.message,
            "account": self.account,
            "sleeve": self.sleeve,
            "security": self.security,
            "field": self.field,
        }


class ScenarioFormatError(EngineInputError):
    """A scenario or book file is malformed (missing field, wrong type, unknown value)."""

    code = "scenario_format"


class UnknownSecurityError(EngineInputError):
    """A holding, model or restriction names a security missing from the security master."""

    code = "unknown_security"


class UnpricedSecurityError(EngineInputError):
    """A security has no usable price (missing, zero, negative or not finite)."""

    code = "unpriced_security"


class WeightSumError(EngineInputError):
    """Model or strategy weights do not add up to 100% within tolerance."""

    code = "weights_do_not_sum"


class NegativeQuantityError(EngineInputError):
    """A quantity, cash balance or amount that must not be negative is negative."""

    code = "negative_quantity"


class BandError(EngineInputError):
    """A band is wider than its target allows (below 0% or above 100%) or malformed."""

    code = "invalid_band"


class SettingError(EngineInputError):
    """A rebalance setting or request is invalid or refers to something that does not exist."""

    code = "invalid_setting"
