"""The consumer machinery and the outbox relay against real PostgreSQL (and Kafka at the end)."""

import asyncio
import json
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from ballast_common.bus import KafkaConnection, KafkaPublisher, ensure_topics
from ballast_common.consumer import BatchProcessor, KafkaConsumerLoop, Subscription
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.errors import PermanentMessageError, TransientError
from ballast_common.outbox import outbox
from ballast_common.relay import OutboxRelay
from ballast_common.testing import (
    InMemoryPublisher,
    consumer_record,
    envelope,
    migrated_database,
    unit_of_work,
)
from probe_svc import Note, make_spec
from sqlalchemy import select as sa_select
from sqlalchemy import text
from sqlmodel import select

pytestmark = pytest.mark.integration


def account_changed(account_id: str, name: str = "Jordan") -> AccountChangedV1:
    return AccountChangedV1(
        account_id=account_id,
        household_id="HH-1",
        name=name,
        account_type="taxable",
        model_id="core",
        status="active",
        auto_approve=True,
    )


def record(value: bytes | None, offset: int) -> ConsumerRecord:
    return consumer_record(value, offset, topic="account-changed", key="ACC-1")


def envelope_bytes(payload: AccountChangedV1, event_id: uuid.UUID | None = None) -> bytes:
    return envelope(payload, event_id=event_id).to_bytes()


async def note_handler(uow, envelope, event: AccountChangedV1) -> None:
    if event.name == "poison":
        raise PermanentMessageError(f"account {event.account_id} has a poison name")
    if event.name == "flaky":
        raise TransientError("database of record not ready")
    uow.session.add(Note(account_id=event.account_id, text=event.name))
    uow.publish(account_changed(event.account_id, f"seen {event.name}"), key=event.account_id)


@pytest.fixture
async def db(database_url):
    schema = f"probe_{uuid.uuid4().hex[:6]}"
    database = await migrated_database(make_spec(schema), database_url)
    yield database
    await database.dispose()


def processor(db) -> BatchProcessor:
    return BatchProcessor(
        "probe-svc",
        [Subscription("account-changed", note_handler)],
        lambda: unit_of_work(db, "probe-svc"),
    )


async def notes(db) -> list[str]:
    async with db.sessions() as s:
        return list((await s.exec(select(Note.text).order_by(Note.id))).all())


async def outbox_rows(db) -> list[tuple[str, dict]]:
    async with db.sessions() as s:
        rows = await s.execute(sa_select(outbox.c.topic, outbox.c.value).order_by(outbox.c.id))
        return [(t, json.loads(v)) for t, v in rows]


async def test_a_redelivered_event_has_one_effect(db):
    event_id = uuid.uuid4()
    raw = envelope_bytes(account_changed("ACC-1"), event_id)
    first = await processor(db).process([record(raw, 0)])
    second = await processor(db).process([record(raw, 0), record(raw, 1)])
    assert first == {"processed": 1, "duplicate": 0, "dead_lettered": 0}
    assert second == {"processed": 0, "duplicate": 2, "dead_lettered": 0}
    assert await notes(db) == ["Jordan"]
    assert [t for t, _ in await outbox_rows(db)] == ["account-changed"]


async def test_bad_messages_are_dead_lettered_and_the_rest_of_the_batch_commits(db):
    batch = [
        record(b"{not json", 0),
        record(envelope_bytes(account_changed("ACC-2", "poison")), 1),
        record(envelope_bytes(account_changed("ACC-3", "Avery")), 2),
    ]
    outcome = await processor(db).process(batch)
    assert outcome == {"processed": 1, "duplicate": 0, "dead_lettered": 2}
    assert await notes(db) == ["Avery"]
    rows = await outbox_rows(db)
    letters = [v for t, v in rows if t == "dlq.probe-svc"]
    assert [(v["offset"], v["error_type"]) for v in letters] == [
        (0, "EnvelopeError"),
        (1, "PermanentMessageError"),
    ]
    assert "not JSON" in letters[0]["error"] and letters[0]["value"] == "{not json"
    assert letters[1]["error"] == "account ACC-2 has a poison name"
    assert letters[1]["original_topic"] == "account-changed"
    # the poison message's own events were discarded with its savepoint
    assert [v["payload"]["name"] for t, v in rows if t == "account-changed"] == ["seen Avery"]


async def test_a_transient_failure_rolls_back_the_whole_batch(db):
    batch = [
        record(envelope_bytes(account_changed("ACC-4", "Sam")), 0),
        record(envelope_bytes(account_changed("ACC-5", "flaky")), 1),
    ]
    with pytest.raises(TransientError):
        await processor(db).process(batch)
    assert await notes(db) == []
    assert await outbox_rows(db) == []
    async with db.sessions() as s:
        assert (await s.execute(text("SELECT count(*) FROM inbox"))).scalar() == 0


async def test_relay_publishes_in_order_marks_rows_and_survives_a_failure(db):
    async with unit_of_work(db, "probe-svc") as uow:
        for i in range(5):
            uow.publish(account_changed(f"ACC-{i}", f"n{i}"), key="ACC-1")
    publisher = InMemoryPublisher()
    relay = OutboxRelay(db, publisher, topic_prefix="x.")
    publisher.fail_next = ConnectionError("broker down")
    with pytest.raises(ConnectionError):
        await relay.publish_once()
    assert publisher.messages == []
    assert await relay.publish_once() == 5
    assert await relay.publish_once() == 0
    names = [json.loads(m.value)["payload"]["name"] for m in publisher.messages]
    assert names == ["n0", "n1", "n2", "n3", "n4"]
    assert {m.topic for m in publisher.messages} == {"x.account-changed"}
    assert all(m.headers["event-type"] == "account-changed" for m in publisher.messages)


async def _publish_as_the_relay_loop_would(relay: OutboxRelay) -> None:
    """`OutboxRelay.run` retries a failed pass; right after a topic is created the broker may
    still answer NotLeaderForPartition, which a retry gets past."""
    async with asyncio.timeout(30):
        while True:
            try:
                await relay.publish_once()
                return
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                await asyncio.sleep(0.5)


async def test_end_to_end_on_kafka_malformed_goes_to_dlq_and_consumer_carries_on(
    db, kafka_connection, topic_prefix
):
    prefix = f"{topic_prefix}e2e{uuid.uuid4().hex[:4]}."
    group = prefix + "probe-svc"
    out = prefix + "out."  # where the relay publishes: apart from what the consumer reads
    await ensure_topics(
        kafka_connection,
        [prefix + "account-changed", out + "account-changed", out + "dlq." + group],
        3,
    )
    proc = BatchProcessor(
        group,
        [Subscription("account-changed", note_handler)],
        lambda: unit_of_work(db, "probe-svc"),
        topic_prefix=prefix,
    )
    loop = KafkaConsumerLoop(proc, kafka_connection, batch_size=50)
    publisher = KafkaPublisher(kafka_connection, "probe-relay")
    await publisher.start()
    relay = OutboxRelay(db, publisher, topic_prefix=out)
    raw_producer = AIOKafkaProducer(**kafka_connection.client_options(), acks="all")
    await raw_producer.start()
    task = asyncio.create_task(loop.run())
    try:
        await raw_producer.send_and_wait(prefix + "account-changed", b"garbage", key=b"ACC-9")
        await raw_producer.send_and_wait(
            prefix + "account-changed",
            envelope_bytes(account_changed("ACC-9", "Robin")),
            key=b"ACC-9",
        )
        async with asyncio.timeout(30):
            while await notes(db) != ["Robin"]:
                await asyncio.sleep(0.2)
        await _publish_as_the_relay_loop_would(relay)  # the handler's event and the letter
        letters = await _read(kafka_connection, out + "dlq." + group, 1)
        assert letters[0]["error_type"] == "EnvelopeError"
        assert letters[0]["original_topic"] == prefix + "account-changed"
        assert letters[0]["value"] == "garbage"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await raw_producer.stop()
        await publisher.stop()
    # offsets were committed after the database: a new consumer in the group reads nothing old
    again = BatchProcessor(
        group,
        [Subscription("account-changed", note_handler)],
        lambda: unit_of_work(db, "probe-svc"),
        topic_prefix=prefix,
    )
    consumer = AIOKafkaConsumer(
        *again.topics,
        **kafka_connection.client_options(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=3000)
        assert sum(len(v) for v in batch.values()) == 0
    finally:
        await consumer.stop()


async def _read(connection: KafkaConnection, topic: str, count: int) -> list[dict]:
    consumer = AIOKafkaConsumer(
        topic,
        **connection.client_options(),
        auto_offset_reset="earliest",
        group_id=f"reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    out: list[dict] = []
    try:
        async with asyncio.timeout(30):
            while len(out) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return out


async def test_two_copies_in_one_batch_have_one_effect(db):
    raw = envelope_bytes(account_changed("ACC-7", "Kai"))
    outcome = await processor(db).process([record(raw, 0), record(raw, 1)])
    assert outcome == {"processed": 1, "duplicate": 1, "dead_lettered": 0}
    assert await notes(db) == ["Kai"]


async def test_a_deadlock_is_transient_and_a_unique_violation_is_not(db):
    from ballast_common.consumer import is_transient
    from sqlalchemy.exc import DBAPIError

    async with db.sessions() as s:
        with pytest.raises(DBAPIError) as deadlock:
            await s.execute(text("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$"))
    async with db.sessions() as s:
        with pytest.raises(DBAPIError) as unique:
            await s.execute(text("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '23505'; END $$"))
    assert is_transient(deadlock.value)
    assert not is_transient(unique.value)


# --- batch handlers, attempts and the dead-letter hook ------------------------------------


async def test_a_batch_handler_gets_the_new_events_of_its_topic_at_once(db):
    calls: list[list[str]] = []

    async def notes_at_once(uow, deliveries) -> None:
        calls.append([d.payload.name for d in deliveries])
        for d in deliveries:
            uow.session.add(Note(account_id=d.payload.account_id, text=d.payload.name))
            uow.publish(account_changed(d.payload.account_id, "ack"), key="k", cause=d.envelope)

    seen = envelope_bytes(account_changed("ACC-1", "Ada"))
    proc = BatchProcessor(
        "probe-svc",
        [Subscription.batch("account-changed", notes_at_once)],
        lambda: unit_of_work(db, "probe-svc"),
    )
    await proc.process([record(seen, 0)])
    outcome = await proc.process(
        [
            record(seen, 0),  # processed before: not handed over again
            record(envelope_bytes(account_changed("ACC-2", "Bo")), 1),
            record(envelope_bytes(account_changed("ACC-3", "Cy")), 2),
        ]
    )
    assert outcome == {"processed": 2, "duplicate": 1, "dead_lettered": 0}
    assert calls == [["Ada"], ["Bo", "Cy"]]
    assert await notes(db) == ["Ada", "Bo", "Cy"]
    acks = [v for t, v in await outbox_rows(db) if v["payload"]["name"] == "ack"]
    assert len({a["causation_id"] for a in acks}) == 3 and None not in {
        a["causation_id"] for a in acks
    }


async def test_a_failing_batch_is_redone_one_record_at_a_time(db):
    async def refuse_poison(uow, deliveries) -> None:
        for d in deliveries:
            if d.payload.name == "poison":
                raise PermanentMessageError(f"{d.payload.account_id} is poison")
            uow.session.add(Note(account_id=d.payload.account_id, text=d.payload.name))

    proc = BatchProcessor(
        "probe-svc",
        [Subscription.batch("account-changed", refuse_poison)],
        lambda: unit_of_work(db, "probe-svc"),
    )
    outcome = await proc.process(
        [
            record(envelope_bytes(account_changed("ACC-1", "Ada")), 0),
            record(envelope_bytes(account_changed("ACC-2", "poison")), 1),
            record(envelope_bytes(account_changed("ACC-3", "Cy")), 2),
        ]
    )
    assert outcome == {"processed": 2, "duplicate": 0, "dead_lettered": 1}
    assert await notes(db) == ["Ada", "Cy"]


async def test_a_failing_record_is_tried_again_then_dead_lettered_and_noted(db):
    tries: list[str] = []

    async def breaks(uow, envelope, event) -> None:
        tries.append(event.name)
        uow.session.add(Note(account_id=event.account_id, text="half done"))
        if event.name != "third time lucky" or len(tries) < 3:
            raise RuntimeError(f"engine failed on {event.account_id}")

    async def note_failure(uow, envelope, event, reason) -> None:
        uow.session.add(Note(account_id=event.account_id, text=f"failed: {reason}"))

    proc = BatchProcessor(
        "probe-svc",
        [Subscription("account-changed", breaks, attempts=3, on_dead_letter=note_failure)],
        lambda: unit_of_work(db, "probe-svc"),
    )
    outcome = await proc.process([record(envelope_bytes(account_changed("ACC-1", "never")), 0)])
    assert outcome == {"processed": 0, "duplicate": 0, "dead_lettered": 1}
    # the fast path, then three attempts on its own; nothing of them stays but the note
    assert tries == ["never"] * 4
    assert await notes(db) == ["failed: engine failed on ACC-1"]
    letters = [v for t, v in await outbox_rows(db) if t == "dlq.probe-svc"]
    assert letters[0]["error"] == "engine failed on ACC-1 (after 3 attempts)"
    tries.clear()
    lucky = envelope_bytes(account_changed("ACC-2", "third time lucky"))
    assert (await proc.process([record(lucky, 1)]))["processed"] == 1
    assert tries == ["third time lucky"] * 3
    assert (await notes(db))[-1] == "half done"


def test_a_subscription_has_one_kind_of_handler():
    with pytest.raises(ValueError, match="exactly one"):
        Subscription("account-changed")
    with pytest.raises(ValueError, match="attempts"):
        Subscription("account-changed", note_handler, attempts=0)
