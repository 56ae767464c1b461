"""The steps of opening an account as a workflow, and the bodies of its routes and the task
list (account_opening_api.py)."""

from datetime import datetime
from typing import Literal

from ballast_common.contracts.types import RequestBody
from pydantic import BaseModel, Field

OpeningStep = Literal["paperwork", "funding", "investment_profile", "compliance_review"]
StepStatus = Literal["pending", "done", "exception"]
StepKind = Literal["manual", "automatic"]
TaskKind = Literal["exception", "overdue"]

# Every step is required; in the order they are shown. The automatic ones are worked out from
# the account itself whenever it changes (service.settle_opening), never marked by a person.
STEPS: dict[OpeningStep, tuple[StepKind, str]] = {
    "paperwork": ("manual", "account agreement and forms signed and filed"),
    "funding": ("manual", "funds or holdings received"),
    "investment_profile": ("automatic", "a model or a strategy is set"),
    "compliance_review": ("manual", "reviewed and approved by compliance"),
}
AUTOMATIC_STEPS = tuple(step for step, (kind, _) in STEPS.items() if kind == "automatic")


class StepOutcome(RequestBody):
    """What a person found doing a manual step: done, or an exception to resolve (the task
    list shows it with the note until the step is marked done)."""

    outcome: Literal["done", "exception"]
    note: str | None = Field(
        default=None, max_length=1000, description="required for an exception: what is wrong"
    )


class StepOut(BaseModel):
    step: OpeningStep
    kind: StepKind
    description: str
    status: StepStatus
    note: str | None
    updated_by: str
    updated_at: datetime


class OpeningOut(BaseModel):
    """An account's opening: its steps and what is still missing before it becomes active."""

    account_id: str
    status: str = Field(description="the account's: opening until every step is done")
    opening_since: datetime = Field(description="when the account was opened as a workflow")
    steps: list[StepOut]
    missing: list[OpeningStep] = Field(description="steps not done yet (pending or exception)")


class TaskOut(BaseModel):
    """Open work of the tenant: a step in exception, or an account opening for too long."""

    task_id: str = Field(description="exception:<account>:<step> or overdue:<account>")
    kind: TaskKind
    account_id: str
    account_name: str
    step: OpeningStep | None = Field(description="the step in exception (exception tasks)")
    note: str | None = Field(description="the exception's note")
    raised_by: str | None = Field(description="who marked the exception")
    since: datetime = Field(
        description="exception: when it was raised; overdue: when the opening started"
    )
    age_days: int = Field(description="whole days since `since`")
    missing: list[OpeningStep] = Field(description="the account's steps not done yet")
