"""One port test suite for the Publisher, run against the in-memory fake and real Kafka."""

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from ballast_common.bus import KafkaConnection, KafkaPublisher, Message, ensure_topics
from ballast_common.testing import InMemoryPublisher


class InMemoryBackend:
    def __init__(self) -> None:
        self.publisher = InMemoryPublisher()

    async def read_back(self, topic: str, count: int) -> list[Message]:
        return self.publisher.on_topic(topic)[:count]


class KafkaBackend:
    def __init__(self, connection: KafkaConnection) -> None:
        self.connection = connection
        self.publisher = KafkaPublisher(connection, client_id="port-test")

    async def read_back(self, topic: str, count: int) -> list[Message]:
        consumer = AIOKafkaConsumer(
            topic,
            **self.connection.client_options(),
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=f"port-test-{uuid.uuid4().hex[:6]}",
        )
        await consumer.start()
        out: list[Message] = []
        try:
            async with asyncio.timeout(30):
                while len(out) < count:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        out += [
                            Message(
                                r.topic,
                                r.key.decode(),
                                r.value,
                                {k: v.decode() for k, v in r.headers},
                            )
                            for r in records
                        ]
        finally:
            await consumer.stop()
        return out


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.integration)])
async def backend(request):
    if request.param == "memory":
        yield InMemoryBackend()
        return
    backend = KafkaBackend(request.getfixturevalue("kafka_connection"))
    await backend.publisher.start()
    yield backend
    await backend.publisher.stop()


async def _topic(backend) -> str:
    topic = f"port-{uuid.uuid4().hex[:8]}"
    if isinstance(backend, KafkaBackend):
        await ensure_topics(backend.connection, [topic], partitions=3)
    return topic


async def test_messages_of_one_key_arrive_in_order_with_headers(backend):
    topic = await _topic(backend)
    sent = [Message(topic, "ACC-1", f"v{i}".encode(), {"traceparent": f"t{i}"}) for i in range(20)]
    await backend.publisher.publish(sent)
    got = await backend.read_back(topic, 20)
    assert [m.value for m in got] == [m.value for m in sent]
    assert [m.headers["traceparent"] for m in got] == [f"t{i}" for i in range(20)]
    assert {m.key for m in got} == {"ACC-1"}


async def test_many_keys_all_arrive(backend):
    topic = await _topic(backend)
    sent = [Message(topic, f"ACC-{i % 7}", str(i).encode()) for i in range(70)]
    await backend.publisher.publish(sent)
    got = await backend.read_back(topic, 70)
    assert sorted(int(m.value) for m in got) == list(range(70))
    for key in {m.key for m in sent}:
        assert [m.value for m in got if m.key == key] == [m.value for m in sent if m.key == key]
