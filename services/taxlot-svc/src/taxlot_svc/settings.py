from datetime import time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ballast_common.settings import ServiceSettings, service_config
from pydantic import Field, field_validator

from taxlot_svc.custodian_calendar import DeadlineRule, exchange_calendar_names

BreakPolicy = Literal["suspend", "flag", "accept"]
BREAK_KINDS = ("missing", "extra", "quantity", "basis", "date", "cash")
DEFAULT_BREAK_POLICIES: dict[str, BreakPolicy] = {
    "missing": "suspend",
    "extra": "suspend",
    "quantity": "suspend",
    "basis": "flag",
    "date": "flag",
    "cash": "flag",
}


class Settings(ServiceSettings):
    model_config = service_config("TAXLOT_SVC_")

    # What a reconciliation break of each kind does (docs/custodian-files.md): `suspend` the
    # account, keep ours and `flag` it, or `accept` the custodian's. JSON in the environment,
    # e.g. TAXLOT_SVC_BREAK_POLICIES='{"basis": "suspend"}'; kinds not named keep the default.
    break_policies: dict[str, BreakPolicy] = Field(default_factory=dict)

    @field_validator("break_policies")
    @classmethod
    def _known_kinds(cls, value: dict[str, BreakPolicy]) -> dict[str, BreakPolicy]:
        unknown = sorted(set(value) - set(BREAK_KINDS))
        if unknown:
            raise ValueError(f"unknown break kind(s) {unknown}; the kinds: {list(BREAK_KINDS)}")
        return {**DEFAULT_BREAK_POLICIES, **value}

    def policy_of(self, kind: str) -> BreakPolicy:
        return self.break_policies.get(kind, DEFAULT_BREAK_POLICIES[kind])

    # Transfer monitoring (docs/custodian-files.md): each custodian named here (JSON list; "*"
    # names every custodian with a reconciled day; empty, the default: none) sends a file set
    # per business day of this exchange calendar after its first reconciled day, due at this
    # local time on the next business day; a set not reconciled by then is a `missing`
    # exception that holds the custodian's accounts, one reconciled after it is `late`.
    # TAXLOT_SVC_CUSTODIAN_FILES_DEADLINES='{"northwind": "09:30"}' sets one custodian's.
    custodian_monitoring: list[str] = Field(default_factory=list)
    custodian_calendar: str = "XNYS"
    custodian_files_timezone: str = "America/New_York"
    custodian_files_deadline: time = time(7, 0)
    custodian_files_deadlines: dict[str, time] = Field(default_factory=dict)
    # How often the monitor looks for overdue sets, and how many business days back.
    custodian_monitor_interval_s: float = Field(default=60.0, gt=0)
    custodian_monitor_lookback_days: int = Field(default=10, ge=1, le=250)
    # Prices and corporate actions are the platform's, shared by every tenant. A custodian's
    # day (uploaded by one tenant's operations) applies those of its files only when this is
    # on: a deployment for one firm (the default, the demo). A platform of several tenants
    # turns it off (helm does): the day's actions not yet applied (by a platform operator,
    # `POST /corporate-actions`) are reported as awaiting the platform and the breaks they
    # cause hold their accounts, naming the action; its prices are not kept.
    custodian_files_set_platform_data: bool = True

    @field_validator("custodian_calendar")
    @classmethod
    def _known_calendar(cls, value: str) -> str:
        if value not in exchange_calendar_names():
            raise ValueError(f"{value!r} is not an exchange calendar of exchange_calendars")
        return value

    @field_validator("custodian_files_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone (e.g. America/New_York)"
            ) from None
        return value

    def monitors(self, custodian: str) -> bool:
        """Whether `custodian`'s daily file sets are expected (transfer monitoring)."""
        return "*" in self.custodian_monitoring or custodian in self.custodian_monitoring

    def deadline_rule(self, custodian: str) -> DeadlineRule:
        """When `custodian`'s daily sets are due."""
        deadline = self.custodian_files_deadlines.get(custodian, self.custodian_files_deadline)
        return DeadlineRule(self.custodian_calendar, deadline, self.custodian_files_timezone)
