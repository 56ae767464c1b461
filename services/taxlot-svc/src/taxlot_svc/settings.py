from typing import Literal

from ballast_common.settings import ServiceSettings, service_config
from pydantic import Field, field_validator

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
