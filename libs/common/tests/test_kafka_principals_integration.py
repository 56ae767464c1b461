"""Principals on the real broker: a service writes only its own topics, and the anonymous
listener reads but never writes (the forged-fill attack of issue 10 is refused)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from ballast_common.bus import KafkaConnection, ensure_topics
from ballast_common.kafka_acls import acls_for
from pydantic import SecretStr

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
FILLS = "fills-received"


@pytest.fixture(scope="session")
def acl_prefix(topic_prefix: str, stack_env: dict[str, str], kafka_connection) -> str:
    """A prefix of its own, with the generated ACLs applied by the stack's admin."""
    if kafka_connection.security_protocol == "PLAINTEXT":
        pytest.fail("the stack's env has no SASL settings: is scripts/stack.py up to date?")
    prefix = f"{topic_prefix}acl{uuid.uuid4().hex[:4]}."
    lines = "".join(a.line() + "\n" for a in acls_for(prefix))
    applied = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "stack.py"), "acls"],
        input=lines,
        env=os.environ | stack_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    return prefix


@pytest.fixture(scope="session")
def credentials(stack_env: dict[str, str]) -> dict[str, str]:
    path = Path(stack_env["BALLAST_STATE_DIR"]) / "kafka" / "credentials.json"
    return json.loads(path.read_text())


def _as(service: str, credentials: dict[str, str], admin: KafkaConnection) -> KafkaConnection:
    return KafkaConnection(
        admin.bootstrap_servers,
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        service,
        SecretStr(credentials[service]),
    )


@pytest.fixture
async def fills_topic(acl_prefix: str, kafka_connection: KafkaConnection) -> AsyncIterator[str]:
    topic = acl_prefix + FILLS
    await ensure_topics(kafka_connection, [topic], partitions=1)
    yield topic


async def _produce(connection_options: dict, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**connection_options, acks="all", request_timeout_ms=10000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"ACC-FORGED")
    finally:
        await producer.stop()


async def _read_all(connection_options: dict, topic: str, group: str, until: bytes) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, **connection_options, group_id=group, auto_offset_reset="earliest"
    )
    values: list[bytes] = []
    try:
        await consumer.start()  # a refused group may fail here already
        async with asyncio.timeout(30):
            while until not in values:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values += [r.value for r in records]
    finally:
        await consumer.stop()
    return values


async def test_the_gateway_produces_fills_and_reporting_cannot(
    fills_topic: str, credentials: dict[str, str], kafka_connection: KafkaConnection
):
    gateway = _as("custodian-gateway", credentials, kafka_connection)
    real = f"real fill {uuid.uuid4().hex}".encode()
    await _produce(gateway.client_options(), fills_topic, real)

    reporting = _as("reporting-svc", credentials, kafka_connection)
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(reporting.client_options(), fills_topic, b"forged by reporting-svc")
    # reporting-svc still reads the fills, in its own consumer group
    group = fills_topic.removesuffix(FILLS) + "reporting-svc"
    assert real in await _read_all(reporting.client_options(), fills_topic, group, real)


async def test_the_anonymous_listener_reads_but_a_forged_fill_is_refused(
    fills_topic: str,
    credentials: dict[str, str],
    kafka_connection: KafkaConnection,
    stack_env: dict[str, str],
):
    observer = {"bootstrap_servers": stack_env["BALLAST_KAFKA_OBSERVER_BOOTSTRAP"]}
    with pytest.raises(TopicAuthorizationFailedError):
        await _produce(observer, fills_topic, b'{"type": "fills-received", "forged": true}')

    real = f"observed fill {uuid.uuid4().hex}".encode()
    await _produce(
        _as("custodian-gateway", credentials, kafka_connection).client_options(), fills_topic, real
    )
    seen = await _read_all(observer, fills_topic, f"observer-{uuid.uuid4().hex[:6]}", real)
    assert real in seen
    assert not [v for v in seen if b"forged" in v]


async def test_the_anonymous_listener_cannot_join_a_services_group(
    fills_topic: str, stack_env: dict[str, str]
):
    observer = {"bootstrap_servers": stack_env["BALLAST_KAFKA_OBSERVER_BOOTSTRAP"]}
    group = fills_topic.removesuffix(FILLS) + "taxlot-svc"
    with pytest.raises(GroupAuthorizationFailedError):
        await _read_all(observer, fills_topic, group, b"never")


async def test_a_service_cannot_create_a_topic_it_does_not_touch(
    acl_prefix: str, credentials: dict[str, str], kafka_connection: KafkaConnection
):
    topic = (
        acl_prefix + "drift-detected"
    )  # rebalance-svc's; account-svc neither writes nor reads it
    await ensure_topics(_as("account-svc", credentials, kafka_connection), [topic], partitions=1)
    admin_view = AIOKafkaConsumer(**kafka_connection.client_options())
    await admin_view.start()
    try:
        assert topic not in await admin_view.topics()
    finally:
        await admin_view.stop()
