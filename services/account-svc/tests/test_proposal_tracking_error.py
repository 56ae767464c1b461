"""On real PostgreSQL: a direct-index proposal's tracking error before and after and its notes
(trades-proposed's `metrics` and `notes`) are kept with the proposal and answered by GET
/proposals/{id} and the review list; a proposal without them answers null and no notes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn
from account_test_support import remember_models
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import ProposalMetricsV1, TradesProposedV1, TradeV1
from ballast_common.db import Database
from ballast_common.testing import (
    api_client,
    consumer_records,
    envelope,
    migrated_database,
    service_consumer,
    unit_of_work,
)

pytestmark = pytest.mark.integration

TENANT, MODEL = "te-firm", "te-index"
NOTE = "2 trades (0 lots harvested): tracking error 1.20% → 0.45% a year, turnover 1.00%."


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    await remember_models(database, [(TENANT, MODEL)])
    async with unit_of_work(database, "test") as uow:
        await service.open_accounts(
            uow,
            PostgresAccountRepository(uow.session),
            TENANT,
            "advisor@te",
            [
                AccountIn(account_id=a, household_id="TEH", name=a, model_id=MODEL)
                for a in ("TE-1", "TE-2")
            ],
        )
    yield database
    await database.dispose()


def proposed(account_id: str, *, direct_index: bool) -> Envelope:
    metrics = ProposalMetricsV1(
        account_value=Decimal("100000"),
        buy_value=Decimal("500"),
        sell_value=Decimal("500"),
        turnover_percent=Decimal("0.5"),
        estimated_tax=Decimal("-12.40"),
        drift_before_percent=Decimal("0.8"),
        drift_after_percent=Decimal("0.3"),
        tracking_error_before_percent=Decimal("1.2034") if direct_index else None,
        tracking_error_after_percent=Decimal("0.4517") if direct_index else None,
    )
    trades = [
        TradeV1(
            trade_id=uuid.uuid4(),
            symbol="AAPL",
            side=side,  # type: ignore[arg-type]
            quantity=Decimal(2),
            estimated_price=Decimal(250),
            estimated_value=Decimal(500),
            reason="drift",
            explanation=f"{side} 2 AAPL",
        )
        for side in ("buy", "sell")
    ]
    event = TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id=MODEL,
        model_version=1,
        trades=trades,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("1000"),
        metrics=metrics,
        notes=[NOTE] if direct_index else [],
    )
    return envelope(event, tenant=TENANT, source="rebalance-svc")


async def test_tracking_errors_and_notes_are_kept_and_answered(db):
    events = [proposed("TE-1", direct_index=True), proposed("TE-2", direct_index=False)]
    processor = service_consumer(db, spec.name, spec.subscriptions)
    outcome = await processor.process(consumer_records(events))
    assert outcome["dead_lettered"] == 0
    async with api_client(spec, db, tenant=TENANT) as http:
        direct_id, plain_id = (e.payload["proposal_id"] for e in events)
        direct = (await http.get(f"/proposals/{direct_id}")).json()
        assert Decimal(direct["tracking_error_before_percent"]) == Decimal("1.2034")
        assert Decimal(direct["tracking_error_after_percent"]) == Decimal("0.4517")
        assert direct["notes"] == [NOTE]
        plain = (await http.get(f"/proposals/{plain_id}")).json()
        assert plain["tracking_error_before_percent"] is None and plain["notes"] == []
        listed = (await http.get("/proposals", params={"account_id": "TE-1"})).json()["items"]
        assert [Decimal(p["tracking_error_after_percent"]) for p in listed] == [Decimal("0.4517")]
