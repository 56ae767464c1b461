"""Subscriptions with a view: the payload decoded into the fields the handler uses, on real
PostgreSQL (inbox, dead letters in the outbox)."""

import json
import uuid

import pytest
from ballast_common.bulk import driver_connection
from ballast_common.consumer import BatchProcessor, Delivery, Subscription, is_transient
from ballast_common.contracts.envelope import decode_envelope
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.outbox import outbox
from ballast_common.testing import consumer_record, envelope, migrated_database, unit_of_work
from probe_svc import Note, make_spec
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select as sa_select
from sqlmodel import select

pytestmark = pytest.mark.integration


class NameView(BaseModel):
    """What the handler reads of account-changed: two of its fields."""

    model_config = ConfigDict(extra="ignore")

    account_id: str
    name: str = Field(min_length=1)


def account_changed(account_id: str, name: str) -> AccountChangedV1:
    return AccountChangedV1(
        account_id=account_id,
        household_id="HH-1",
        name=name,
        account_type="taxable",
        model_id="core",
        status="active",
        auto_approve=True,
    )


def as_bytes(payload: AccountChangedV1, **changes: object) -> bytes:
    """The event's bytes, with fields of the envelope (or of ``payload.<field>``) changed."""
    data = json.loads(envelope(payload).to_bytes())
    for name, value in changes.items():
        if name.startswith("payload."):
            data["payload"][name.removeprefix("payload.")] = value
        else:
            data[name] = value
    return json.dumps(data).encode()


@pytest.fixture
async def db(database_url):
    database = await migrated_database(make_spec(f"probe_{uuid.uuid4().hex[:6]}"), database_url)
    yield database
    await database.dispose()


def processor(db, seen: list[object]) -> BatchProcessor:
    async def note_names(uow, deliveries) -> None:
        for d in deliveries:
            seen.append(d.payload)
            uow.session.add(Note(account_id=d.payload.account_id, text=d.payload.name))

    return BatchProcessor(
        "probe-svc",
        [Subscription.batch("account-changed", note_names, view=NameView)],
        lambda: unit_of_work(db, "probe-svc"),
    )


async def notes(db) -> list[str]:
    async with db.sessions() as s:
        return list((await s.exec(select(Note.text).order_by(Note.id))).all())


async def dead_letters(db) -> list[dict]:
    async with db.sessions() as s:
        rows = await s.execute(
            sa_select(outbox.c.value).where(outbox.c.topic == "dlq.probe-svc").order_by(outbox.c.id)
        )
        return [json.loads(v) for (v,) in rows]


async def test_a_view_subscription_gets_the_view_and_ignores_the_fields_it_does_not_read(db):
    seen: list[object] = []
    records = [
        consumer_record(as_bytes(account_changed("ACC-1", "Ada")), 0, topic="account-changed"),
        # a field the view does not read breaks the contract: the view does not mind
        consumer_record(
            as_bytes(account_changed("ACC-2", "Bo"), **{"payload.account_type": 42}),
            1,
            topic="account-changed",
        ),
    ]
    outcome = await processor(db, seen).process(records)
    assert outcome == {"processed": 2, "duplicate": 0, "dead_lettered": 0}
    assert seen == [
        NameView(account_id="ACC-1", name="Ada"),
        NameView(account_id="ACC-2", name="Bo"),
    ]
    assert all(type(p) is NameView for p in seen)
    assert await notes(db) == ["Ada", "Bo"]
    # the contract itself refuses the second one
    with pytest.raises(Exception, match="account_type"):
        decode_envelope(records[1].value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "message is not JSON"),
        (b"[1, 2]", "message is not a JSON object"),
        (None, "message has no value"),
    ],
)
async def test_a_message_that_is_no_event_is_dead_lettered_with_the_reason(db, value, reason):
    seen: list[object] = []
    good = consumer_record(as_bytes(account_changed("ACC-3", "Cy")), 1, topic="account-changed")
    outcome = await processor(db, seen).process(
        [consumer_record(value, 0, topic="account-changed"), good]
    )
    assert outcome == {"processed": 1, "duplicate": 0, "dead_lettered": 1}
    [letter] = await dead_letters(db)
    assert reason in letter["error"] and letter["error_type"] == "EnvelopeError"
    assert await notes(db) == ["Cy"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"payload.name": ""}, "invalid account-changed v1 payload: name: String should have"),
        ({"payload.name": 5}, "invalid account-changed v1 payload: name: Input should be"),
        ({"payload.account_id": None}, "invalid account-changed v1 payload: account_id:"),
        ({"tenant": ""}, "invalid envelope: tenant:"),
        ({"version": 99}, "unknown event type/version account-changed v99"),
    ],
)
async def test_an_event_whose_used_fields_are_invalid_is_dead_lettered_naming_them(
    db, changes, reason
):
    seen: list[object] = []
    bad = as_bytes(account_changed("ACC-4", "Dee"), **changes)
    outcome = await processor(db, seen).process(
        [
            consumer_record(bad, 0, topic="account-changed"),
            consumer_record(as_bytes(account_changed("ACC-5", "Eve")), 1, topic="account-changed"),
        ]
    )
    assert outcome == {"processed": 1, "duplicate": 0, "dead_lettered": 1}
    [letter] = await dead_letters(db)
    assert letter["error"].startswith(reason), letter["error"]
    assert letter["value"] == bad.decode()
    assert [type(p) for p in seen] == [NameView]
    assert await notes(db) == ["Eve"]


async def test_a_payload_decoded_with_the_contract_reaches_the_handler_as_the_view(db):
    got: list[object] = []

    async def note_names(uow, deliveries) -> None:
        got.extend(d.payload for d in deliveries)

    subscription = Subscription.batch("account-changed", note_names, view=NameView)
    decoded = decode_envelope(envelope(account_changed("ACC-6", "Flo")).to_bytes())
    async with unit_of_work(db, "probe-svc") as uow:
        await subscription.deliver(uow, [Delivery(*decoded)])
    assert got == [NameView(account_id="ACC-6", name="Flo")]


async def test_the_drivers_own_deadlock_is_transient_and_its_unique_violation_is_not(db):
    errors = []
    for code in ("40P01", "40001", "23505"):
        async with db.sessions() as session:
            connection = await driver_connection(session)
            with pytest.raises(Exception) as raised:
                await connection.execute(
                    f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$"
                )
            errors.append(raised.value)
    assert [is_transient(e) for e in errors] == [True, True, False]


def test_a_database_restarting_or_gone_is_transient_and_a_bad_message_is_not():
    import asyncpg
    from ballast_common.errors import PermanentMessageError
    from sqlalchemy.exc import DBAPIError

    def wrapped(orig: BaseException) -> DBAPIError:
        return DBAPIError("SELECT 1", {}, orig)

    in_recovery = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    shutdown = asyncpg.exceptions.AdminShutdownError("terminating connection")
    closed = asyncpg.exceptions.InterfaceError("connection is closed")
    gone = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    transient = [in_recovery, shutdown, closed, gone, wrapped(in_recovery), wrapped(closed)]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    try:
        try:
            raise closed
        except asyncpg.InterfaceError:
            raise PermanentMessageError("fill F1: unknown account") from None
    except PermanentMessageError as permanent:
        bad_message = permanent
    syntax = asyncpg.exceptions.PostgresSyntaxError("syntax error")
    assert [is_transient(e) for e in (bad_message, ValueError("x"), syntax)] == [False] * 3
