"""account-svc's service layer on real PostgreSQL: opening accounts and approving trades."""

import uuid
from decimal import Decimal

import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.schemas import AccountIn, AccountPatch
from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1, TradesProposedV1, TradeV1
from ballast_common.errors import Conflict, InvalidInput, NotFound, PermanentMessageError
from ballast_common.plumbing import outbox
from ballast_common.testing import migrated_database, unit_of_work
from sqlalchemy import select

pytestmark = pytest.mark.integration


def delivery(event: TradesProposedV1, tenant: str = "demo") -> Delivery:
    """The proposal as the consumer hands it over: in its envelope."""
    envelope = Envelope(
        type="trades-proposed",
        version=1,
        tenant=tenant,
        key=event.account_id,
        source="rebalance-svc",
        payload=event.model_dump(mode="json"),
    )
    return Delivery(envelope, event)


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await service.remember_model(
            uow,
            ModelChangedV1(
                model_id="core",
                name="Core",
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol="AAPL", weight=Decimal(1))],
            ),
        )
    yield database
    await database.dispose()


def account(account_id: str, **changes) -> AccountIn:
    fields = {
        "account_id": account_id,
        "household_id": "HH-1",
        "name": "Lee Family",
        "model_id": "core",
    }
    return AccountIn(**(fields | changes))


def proposal(account_id: str) -> TradesProposedV1:
    return TradesProposedV1(
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id="core",
        model_version=1,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("10"),
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


async def events(db, topic: str) -> list[bytes]:
    async with db.sessions() as s:
        rows = await s.execute(select(outbox.c.value).where(outbox.c.topic == topic))
        return [r[0] for r in rows]


async def test_opening_announces_each_account(db):
    async with unit_of_work(db, "test") as uow:
        opened = await service.open_accounts(uow, [account("A-1"), account("A-2")])
    assert [a.status for a in opened] == ["active", "active"]
    announced = b"".join(await events(db, "account-changed"))
    assert b'"A-1"' in announced and b'"A-2"' in announced


async def test_opening_is_all_or_nothing(db):
    with pytest.raises(Conflict, match="account A-1 already exists"):
        async with unit_of_work(db, "test") as uow:
            await service.open_accounts(uow, [account("A-3"), account("A-1")])
    with pytest.raises(InvalidInput, match="unknown model nope") as error:
        async with unit_of_work(db, "test") as uow:
            await service.open_accounts(uow, [account("A-4", model_id="nope")])
    assert error.value.errors[0].field == "model_id"
    async with db.sessions() as s:
        with pytest.raises(NotFound):
            await service.get_account(s, "A-3")


async def test_active_auto_approve_account_is_approved_at_once(db):
    async with unit_of_work(db, "test") as uow:
        await service.open_accounts(uow, [account("A-5")])
    event = proposal("A-5")
    async with unit_of_work(db, "test") as uow:
        await service.receive_proposals(uow, [delivery(event)])
    async with unit_of_work(db, "test") as uow:  # the same proposal again changes nothing
        await service.receive_proposals(uow, [delivery(event)])
    approvals = [
        v for v in await events(db, "trades-approved") if str(event.proposal_id).encode() in v
    ]
    assert len(approvals) == 1 and b"policy:auto-approve" in approvals[0]


async def test_suspended_account_waits_and_cannot_be_approved(db):
    async with unit_of_work(db, "test") as uow:
        await service.open_accounts(uow, [account("A-6", auto_approve=False)])
    async with unit_of_work(db, "test") as uow:
        await service.change_account(uow, "A-6", AccountPatch(status="suspended"))
    event = proposal("A-6")
    async with unit_of_work(db, "test") as uow:
        await service.receive_proposals(uow, [delivery(event)])
    with pytest.raises(Conflict, match="account A-6 is suspended"):
        async with unit_of_work(db, "test") as uow:
            await service.decide(uow, str(event.proposal_id), True, "ops@demo", None, "demo")
    async with unit_of_work(db, "test") as uow:
        rejected = await service.decide(
            uow, str(event.proposal_id), False, "ops@demo", "client asked to wait", "demo"
        )
    assert (rejected.status, rejected.decided_by) == ("rejected", "ops@demo")
    with pytest.raises(Conflict, match="already rejected by ops@demo"):
        async with unit_of_work(db, "test") as uow:
            await service.decide(uow, str(event.proposal_id), True, "x", None, "demo")


async def test_proposal_for_unknown_account_is_a_permanent_error(db):
    with pytest.raises(PermanentMessageError, match="unknown account GHOST"):
        async with unit_of_work(db, "test") as uow:
            await service.receive_proposals(uow, [delivery(proposal("GHOST"))])
