"""A proposal a person decides later (REST) is published as following from the trades-proposed
it came in, in that event's trace: the proposal keeps the event's id and trace context (real
PostgreSQL). Ids start with PC (the database is shared)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from account_svc import service
from account_svc.handlers import subscriptions
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn
from account_svc.settings import Settings
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1, TradesProposedV1, TradeV1
from ballast_common.telemetry import current_trace_headers, tracer
from ballast_common.testing import deliver, envelope, migrated_database, outbox_events, unit_of_work
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def traced() -> None:
    """Spans are recorded (an SDK tracer provider, as every service installs one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    model = ModelChangedV1(
        model_id="pc-core",
        name="Core",
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol="AAPL", weight=Decimal(1))],
    )
    async with unit_of_work(database, "test") as uow:
        await service.remember_model(uow, "demo", model)
    async with unit_of_work(database, "test") as uow:
        await service.open_accounts(
            uow,
            PostgresAccountRepository(uow.session),
            "demo",
            "advisor@demo",
            [
                AccountIn(
                    account_id="PC-MANUAL",
                    household_id="PCH",
                    name="PC",
                    model_id="pc-core",
                    auto_approve=False,
                )
            ],
        )
    yield database
    await database.dispose()


def a_trace() -> str:
    with tracer().start_as_current_span("upstream", context=None):
        return current_trace_headers()["traceparent"]


def trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


def proposal() -> TradesProposedV1:
    return TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id="PC-MANUAL",
        model_id="pc-core",
        model_version=1,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("200"),
        trades=[
            TradeV1(
                trade_id=uuid.uuid4(),
                symbol="AAPL",
                side="buy",
                quantity=Decimal("4"),
                estimated_price=Decimal("200"),
                estimated_value=Decimal("800"),
                reason="drift",
                explanation="buy to target",
            )
        ],
    )


@pytest.mark.parametrize(
    ("approve", "topic"), [(True, "trades-approved"), (False, "proposal-rejected")]
)
async def test_a_decision_by_a_person_follows_from_the_proposal_in_its_trace(
    db, approve: bool, topic: str
) -> None:
    proposed = envelope(proposal(), traceparent=a_trace())
    await deliver(db, subscriptions(Settings()), proposed)
    proposal_id = str(proposed.payload["proposal_id"])
    with tracer().start_as_current_span("POST /proposals/decide", context=None):
        async with unit_of_work(db, "account-svc") as uow:
            repo = PostgresAccountRepository(uow.session)
            await service.decide(uow, repo, "demo", "alice", proposal_id, approve, "looks right")
    [decided] = [
        d.envelope
        for d in await outbox_events(db, topic, "PC-MANUAL")
        if str(d.payload.proposal_id) == proposal_id
    ]
    assert decided.causation_id == proposed.id
    assert trace_id(decided.traceparent) == trace_id(proposed.traceparent)
