"""The Kafka adapter: an idempotent producer, topic administration, and the publisher port.

Unsafe aiokafka defaults are overridden on purpose: acks=all with idempotence on the
producer; consumers (see consumer.py) commit offsets manually after the database commits.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code
from pydantic import SecretStr

from ballast_common.settings import ServiceSettings

log = logging.getLogger(__name__)

SECURITY_PROTOCOLS = ("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


class KafkaSettingsError(ValueError):
    """Kafka connection settings that cannot work (named in the message)."""


@dataclass(frozen=True)
class KafkaConnection:
    """Where and as whom every Kafka client of a service connects: the one place that
    turns settings into client options (producer, consumers and admin alike)."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: SecretStr = field(default=SecretStr(""), repr=False)

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise KafkaSettingsError(
                f"kafka_security_protocol={self.security_protocol!r} must be one of "
                f"{', '.join(SECURITY_PROTOCOLS)}"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise KafkaSettingsError(
                    f"kafka_sasl_mechanism={self.sasl_mechanism!r} must be one of "
                    f"{', '.join(SASL_MECHANISMS)}"
                )
            if not self.username or not self.password.get_secret_value():
                raise KafkaSettingsError(
                    f"kafka_security_protocol={self.security_protocol} needs kafka_username and "
                    "kafka_password (BALLAST_KAFKA_USERNAME / BALLAST_KAFKA_PASSWORD)"
                )

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> KafkaConnection:
        """The connection a service's settings describe."""
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol.upper(),
            sasl_mechanism=settings.kafka_sasl_mechanism.upper(),
            username=settings.kafka_username,
            password=settings.kafka_password,
        )

    @classmethod
    def of(cls, target: KafkaConnection | str) -> KafkaConnection:
        """A bare bootstrap address means PLAINTEXT without credentials."""
        return target if isinstance(target, KafkaConnection) else cls(target)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password.get_secret_value(),
            )
        if self.security_protocol == "SASL_SSL":
            options["ssl_context"] = ssl.create_default_context()  # the system's CAs
        return options


@dataclass(frozen=True)
class Message:
    topic: str  # full topic name, prefix included
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class Publisher(Protocol):
    """The port the outbox relay publishes through."""

    async def publish(self, messages: Sequence[Message]) -> None:
        """Deliver every message durably, in order per key, or raise."""


class KafkaPublisher:
    """Publisher over a real Kafka broker: idempotent, acks=all, per-key ordering."""

    def __init__(self, connection: KafkaConnection | str, client_id: str) -> None:
        self.connection = KafkaConnection.of(connection)
        self._producer = AIOKafkaProducer(
            **self.connection.client_options(),
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=30000,
            max_batch_size=256 * 1024,
        )
        self.bootstrap_servers = self.connection.bootstrap_servers

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(self, messages: Sequence[Message]) -> None:
        futures = [
            await self._producer.send(
                m.topic,
                m.value,
                key=m.key.encode("utf-8"),
                headers=[(k, v.encode("utf-8")) for k, v in m.headers.items()],
            )
            for m in messages
        ]
        await asyncio.gather(*futures)

    async def check(self) -> None:
        """Raise unless the broker answers a metadata request."""
        await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=5)


async def ensure_topics(
    connection: KafkaConnection | str,
    topics: Iterable[str],
    partitions: int,
    replication: int = 1,
) -> None:
    """Create the topics that do not exist yet.

    Under ACLs a principal may create only the topics it produces or consumes: the others
    are left to the services that own them (a refusal is logged, not raised).
    """
    admin = AIOKafkaAdminClient(**KafkaConnection.of(connection).client_options())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = sorted(set(topics) - existing)
        if not missing:
            return
        response = await admin.create_topics(
            [
                NewTopic(t, num_partitions=partitions, replication_factor=replication)
                for t in missing
            ]
        )
        created, refused = [], []
        for name, code, *_ in response.topic_errors:
            if code == TopicAuthorizationFailedError.errno:
                refused.append(name)
            elif code == 0:
                created.append(name)
            # Another service may create the same topic at the same moment: that is fine.
            elif code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"creating topic {name}: error code {code}")
        if created:
            log.info("created topics", extra={"topics": created})
        if refused:
            log.info("topics left to their owners (no Create ACL)", extra={"topics": refused})
    finally:
        await admin.close()
