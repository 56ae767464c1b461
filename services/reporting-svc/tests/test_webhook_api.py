"""reporting-svc's webhook API on real PostgreSQL, without the dispatcher (so what is
queued stays pending): validation, tenants and roles, the set-based queuing of a consumer
batch, redelivery rules, and the pure rules (retry schedule, URLs, event types)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pydantic_core
import pytest
from ballast_common.auth import Role
from ballast_common.consumer import Delivery
from ballast_common.contracts.registry import contract_for
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, envelope, example
from reporting_events import deliver
from reporting_svc import repository as repo
from reporting_svc.handlers import SUBSCRIPTIONS
from reporting_svc.main import spec
from reporting_svc.webhooks import (
    EVENT_TYPES,
    RetryPolicy,
    address_refusal,
    check_url,
    destination_refusal,
    outcome_of,
    published_payload,
    webhook_body,
)
from sqlalchemy import text
from webhook_support import ACME, EVIL, admin_api, deliveries, model_changed, subscribe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def admin(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_api(db) as client:
        yield client


# --- a consumer batch queues its deliveries in one statement ----------------------------------


async def test_a_batch_queues_one_delivery_per_event_and_matching_subscription(
    db: Database, admin: httpx.AsyncClient
) -> None:
    """Through the consumer scaffold, without the dispatcher: a batch of two tenants' events
    gives each subscription of the event's tenant and type one pending delivery, once."""
    unreachable = "http://127.0.0.1:9/never"  # not sent: nothing dispatches here
    first = await subscribe(admin, unreachable, ["drift-detected", "model-changed"], "batchco")
    second = await subscribe(admin, unreachable, ["model-changed"], "batchco")
    drift_only = await subscribe(admin, unreachable, ["drift-detected"], "batchco")
    other = await subscribe(admin, unreachable, ["model-changed"], "otherco")
    events = [model_changed("batchco") for _ in range(20)] + [
        model_changed("otherco") for _ in range(5)
    ]
    random.Random(7).shuffle(events)
    await deliver(db, *events)
    await deliver(db, *events[:3])  # delivered again (no inbox here): nothing queued twice
    counts = {}
    for sub, tenant in ((first, "batchco"), (second, "batchco"), (drift_only, "batchco"),
                        (other, "otherco")):  # fmt: skip
        found = await deliveries(admin, sub, tenant)
        counts[sub["id"]] = len(found)
        assert all(d["status"] == "pending" for d in found)
    assert counts == {first["id"]: 20, second["id"]: 20, drift_only["id"]: 0, other["id"]: 5}
    async with db.sessions() as session:
        ids = {
            str(m)
            for (m,) in await session.execute(
                text("SELECT message_id FROM webhook_deliveries WHERE subscription_id = :s"),
                {"s": first["id"]},
            )
        }
    assert ids == {str(e.id) for e in events if e.tenant == "batchco"}
    # deleting a subscription cancels what it had pending
    assert (
        await admin.delete(f"/webhooks/{first['id']}", headers=bearer("batchco"))
    ).status_code == 204
    async with db.sessions() as session:
        statuses = {
            s
            for (s,) in await session.execute(
                text("SELECT DISTINCT status FROM webhook_deliveries WHERE subscription_id = :s"),
                {"s": first["id"]},
            )
        }
        assert statuses == {"cancelled"}
        assert await repo.tenants_subscribed(session, "model-changed", ["batchco"]) == {"batchco"}


# --- the API: validation, tenants, roles ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("https://user:pass@example.com/hook", "credentials"),
        ("https://token@example.com/hook", "credentials"),
        ("https:///hook", "no host"),
        ("not a url", "a URL has no spaces"),
        ("https://example.com/hook#part", "fragment"),
        ("https://example.com:99999/hook", "not a valid URL"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
    ],
)
async def test_a_bad_url_is_422_naming_the_url(
    admin: httpx.AsyncClient, url: str, says: str
) -> None:
    response = await admin.post("/webhooks", json={"url": url, "event_types": ["model-changed"]})
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert [e["field"] for e in errors] == ["url"]
    assert says in errors[0]["message"]


async def test_unknown_event_types_and_fields_are_422_naming_them(
    admin: httpx.AsyncClient,
) -> None:
    url = "https://example.com/hook"
    for types, field_name in (
        (["model-changed", "securities-changed"], "event_types[1]"),
        (["no-such-event"], "event_types[0]"),
    ):
        response = await admin.post("/webhooks", json={"url": url, "event_types": types})
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == [field_name]
    empty = await admin.post("/webhooks", json={"url": url, "event_types": []})
    assert [e["field"] for e in empty.json()["errors"]] == ["event_types"]
    extra = await admin.post(
        "/webhooks", json={"url": url, "event_types": ["model-changed"], "tenant": EVIL}
    )
    assert [e["field"] for e in extra.json()["errors"]] == ["tenant"]


async def test_another_tenants_subscription_answers_404_and_is_not_listed(
    admin: httpx.AsyncClient,
) -> None:
    mine = await subscribe(admin, "https://example.com/hook", ["drift-detected"], ACME)
    theirs = bearer(EVIL)
    base = f"/webhooks/{mine['id']}"
    for method, route in (
        ("GET", base),
        ("GET", f"{base}/deliveries"),
        ("POST", f"{base}/secret:rotate"),
        ("DELETE", base),
        ("POST", f"/webhook-deliveries/{uuid.uuid4()}/redeliver"),
    ):
        answer = await admin.request(method, route, headers=theirs)
        assert answer.status_code == 404, (method, route, answer.text)
    listed = (await admin.get("/webhooks?limit=500", headers=theirs)).json()["items"]
    assert mine["id"] not in {s["id"] for s in listed}
    assert mine["id"] in {s["id"] for s in (await admin.get("/webhooks?limit=500")).json()["items"]}
    # still there for its own tenant, until deleted
    assert (await admin.get(base)).status_code == 200
    assert (await admin.delete(base)).status_code == 204
    assert (await admin.get(base)).status_code == 404
    assert (await admin.delete(base)).status_code == 404


async def test_readers_read_and_only_admins_manage(admin: httpx.AsyncClient) -> None:
    sub = await subscribe(admin, "https://example.com/hook", ["fills-received"], ACME)
    sponsor = bearer(ACME, [Role.SPONSOR])
    assert (await admin.get(f"/webhooks/{sub['id']}", headers=sponsor)).status_code == 200
    assert (await admin.get("/webhooks", headers=sponsor)).status_code == 200
    refused = await admin.post(
        "/webhooks",
        json={"url": "https://example.com/x", "event_types": ["fills-received"]},
        headers=sponsor,
    )
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    rotate = await admin.post(f"/webhooks/{sub['id']}/secret:rotate", headers=sponsor)
    assert rotate.status_code == 403


async def test_a_pending_delivery_is_not_redelivered(
    db: Database, admin: httpx.AsyncClient
) -> None:
    sub = await subscribe(admin, "http://127.0.0.1:9/never", ["model-changed"], "pendingco")
    await deliver(db, model_changed("pendingco"))
    [pending] = await deliveries(admin, sub, "pendingco")
    answer = await admin.post(
        f"/webhook-deliveries/{pending['id']}/redeliver", headers=bearer("pendingco")
    )
    assert answer.status_code == 409 and "pending" in answer.json()["detail"]


# --- rules ------------------------------------------------------------------------------------


def test_the_retry_schedule_doubles_within_its_jitter_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=30, cap_s=6 * 3600, jitter=0.2, max_attempts=12)
    rand = random.Random(1)
    for attempts in range(1, 12):
        nominal = min(6 * 3600, 30 * 2 ** (attempts - 1))
        for _ in range(50):
            assert nominal * 0.8 <= policy.delay(attempts, rand) <= nominal * 1.2
    now = datetime.now(UTC)
    assert outcome_of(uuid.uuid4(), 1, 204, None, now, 5, policy).status == "delivered"
    retry = outcome_of(uuid.uuid4(), 11, 500, "HTTP 500", now, 5, policy)
    assert retry.status == "pending" and retry.next_attempt_at is not None
    assert outcome_of(uuid.uuid4(), 12, 500, "HTTP 500", now, 5, policy).status == "failed"
    assert outcome_of(uuid.uuid4(), 2, None, "ConnectError", now, 5, policy).status == "pending"
    assert outcome_of(uuid.uuid4(), 2, 302, "HTTP 302", now, 5, policy).status == "pending"


async def test_a_destination_on_the_platforms_own_network_is_refused(db: Database) -> None:
    internal = (
        "http://169.254.169.254/latest/meta-data",  # a cloud's metadata service
        "http://10.1.2.3/hook",
        "https://127.0.0.1:8443/hook",
        "http://[::1]/x",
        "http://[::ffff:192.168.0.1]/x",
    )
    async with api_client(spec, db, tenant=ACME, roles=[Role.ADMIN]) as admin:
        for url in internal:
            body = {"url": url, "event_types": ["model-changed"]}
            refused = await admin.post("/webhooks", json=body)
            assert refused.status_code == 422, (url, refused.text)
            [problem] = refused.json()["errors"]
            assert problem["field"] == "url" and "not a public address" in problem["message"]
        named = {"url": "https://hooks.example.com/ballast", "event_types": ["model-changed"]}
        assert (await admin.post("/webhooks", json=named)).status_code == 201
    # a name is resolved before each delivery: one that points inside is refused then
    assert "resolves to 127.0.0.1" in (await destination_refusal("http://localhost:9/x") or "")
    assert await destination_refusal("https://93.184.215.14/hook") is None
    assert address_refusal("8.8.8.8") is None and address_refusal("100.64.0.1") is not None


def test_urls_that_can_be_sent_to() -> None:
    for url in ("https://example.com/a?b=c", "http://127.0.0.1:8080/hook", "https://[::1]/x"):
        assert check_url(url) == url


def test_the_body_is_the_event_for_every_type() -> None:
    """Each subscribable event of every contract version, decoded as the consumer decodes it
    (into reporting's view where it has one), gives a body whose data is the payload as
    published, byte for byte."""
    by_topic = {s.event_type: s for s in SUBSCRIPTIONS}
    for event_type in EVENT_TYPES:
        version = 1
        while contract_for(event_type, version) is not None:
            event = envelope(example(event_type, contract_version=version), tenant=ACME)
            message = event.to_bytes()
            published = pydantic_core.to_json(event.payload)
            assert b'"payload":' + published + b"}" in message  # what the publisher wrote
            decoded = Delivery(*by_topic[event_type].decode(message), message)
            body = webhook_body(decoded).encode()
            assert body.endswith(b',"data":' + published + b"}"), (event_type, version)
            parsed = json.loads(body)
            assert (parsed["type"], parsed["version"]) == (event_type, version)
            assert datetime.fromisoformat(parsed["timestamp"]) == event.time
            version += 1
    # what reporting does not read of them is sent all the same
    for event_type, version, unread in (
        ("drift-detected", 1, "securities"),
        ("holdings-reconciled", 2, "recent_loss_sales"),
    ):
        event = envelope(example(event_type, contract_version=version), tenant=ACME)
        decoded = Delivery(*by_topic[event_type].decode(event.to_bytes()), event.to_bytes())
        assert not hasattr(decoded.payload, unread)
        assert event.payload[unread]
        assert json.loads(webhook_body(decoded))["data"][unread] == event.payload[unread]


def test_the_data_is_the_payload_as_written_whatever_the_messages_layout() -> None:
    """Spaces, key order, escapes and a payload that is not the envelope's last field are
    kept as the publisher wrote them; a message without a payload is refused."""
    payload = '{ "account_id" : "ACC-\u00e9 1",\n "cash":"10.50", "nested": {"payload": [1, {}]} }'
    message = (
        '\n{"payload": {"stale": true}, "type" : "x", "payload":' + payload + ' ,\t"version": 1,'
        ' "key": "a\\"payload\\"", "tags": [{"payload": 1}], "n": -1.5e3, "t": null}  '
    )
    assert published_payload(message.encode()) == payload
    assert published_payload('{"a":"é","payload":{"b":"ü"}}'.encode()) == '{"b":"ü"}'
    for broken in (b'{"type": "x"}', b"[1]", b'{"payload" 1}'):
        with pytest.raises(ValueError):
            published_payload(broken)


def test_the_event_types_are_topics_reporting_consumes() -> None:
    consumed = {s.event_type for s in spec.subscriptions}
    assert set(EVENT_TYPES) <= consumed
    assert "securities-changed" not in EVENT_TYPES  # the platform's, no tenant's
