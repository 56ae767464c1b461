"""Webhooks out, end to end on the real broker and database: reporting-svc runs (its
consumers and its webhook dispatcher, as the app starts them), events are published to
Kafka, and a real HTTP receiver (uvicorn on 127.0.0.1) gets the deliveries and verifies
them with the Standard Webhooks library. Subscriptions are made through the REST API."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pydantic_core
import pytest
import uvicorn
from ballast_common.app import Runtime
from ballast_common.bus import KafkaConnection, KafkaPublisher, Message
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import bearer, envelope, example, with_test_issuer
from reporting_svc.main import spec
from reporting_svc.settings import Settings
from sqlalchemy import text
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from webhook_support import (
    ACME,
    EVIL,
    admin_api,
    deliveries,
    model_changed,
    path,
    subscribe,
    until,
)

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3


# --- a real receiver ----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records every request; a path's planned answers
    are given in order (200 once they run out)."""

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    plans: dict[str, list[int]] = field(default_factory=dict)
    holds: dict[str, asyncio.Event] = field(default_factory=dict)  # answer once set

    def url(self, path: str, *answers: int) -> str:
        self.plans[path] = list(answers)
        return self.base_url + path

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body))
        if scope["path"] in self.holds:
            await self.holds[scope["path"]].wait()
        plan = self.plans.get(scope["path"], [])
        status = plan.pop(0) if plan else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = Receiver(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    await until(lambda: server.started, "the receiver to start")
    yield app
    for hold in app.holds.values():
        hold.set()
    server.should_exit = True
    await serving
    sock.close()


# --- reporting-svc running on the real broker ---------------------------------------------------


def _settings(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> Settings:
    settings = Settings(
        database_url=database_url,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        topic_partitions=2,
        webhook_retry_base_s=0.05,
        webhook_max_attempts=MAX_ATTEMPTS,
        webhook_timeout_s=60.0,  # longer than any wait here: a hung receiver stays hung
        webhook_poll_interval_s=120.0,
        webhook_allow_private_destinations=True,  # the receiver listens on 127.0.0.1
    )
    checked = with_test_issuer(settings)
    assert isinstance(checked, Settings)
    return checked


@dataclass
class Service:
    runtime: Runtime
    publisher: KafkaPublisher
    prefix: str

    async def publish(self, *events: Envelope) -> None:
        await self.publisher.publish(
            [Message(self.prefix + e.type, e.key, e.to_bytes(), {}) for e in events]
        )


@pytest.fixture(scope="module")
async def service(
    db: Database, database_url: str, kafka_bootstrap: str, topic_prefix: str
) -> AsyncIterator[Service]:
    settings = _settings(database_url, kafka_bootstrap, topic_prefix)
    runtime = Runtime(spec, settings)
    await runtime.start()
    publisher = KafkaPublisher(KafkaConnection.from_settings(settings), client_id="webhook-test")
    await publisher.start()
    try:
        await until(
            lambda: all(c.assigned.is_set() for c in runtime.consumers), "the consumers to join"
        )
        yield Service(runtime, publisher, topic_prefix)
    finally:
        await publisher.stop()
        await runtime.stop()


@pytest.fixture(scope="module")
async def admin(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_api(db) as client:
        yield client


# --- delivery ---------------------------------------------------------------------------------


async def test_a_sponsor_receives_a_signed_webhook_and_verifies_it(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    where = path()
    subscription = await subscribe(admin, receiver.url(where), ["model-changed"])
    assert subscription["secret"].startswith("whsec_")
    event = model_changed(ACME)
    await service.publish(event)
    await until(lambda: bool(receiver.at(where)), "the webhook")

    [got] = receiver.at(where)
    body = Webhook(subscription["secret"]).verify(got.body, got.headers)
    assert got.headers["webhook-id"] == str(event.id)
    assert body["type"] == "model-changed" and body["version"] == event.version
    assert datetime.fromisoformat(body["timestamp"]) == event.time
    assert body["data"]["model_id"] == event.payload["model_id"]
    assert body["data"] == json.loads(json.dumps(event.payload))
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "A" * 43).verify(got.body, got.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(subscription["secret"]).verify(got.body + b" ", got.headers)

    async def logged() -> bool:
        return [d["status"] for d in await deliveries(admin, subscription)] == ["delivered"]

    await until(logged, "the delivery to be logged as delivered")
    [delivery] = await deliveries(admin, subscription)
    assert delivery["webhook_id"] == str(event.id) and delivery["attempts"] == 1
    assert [a["status_code"] for a in delivery["attempt_log"]] == [200]
    assert "secret" not in (await admin.get(f"/webhooks/{subscription['id']}")).json()


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    where = path()
    subscription = await subscribe(admin, receiver.url(where, 500, 500, 200), ["model-changed"])
    event = model_changed(ACME)
    await service.publish(event)

    async def delivered() -> bool:
        found = await deliveries(admin, subscription)
        return bool(found) and found[0]["status"] == "delivered"

    await until(delivered, "the third attempt to deliver")
    [delivery] = await deliveries(admin, subscription)
    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert [a["error"] for a in log] == ["HTTP 500", "HTTP 500", None]
    got = receiver.at(where)
    assert [r.headers["webhook-id"] for r in got] == [str(event.id)] * 3
    for request in got:
        Webhook(subscription["secret"]).verify(request.body, request.headers)
    gaps = [
        (datetime.fromisoformat(b["attempted_at"]) - datetime.fromisoformat(a["attempted_at"]))
        for a, b in itertools.pairwise(log)
    ]
    # the schedule: 0.05 s then 0.1 s (+-20%), not the 120 s poll
    assert timedelta(seconds=0.04) <= gaps[0] < timedelta(seconds=10)
    assert timedelta(seconds=0.08) <= gaps[1] < timedelta(seconds=10)


async def test_a_delivery_fails_after_its_attempts_and_is_redelivered_with_its_id(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    where = path()
    url = receiver.url(where, *[503] * MAX_ATTEMPTS)
    subscription = await subscribe(admin, url, ["model-changed"])
    event = model_changed(ACME)
    await service.publish(event)

    async def status_is(wanted: str) -> bool:
        found = await deliveries(admin, subscription)
        return bool(found) and found[0]["status"] == wanted

    await until(lambda: status_is("failed"), "the delivery to fail")
    [failed] = await deliveries(admin, subscription)
    assert failed["attempts"] == MAX_ATTEMPTS and failed["next_attempt_at"] is None

    stranger = await admin.post(
        f"/webhook-deliveries/{failed['id']}/redeliver", headers=bearer(EVIL)
    )
    assert stranger.status_code == 404
    again = await admin.post(f"/webhook-deliveries/{failed['id']}/redeliver")
    assert again.status_code == 200, again.text
    assert again.json()["status"] in ("pending", "delivered")
    await until(lambda: status_is("delivered"), "the redelivery")
    got = receiver.at(where)
    assert [r.headers["webhook-id"] for r in got] == [str(event.id)] * (MAX_ATTEMPTS + 1)
    Webhook(subscription["secret"]).verify(got[-1].body, got[-1].headers)

    # a delivered one is sent again too, with the same id
    assert (await admin.post(f"/webhook-deliveries/{failed['id']}/redeliver")).status_code == 200
    await until(lambda: len(receiver.at(where)) == MAX_ATTEMPTS + 2, "the second redelivery")
    assert receiver.at(where)[-1].headers["webhook-id"] == str(event.id)
    await until(lambda: status_is("delivered"), "the second redelivery to be logged")
    [delivery] = await deliveries(admin, subscription)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [503] * MAX_ATTEMPTS + [200] * 2


async def test_a_receiver_that_does_not_answer_holds_up_no_other(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    stuck, quick = path(), path()
    receiver.holds[stuck] = asyncio.Event()
    await subscribe(admin, receiver.url(stuck), ["model-changed"], tenant=EVIL)
    await subscribe(admin, receiver.url(quick), ["model-changed"], tenant=ACME)
    try:
        await service.publish(model_changed(EVIL))
        await until(lambda: bool(receiver.at(stuck)), "the stuck receiver's request")
        ours = model_changed(ACME)
        await service.publish(ours)
        await until(lambda: bool(receiver.at(quick)), "a webhook while the other one hangs")
        assert receiver.at(quick)[0].headers["webhook-id"] == str(ours.id)
    finally:
        receiver.holds[stuck].set()


async def test_after_rotation_both_secrets_verify_for_the_grace_period(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    where = path()
    subscription = await subscribe(admin, receiver.url(where), ["model-changed"])
    rotated = await admin.post(f"/webhooks/{subscription['id']}/secret:rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != subscription["secret"]
    expires = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    shown = (await admin.get(f"/webhooks/{subscription['id']}")).json()
    assert datetime.fromisoformat(shown["previous_secret_expires_at"]) == expires

    event = model_changed(ACME)
    await service.publish(event)
    await until(lambda: bool(receiver.at(where)), "the webhook")
    [got] = receiver.at(where)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (subscription["secret"], new_secret):
        assert (
            Webhook(secret).verify(got.body, got.headers)["data"]["model_id"]
            == (event.payload["model_id"])
        )

    # once the grace period is over, only the new secret signs
    async with service.runtime.db.sessions() as session, session.begin():
        await session.execute(
            text(
                "UPDATE webhook_subscriptions SET previous_secret_until = now()"
                " - interval '1 second' WHERE id = :id"
            ),
            {"id": subscription["id"]},
        )
    await service.publish(model_changed(ACME))
    await until(lambda: len(receiver.at(where)) == 2, "the second webhook")
    late = receiver.at(where)[1]
    assert len(late.headers["webhook-signature"].split(" ")) == 1
    Webhook(new_secret).verify(late.body, late.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(subscription["secret"]).verify(late.body, late.headers)


async def test_another_tenants_event_never_reaches_the_subscription(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    ours, theirs = path(), path()
    await subscribe(admin, receiver.url(ours), ["model-changed"], tenant=ACME)
    await subscribe(admin, receiver.url(theirs), ["model-changed"], tenant=EVIL)
    their_event, our_event = model_changed(EVIL), model_changed(ACME)
    await service.publish(their_event, our_event)
    await until(
        lambda: bool(receiver.at(ours)) and bool(receiver.at(theirs)), "both tenants' webhooks"
    )
    assert [r.headers["webhook-id"] for r in receiver.at(ours)] == [str(our_event.id)]
    assert [r.headers["webhook-id"] for r in receiver.at(theirs)] == [str(their_event.id)]


async def test_only_the_subscribed_event_types_are_sent(
    db: Database, service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    where = path()
    subscription = await subscribe(admin, receiver.url(where), ["account-changed"])
    account = f"ACC-{uuid.uuid4().hex[:10]}"
    model_first = model_changed(ACME)
    account_then = envelope(
        example("account-changed", account_id=account), key=account, tenant=ACME
    )
    await service.publish(model_first, account_then)
    await until(lambda: bool(receiver.at(where)), "the account-changed webhook")
    assert [r.headers["webhook-id"] for r in receiver.at(where)] == [str(account_then.id)]
    assert [d["event_type"] for d in await deliveries(admin, subscription)] == ["account-changed"]


async def test_the_data_is_the_payload_as_published_byte_for_byte(
    service: Service, receiver: Receiver, admin: httpx.AsyncClient
) -> None:
    """reporting decodes drift-detected and holdings-reconciled into views of what it stores;
    their webhooks still carry the whole payload exactly as the publisher wrote it (here with
    spaces a serializer of the decoded payload would not write)."""
    where = path()
    subscription = await subscribe(
        admin, receiver.url(where), ["drift-detected", "holdings-reconciled"]
    )
    account = f"ACC-{uuid.uuid4().hex[:10]}"
    events = [
        envelope(example("drift-detected", account_id=account), key=account, tenant=ACME),
        envelope(
            example("holdings-reconciled", contract_version=2, account_id=account),
            key=account,
            tenant=ACME,
        ),
    ]
    written = {e.id: json.dumps(e.payload, separators=(", ", ": ")) for e in events}
    messages = []
    for e in events:
        compact = b'"payload":' + pydantic_core.to_json(e.payload)
        assert compact in e.to_bytes()
        value = e.to_bytes().replace(compact, b'"payload": ' + written[e.id].encode())
        messages.append(Message(service.prefix + e.type, e.key, value, {}))
    await service.publisher.publish(messages)
    await until(lambda: len(receiver.at(where)) == 2, "both webhooks")

    for got in receiver.at(where):
        body = Webhook(subscription["secret"]).verify(got.body, got.headers)
        sent = written[uuid.UUID(got.headers["webhook-id"])]
        assert got.body.endswith(b',"data":' + sent.encode() + b"}"), body["type"]
    data_by_id = {r.headers["webhook-id"]: json.loads(r.body)["data"] for r in receiver.at(where)}
    assert data_by_id[str(events[0].id)]["securities"] == events[0].payload["securities"]
    assert (
        data_by_id[str(events[1].id)]["recent_loss_sales"] == events[1].payload["recent_loss_sales"]
    )
