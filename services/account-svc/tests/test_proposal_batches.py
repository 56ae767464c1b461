"""trades-proposed handled a batch at a time through the consumer's BatchProcessor on real
PostgreSQL: one read of the batch's accounts, one insert of its proposals, trades-approved for
each proposal approved by policy (caused by the proposal's event), a repeated proposal
recorded and announced once, and a proposal for an unknown account dead-lettered alone.
Ids start with PB (the database is shared)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn, AccountPatch
from ballast_common.consumer import BatchProcessor
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1, TradesProposedV1, TradeV1
from ballast_common.outbox import outbox
from ballast_common.testing import (
    consumer_records,
    envelope,
    migrated_database,
    service_consumer,
    unit_of_work,
)
from sqlalchemy import event, select, text

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        for tenant, model_id in (("demo", "pb-core"), ("firm-b", "pb-core-b")):
            await service.remember_model(
                uow,
                tenant,
                ModelChangedV1(
                    model_id=model_id,
                    name="Core",
                    version=1,
                    changed_by="pm",
                    targets=[ModelTargetV1(symbol="AAPL", weight=Decimal(1))],
                ),
            )
    accounts = {
        "demo": (
            ("PB-AUTO", True),
            ("PB-MANUAL", False),
            ("PB-SUSPENDED", True),
            ("PB-ALONE", True),
            ("PB-NEXT", True),
        ),
        "firm-b": (("PB-AUTO2", True),),
    }
    for tenant, model_id in (("demo", "pb-core"), ("firm-b", "pb-core-b")):
        async with unit_of_work(database, "test") as uow:
            await service.open_accounts(
                uow,
                PostgresAccountRepository(uow.session),
                tenant,
                f"advisor@{tenant}",
                [
                    AccountIn(
                        account_id=account_id,
                        household_id=f"PBH-{tenant}",
                        name="PB",
                        model_id=model_id,
                        auto_approve=auto_approve,
                    )
                    for account_id, auto_approve in accounts[tenant]
                ],
            )
    async with unit_of_work(database, "test") as uow:
        await service.change_account(
            uow,
            PostgresAccountRepository(uow.session),
            "demo",
            "PB-SUSPENDED",
            AccountPatch(status="suspended"),
            actor="ops",
        )
    yield database
    await database.dispose()


def proposal(account_id: str) -> TradesProposedV1:
    return TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id="pb-core",
        model_version=1,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("200"),
        trades=[
            TradeV1(
                trade_id=uuid.uuid4(),
                symbol="AAPL",
                side="buy",
                quantity=Decimal(4),
                estimated_price=Decimal("200"),
                estimated_value=Decimal("800"),
                reason="drift",
                explanation="Buy 4 AAPL.",
            )
        ],
    )


def trades_proposed(event: TradesProposedV1, tenant: str = "demo") -> Envelope:
    """A new envelope each time, in a trace of its own: a proposal published twice is two
    events."""
    trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    return envelope(event, tenant=tenant, source="rebalance-svc", traceparent=trace)


def processor(db) -> BatchProcessor:
    return service_consumer(db, spec.name, spec.subscriptions)


async def approvals(db, proposal_ids: list[uuid.UUID]) -> list[Envelope]:
    wanted = {str(p) for p in proposal_ids}
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == "trades-approved").order_by(outbox.c.id)
        )
    found = [Envelope.model_validate(json.loads(r[0])) for r in rows]
    return [e for e in found if e.payload["proposal_id"] in wanted]


async def recorded(db, proposal_ids: list[uuid.UUID]) -> dict[str, tuple]:
    async with db.sessions() as s:
        rows = await s.execute(
            text(
                "SELECT proposal_id, account_id, status, decided_by, decision_note, "
                "jsonb_array_length(trades) FROM proposals WHERE proposal_id = ANY(:ids)"
            ),
            {"ids": [str(p) for p in proposal_ids]},
        )
        return {row[0]: tuple(row[1:]) for row in rows}


async def test_a_batch_of_many_accounts_is_recorded_and_approved_by_policy(db):
    earlier = proposal("PB-AUTO")
    earlier_envelope = trades_proposed(earlier)
    assert await processor(db).process(consumer_records([earlier_envelope])) == {
        "processed": 1,
        "duplicate": 0,
        "dead_lettered": 0,
    }

    auto, auto2, manual, suspended = (
        proposal("PB-AUTO"),
        proposal("PB-AUTO2"),
        proposal("PB-MANUAL"),
        proposal("PB-SUSPENDED"),
    )
    batch = [
        trades_proposed(auto),
        trades_proposed(auto2, tenant="firm-b"),
        trades_proposed(manual),
        trades_proposed(suspended),
        trades_proposed(auto),  # the same proposal published again, in the same batch
        trades_proposed(earlier),  # ... and one recorded by an earlier batch
    ]
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", note)
    try:
        outcome = await processor(db).process(consumer_records(batch))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", note)
    assert outcome == {"processed": 6, "duplicate": 0, "dead_lettered": 0}
    assert len([q for q in statements if "FROM accounts" in q]) == 1
    assert len([q for q in statements if q.startswith("INSERT INTO proposals")]) == 1

    ids = [earlier.proposal_id, auto.proposal_id, auto2.proposal_id]
    ids += [manual.proposal_id, suspended.proposal_id]
    rows = await recorded(db, ids)
    policy = ("approved", service.AUTO_APPROVER, service.AUTO_APPROVAL_NOTE, 1)
    assert rows == {
        str(earlier.proposal_id): ("PB-AUTO", *policy),
        str(auto.proposal_id): ("PB-AUTO", *policy),
        str(auto2.proposal_id): ("PB-AUTO2", *policy),
        str(manual.proposal_id): ("PB-MANUAL", "pending", None, None, 1),
        str(suspended.proposal_id): (
            "PB-SUSPENDED",
            "pending",
            None,
            "waiting: account is suspended",
            1,
        ),
    }

    announced = await approvals(db, ids)
    assert [e.payload["proposal_id"] for e in announced] == [
        str(earlier.proposal_id),
        str(auto.proposal_id),
        str(auto2.proposal_id),
    ]
    by_proposal = {e.payload["proposal_id"]: e for e in announced}
    for proposed, cause in ((earlier, earlier_envelope), (auto, batch[0]), (auto2, batch[1])):
        approved = by_proposal[str(proposed.proposal_id)]
        assert approved.causation_id == cause.id
        assert approved.tenant == cause.tenant and approved.key == proposed.account_id
        assert cause.traceparent and approved.traceparent
        assert approved.traceparent.split("-")[1] == cause.traceparent.split("-")[1]
        assert approved.payload["approved_by"] == service.AUTO_APPROVER
        assert approved.payload["trades"] == proposed.model_dump(mode="json")["trades"]


async def test_a_proposal_for_an_unknown_account_is_the_only_dead_letter(db):
    alone, ghost, after = proposal("PB-ALONE"), proposal("PB-GHOST"), proposal("PB-NEXT")
    outcome = await processor(db).process(
        consumer_records([trades_proposed(alone), trades_proposed(ghost), trades_proposed(after)])
    )
    assert outcome == {"processed": 2, "duplicate": 0, "dead_lettered": 1}
    rows = await recorded(db, [alone.proposal_id, ghost.proposal_id, after.proposal_id])
    assert sorted(r[0] for r in rows.values()) == ["PB-ALONE", "PB-NEXT"]
    assert len(await approvals(db, [alone.proposal_id, after.proposal_id])) == 2
    async with db.sessions() as s:
        letters = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == f"dlq.{spec.name}")
        )
        reasons = [json.loads(r[0])["error"] for r in letters]
    assert "trades proposed for unknown account PB-GHOST" in reasons
