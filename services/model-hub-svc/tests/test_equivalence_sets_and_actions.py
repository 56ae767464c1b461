"""Equivalence sets and following corporate actions, on real PostgreSQL; what was announced is
read back from the outbox as the decoded envelopes other services will receive."""

import uuid
from datetime import date
from decimal import Decimal

import pytest
from ballast_common.contracts.envelope import decode_envelope
from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.errors import InvalidInput, NotFound
from ballast_common.plumbing import outbox
from ballast_common.testing import migrated_database, unit_of_work
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.schemas import EquivalenceSetIn, ModelIn, SecurityIn, TargetIn
from sqlalchemy import select

pytestmark = pytest.mark.integration

PRICES = {"SPY": "600", "IVV": "602", "VOO": "551", "XOM": "110", "FB": "500", "ACME": "40"}


@pytest.fixture(scope="module")
async def db(database_url):
    database = await migrated_database(spec, database_url)
    async with unit_of_work(database, "test") as uow:
        await service.upsert_securities(
            uow,
            [
                SecurityIn(symbol=s, name=s, asset_class="US Equity", sector="X", price=Decimal(p))
                for s, p in PRICES.items()
            ],
        )
    yield database
    await database.dispose()


async def announced(db, topic: str, key: str) -> list:
    async with db.sessions() as s:
        rows = await s.execute(
            select(outbox.c.value).where(outbox.c.topic == topic, outbox.c.key == key)
        )
        return [decode_envelope(r[0])[1] for r in rows]


def a_set(members=("SPY", "IVV"), **extra) -> EquivalenceSetIn:
    return EquivalenceSetIn(name="Set", members=list(members), **extra)


def new_id() -> str:
    return f"set-{uuid.uuid4().hex[:8]}"


async def test_set_versions_and_unchanged_set_makes_no_version(db):
    set_id = new_id()
    async with unit_of_work(db, "t") as uow:
        first = await service.put_equivalence_set(uow, set_id, a_set(identical=True), "pm")
    async with unit_of_work(db, "t") as uow:
        same = await service.put_equivalence_set(uow, set_id, a_set(identical=True), "pm")
    async with unit_of_work(db, "t") as uow:
        removed = await service.remove_equivalence_set(uow, set_id, "pm")
    assert (first.version, first.created, same.created, removed.version) == (1, True, False, 2)
    events = await announced(db, "equivalence-set-changed", set_id)
    assert [(e.version, e.members, e.identical, e.removed) for e in events] == [
        (1, ["SPY", "IVV"], True, False),
        (2, [], True, True),
    ]
    with pytest.raises(NotFound):
        async with unit_of_work(db, "t") as uow:
            await service.remove_equivalence_set(uow, set_id, "pm")


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        (a_set(members=("SPY", "NOPE")), "unknown security NOPE", "members[1]"),
        (a_set(members=("SPY", "SPY")), "SPY appears more than once", "members[1]"),
    ],
)
async def test_bad_sets_are_refused_naming_the_field(db, body, message, field):
    with pytest.raises(InvalidInput, match=message) as error:
        async with unit_of_work(db, "t") as uow:
            await service.put_equivalence_set(uow, new_id(), body, "pm")
    assert error.value.errors[0].field == field


async def test_a_security_is_in_one_equivalence_set_only(db):
    taken = new_id()
    async with unit_of_work(db, "t") as uow:
        await service.put_equivalence_set(uow, taken, a_set(members=("VOO", "IVV")), "pm")
    with pytest.raises(InvalidInput, match=f"IVV is already in equivalence set {taken}") as e:
        async with unit_of_work(db, "t") as uow:
            await service.put_equivalence_set(uow, new_id(), a_set(members=("SPY", "IVV")), "pm")
    assert e.value.errors[0].field == "members[1]"
    async with unit_of_work(db, "t") as uow:
        await service.remove_equivalence_set(uow, taken, "pm")
    async with unit_of_work(db, "t") as uow:  # once removed, its members are free again
        again = await service.put_equivalence_set(uow, new_id(), a_set(("SPY", "IVV")), "pm")
    assert again.created
    async with unit_of_work(db, "t") as uow:
        await service.remove_equivalence_set(uow, again.set_id, "pm")


def action(kind: str, symbol: str, **fields) -> CorporateActionRecordedV1:
    return CorporateActionRecordedV1(
        action_id=f"CA-{uuid.uuid4().hex[:6]}",
        type=kind,
        symbol=symbol,
        on=date(2026, 11, 20),
        accounts_affected=3,
        **fields,
    )


async def publish(db, model_id: str, **weights: str) -> None:
    body = ModelIn(
        name=model_id, targets=[TargetIn(symbol=s, weight=Decimal(w)) for s, w in weights.items()]
    )
    async with unit_of_work(db, "t") as uow:
        await service.publish_model(uow, model_id, body, "pm", 1e-9)


async def test_symbol_change_renames_the_security_in_models_and_sets(db):
    model_id, set_id = f"m-{uuid.uuid4().hex[:6]}", new_id()
    await publish(db, model_id, FB="0.4", XOM="0.6")
    async with unit_of_work(db, "t") as uow:
        await service.put_equivalence_set(uow, set_id, a_set(("FB", "XOM")), "pm")
    change = action("symbol-change", "FB", new_symbol="META")
    async with unit_of_work(db, "t") as uow:
        await service.follow_corporate_action(uow, change)
    async with db.sessions() as s:
        model = await service.get_model(s, model_id)
        meta = await service.repo.get_security(s, "META")
        security_set = await service.get_equivalence_set(s, set_id)
    assert model.version == 2 and model.changed_by == f"corporate-action:{change.action_id}"
    assert {t.symbol: t.weight for t in model.targets} == {
        "META": Decimal("0.4"),
        "XOM": Decimal("0.6"),
    }
    assert meta is not None and meta.price == Decimal("500")
    assert security_set.members == ["XOM", "META"] and security_set.version == 2
    securities = await announced(db, "securities-changed", service.SECURITY_MASTER_KEY)
    assert any(s.symbol == "META" for e in securities for s in e.securities)


async def test_cash_merger_spreads_the_weight_pro_rata_and_keeps_100_percent(db):
    model_id = f"m-{uuid.uuid4().hex[:6]}"
    await publish(db, model_id, ACME="0.1", SPY="0.3", XOM="0.6")
    async with unit_of_work(db, "t") as uow:
        await service.follow_corporate_action(
            uow, action("cash-merger", "ACME", cash_per_share=Decimal("52"))
        )
    async with db.sessions() as s:
        model = await service.get_model(s, model_id)
    weights = {t.symbol: t.weight for t in model.targets}
    assert set(weights) == {"SPY", "XOM"} and sum(weights.values()) == 1
    assert weights["SPY"] == Decimal("0.3333333333") and weights["XOM"] == Decimal("0.6666666667")


async def test_split_restates_the_price_and_leaves_models_alone(db):
    model_id = f"m-{uuid.uuid4().hex[:6]}"
    await publish(db, model_id, VOO="1")
    async with unit_of_work(db, "t") as uow:
        await service.follow_corporate_action(
            uow, action("split", "VOO", numerator=4, denominator=1)
        )
    async with db.sessions() as s:
        voo = await service.repo.get_security(s, "VOO")
        model = await service.get_model(s, model_id)
    assert voo is not None and voo.price == Decimal("137.75")
    assert model.version == 1


async def test_a_retried_request_with_an_idempotency_key_runs_once(db):
    from types import SimpleNamespace

    import httpx
    from ballast_common.app import create_app
    from model_hub_svc.settings import Settings

    app = create_app(spec, Settings())
    app.state.runtime = SimpleNamespace(
        db=db, settings=Settings(), uow=lambda: unit_of_work(db, "model-hub-svc")
    )
    set_id = new_id()
    body = {"name": "Trackers", "members": ["SPY", "VOO"]}
    headers = {"Idempotency-Key": f"put-{set_id}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as api:
        first = await api.put(f"/equivalence-sets/{set_id}", json=body, headers=headers)
        again = await api.put(f"/equivalence-sets/{set_id}", json=body, headers=headers)
        other = await api.put(
            f"/equivalence-sets/{set_id}", json={**body, "name": "Other"}, headers=headers
        )
        await api.delete(f"/equivalence-sets/{set_id}")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and "different request" in other.json()["detail"]
    assert len(await announced(db, "equivalence-set-changed", set_id)) == 2  # put, delete
