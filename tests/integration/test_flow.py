"""Issue #2's proof: a model change flows through all six services on real Kafka and Postgres.

One book is loaded and one model is changed (module fixture); each test then checks one
promise, only through public REST APIs (and the broker, for the delivery tests)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from ballast_common.contracts.envelope import decode_envelope
from ballast_common.contracts.registry import TOPICS
from ballast_common.testing import bearer, issuer_for_tests
from ballast_demo.book import MODELS, SECURITIES, build_accounts, changed_core_model
from ballast_demo.driver import Ballast, Urls

pytestmark = pytest.mark.integration

SIX_SERVICES = {
    "account-svc",
    "model-hub-svc",
    "rebalance-svc",
    "taxlot-svc",
    "custodian-gateway",
    "reporting-svc",
}
BOOK = build_accounts(24, seed=11)
CHANGE = changed_core_model()


@pytest.fixture(scope="module")
async def flow(
    running_services: Urls,
    kafka_client_options: dict,
    system_topic_prefix: str,
    tmp_path_factory: pytest.TempPathFactory,
):
    """Load the book, put a malformed message on a consumed topic, change the model, and
    wait until every trade is filled and reconciled."""
    ballast = Ballast(running_services, issuer_for_tests())
    await ballast.load_securities()
    for model in MODELS:
        await ballast.publish_model(model)
    await ballast.load_book(BOOK, tmp_path_factory.mktemp("books"))
    await ballast.wait_until_known(len(BOOK), len(SECURITIES), timeout_s=120)
    producer = AIOKafkaProducer(**kafka_client_options, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            f"{system_topic_prefix}fills-received", b'{"type": "oops"', key=b"ACC-BROKEN"
        )
    finally:
        await producer.stop()
    before = await _order_counts(running_services)
    published = await ballast.publish_model(CHANGE)
    run = await ballast.wait_for_run(CHANGE.model_id, published["version"], timeout_s=120)
    progress = await ballast.wait_until_complete(run, timeout_s=300)
    yield {
        "ballast": ballast,
        "published": published,
        "run": run,
        "progress": progress,
        "before": before,
    }
    await ballast.close()


async def _order_counts(urls: Urls) -> dict:
    """What the custodian and the gateway counted so far, and the orders they know: other
    tests of this system trade too, so the flow's own orders are what came after."""
    async with httpx.AsyncClient(headers=bearer()) as http:
        stats = (await http.get(f"{urls.custodian}/stats")).json()
        gateway = (await http.get(f"{urls.gateway}/stats")).json()
        orders: list[dict] = []
        offset: int | None = 0
        while offset is not None:
            page = (
                await http.get(f"{urls.gateway}/orders", params={"limit": 500, "offset": offset})
            ).json()
            orders += page["items"]
            offset = page["next_offset"]
    return {"custodian": stats, "gateway": gateway, "orders": orders}


async def test_holdings_end_at_the_model_weights(flow, running_services: Urls):
    """Each security's weight is within its range (0.5%, rebalance-svc's security tolerance)
    plus one share's value (whole shares) and 0.1% (cash left over) of its target."""
    prices = {s: Decimal(v[3]) for s, v in SECURITIES.items()}
    following = [a for a in BOOK if a.model_id == CHANGE.model_id]
    assert following and flow["run"]["accounts_evaluated"] == len(following)
    async with httpx.AsyncClient(headers=bearer()) as http:
        for account in following:
            book = (
                await http.get(f"{running_services.taxlot}/accounts/{account.account_id}/holdings")
            ).json()
            held = {
                p["symbol"]: Decimal(p["quantity"])
                for p in book["positions"]
                if Decimal(p["quantity"]) != 0
            }
            total = Decimal(book["cash"]) + sum(q * prices[s] for s, q in held.items())
            assert Decimal(book["cash"]) >= 0
            for symbol in set(held) | set(CHANGE.weights):
                weight = held.get(symbol, Decimal(0)) * prices[symbol] / total
                target = CHANGE.weights.get(symbol, Decimal(0))
                allowed = Decimal("0.005") + prices[symbol] / total + Decimal("0.001")
                assert abs(weight - target) <= allowed, (
                    f"{account.account_id} {symbol}: weight {weight:.4%} vs target {target:.2%}"
                )
            assert "PFE" not in held and "CSCO" not in held


async def test_accounts_the_change_does_not_touch_keep_what_was_loaded(
    flow, running_services: Urls
):
    untouched = [a for a in BOOK if a.model_id != CHANGE.model_id]
    assert untouched
    async with httpx.AsyncClient(headers=bearer()) as http:
        for account in untouched:
            book = (
                await http.get(f"{running_services.taxlot}/accounts/{account.account_id}/holdings")
            ).json()
            held = {p["symbol"]: Decimal(p["quantity"]) for p in book["positions"]}
            assert held == account.positions, account.account_id
            assert Decimal(book["cash"]) == account.cash, account.account_id


async def test_every_order_was_sent_exactly_once(flow, running_services: Urls):
    trades = flow["run"]["trades"]
    assert trades > 0
    before, after = flow["before"], await _order_counts(running_services)
    known = {o["client_order_id"] for o in before["orders"]}
    orders = [o for o in after["orders"] if o["client_order_id"] not in known]

    def grew(source: str, *path: str) -> int:
        now, then = after[source], before[source]
        for key in path:
            now, then = now.get(key, 0), then.get(key, 0)
        return int(now) - int(then)

    # the approved trades went out as block orders (one per security and side per gathering);
    # the custodian received each block once, and executed it once
    received = grew("custodian", "orders_received")
    assert 0 < received <= trades
    assert received == len(orders) == grew("gateway", "blocks", "total")
    assert after["custodian"]["duplicate_submissions"] == 0
    assert set(after["custodian"]["orders_by_times_submitted"]) == {"1"}
    # each block sent once, filled exactly, and shared among exactly the trades
    assert len({o["client_order_id"] for o in orders}) == len(orders)
    assert {o["times_sent"] for o in orders} == {1}
    assert after["gateway"]["blocks"]["sent_more_than_once"] == 0
    assert all(o["status"] == "filled" and o["filled_quantity"] == o["quantity"] for o in orders)
    assert sum(o["allocation_count"] for o in orders) == trades
    assert grew("gateway", "allocations", "total") == trades
    assert grew("gateway", "allocations", "by_status", "filled") == trades
    assert flow["progress"]["trades_filled"] == trades


async def test_one_trace_links_all_six_services(flow, trace_file: Path):
    deadline = time.monotonic() + 20
    while True:
        text = await asyncio.to_thread(trace_file.read_text)
        spans = [json.loads(line) for line in text.splitlines() if line]
        change_spans = [
            s
            for s in spans
            if s["service"] == "model-hub-svc"
            and s["name"].startswith("PUT /models/")
            and s["kind"] == "SERVER"
        ]
        assert change_spans, "no span for the model change request"
        trace_id = change_spans[-1]["trace_id"]
        services = {s["service"] for s in spans if s["trace_id"] == trace_id}
        if services >= SIX_SERVICES or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert services >= SIX_SERVICES, f"trace {trace_id} reached only {sorted(services)}"


# Each event of a model change's run follows from an event of this type (its causation_id).
FOLLOWS_FROM = {
    "rebalance-chunk-requested": "model-changed",
    "rebalance-chunk-completed": "rebalance-chunk-requested",
    "drift-detected": "rebalance-chunk-requested",
    "trades-proposed": "rebalance-chunk-requested",
    "trades-approved": "trades-proposed",
    "fills-received": "trades-approved",
    "order-rejected": "trades-approved",
    "holdings-reconciled": "fills-received",
}


async def test_every_event_of_the_run_walks_back_to_the_model_change_in_its_trace(
    flow, kafka_client_options: dict, system_topic_prefix: str, trace_file: Path
):
    """From the model change to the last holdings reconciled: each event names the event it
    follows from, back to the model-changed event, and all are in that event's trace (the
    fills the gateway shares from its block orders and the snapshots taxlot-svc publishes
    from its loop included)."""
    events = await _events_on(
        kafka_client_options, [system_topic_prefix + t for t in {*FOLLOWS_FROM, "model-changed"}]
    )
    run, published = flow["run"], flow["published"]
    [change] = [
        e
        for e in events.values()
        if e["type"] == "model-changed"
        and (e["payload"]["model_id"], e["payload"]["version"])
        == (CHANGE.model_id, published["version"])
    ]
    # The run's events, found by what they carry (not by their causes).
    of_run = [e for e in events.values() if e["payload"].get("run_id") == run["run_id"]]
    proposals = {e["payload"]["proposal_id"] for e in of_run if e["type"] == "trades-proposed"}
    of_run += [
        e
        for e in events.values()
        if e["type"] in ("trades-approved", "fills-received", "order-rejected")
        and e["payload"]["proposal_id"] in proposals
    ]
    fills = {e["payload"]["fill_id"] for e in of_run if e["type"] == "fills-received"}
    of_run += [
        e
        for e in events.values()
        if e["type"] == "holdings-reconciled" and fills & set(e["payload"]["fill_ids"])
    ]
    kinds = {kind: sum(e["type"] == kind for e in of_run) for kind in FOLLOWS_FROM}
    assert kinds["trades-proposed"] == run["proposals"] > 0
    assert kinds["drift-detected"] == run["accounts_evaluated"]
    assert kinds["trades-approved"] == run["proposals"]
    assert kinds["fills-received"] == flow["progress"]["trades_filled"] > 0
    assert kinds["holdings-reconciled"] > 0
    reconciled = {
        f for e in of_run if e["type"] == "holdings-reconciled" for f in e["payload"]["fill_ids"]
    }
    assert fills <= reconciled, "a fill of the run never reached a holdings-reconciled"

    trace_id = _trace_id(change["traceparent"])
    assert change["causation_id"] is None
    for event in of_run:
        what = f"{event['type']} {event['id']} (key {event['key']})"
        cause = events.get(event["causation_id"] or "")
        assert cause is not None, f"{what} names no event as its cause: {event['causation_id']}"
        assert cause["type"] == FOLLOWS_FROM[event["type"]], what
        root = event
        while root["causation_id"] is not None:
            root = events[root["causation_id"]]
        assert root["id"] == change["id"], f"{what} walks back to {root['type']} {root['id']}"
        assert _trace_id(event["traceparent"]) == trace_id, f"{what} left the trace"

    # The services' consumer spans of these events are in the trace too.
    ids = {e["id"] for e in of_run}
    snapshots = {e["id"] for e in of_run if e["type"] == "holdings-reconciled"}
    deadline = time.monotonic() + 20
    while True:
        text = await asyncio.to_thread(trace_file.read_text)
        spans = [json.loads(line) for line in text.splitlines() if line]
        consumed = [s for s in spans if s["attributes"].get("ballast.event_id") in ids]
        if any(s["attributes"]["ballast.event_id"] in snapshots for s in consumed):
            break
        assert time.monotonic() < deadline, "no consumer span of a holdings-reconciled of the run"
        await asyncio.sleep(1)
    outside = [(s["service"], s["name"]) for s in consumed if s["trace_id"] != trace_id]
    assert not outside, f"consumer spans of the run's events outside its trace: {outside[:5]}"


async def test_every_event_is_keyed_as_its_topic_promises(
    flow, kafka_client_options: dict, system_topic_prefix: str
):
    """Every event the flow published, on every topic of the registry: a valid envelope and
    payload of its contract, and the Kafka key equal to the envelope's and to the topic's key
    rule (what partitions keep in order depends on it; an outside client relies on it)."""
    topics = [t for t in TOPICS if t != "dead-letter"]
    records = await _records_on(kafka_client_options, [system_topic_prefix + t for t in topics])
    checked = 0
    for topic, key, value in records:
        if value.startswith(b'{"type": "oops"'):
            continue  # the malformed message the fixture put on fills-received
        envelope, payload = decode_envelope(value)
        what = f"{envelope.type} {envelope.id} on {topic}"
        assert topic == system_topic_prefix + TOPICS[envelope.type].name, what
        assert key == envelope.key, f"{what}: Kafka key {key!r}, envelope key {envelope.key!r}"
        assert envelope.key == TOPICS[envelope.type].key_of(payload), what
        checked += 1
    published = {topic.removeprefix(system_topic_prefix) for topic, _, _ in records}
    assert {"model-changed", "trades-proposed", "fills-received", "holdings-reconciled"} <= (
        published
    )
    assert checked > 100


async def test_an_event_delivered_twice_has_one_effect(
    flow, running_services: Urls, system, kafka_client_options: dict, system_topic_prefix: str
):
    topic = f"{system_topic_prefix}fills-received"
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options,
        auto_offset_reset="earliest",
        group_id=f"replayer-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            original = None
            while original is None:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    original = next((r for r in records if r.key != b"ACC-BROKEN"), None)
                    if original:
                        break
    finally:
        await consumer.stop()
    account = original.key.decode()
    async with httpx.AsyncClient(headers=bearer()) as http:
        before = (await http.get(f"{running_services.taxlot}/accounts/{account}/holdings")).json()
        taxlots = system.instance_urls("taxlot-svc")  # either instance may consume it
        duplicates_before = await _counter(http, taxlots, "fills-received", "duplicate")
        producer = AIOKafkaProducer(**kafka_client_options, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, original.value, key=original.key, headers=list(original.headers)
            )
        finally:
            await producer.stop()
        deadline = time.monotonic() + 30
        while await _counter(http, taxlots, "fills-received", "duplicate") <= duplicates_before:
            assert time.monotonic() < deadline, "the redelivered fill was never consumed"
            await asyncio.sleep(0.3)
        after = (await http.get(f"{running_services.taxlot}/accounts/{account}/holdings")).json()
    assert after == before


async def test_a_malformed_message_is_dead_lettered_and_the_consumer_carries_on(
    flow, kafka_client_options: dict, system_topic_prefix: str
):
    # The malformed fill went in before the model change; the flow completing proves the
    # consumer carried on. The dead letter names where it came from and why.
    assert flow["progress"]["complete"]
    consumer = AIOKafkaConsumer(
        f"{system_topic_prefix}dlq.taxlot-svc",
        **kafka_client_options,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            letters: list[dict] = []
            while not letters:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    letters += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    letter = letters[0]
    assert letter["original_topic"] == f"{system_topic_prefix}fills-received"
    assert letter["key"] == "ACC-BROKEN"
    assert letter["value"] == '{"type": "oops"'
    assert letter["error_type"] == "EnvelopeError" and "not JSON" in letter["error"]
    assert isinstance(letter["partition"], int) and isinstance(letter["offset"], int)


async def test_bad_rest_input_gets_problem_json_naming_the_field(flow, running_services: Urls):
    async with httpx.AsyncClient(headers=bearer()) as http:
        bad_weight = await http.put(
            f"{running_services.model_hub}/models/us-large-core",
            json={"name": "x", "targets": [{"symbol": "AAPL", "weight": "-0.5"}]},
        )
        unknown = await http.put(
            f"{running_services.model_hub}/models/new-model",
            json={"name": "x", "targets": [{"symbol": "NOPE", "weight": "1"}]},
        )
        missing_account = await http.get(f"{running_services.account}/accounts/NOPE-1")
        missing_model = await http.get(f"{running_services.model_hub}/models/nope")
    assert bad_weight.status_code == 422
    assert bad_weight.headers["content-type"] == "application/problem+json"
    assert bad_weight.json()["errors"][0]["field"] == "targets[0].weight"
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"field": "targets[0].symbol", "message": "unknown security NOPE"}
    ]
    assert missing_account.status_code == 404 and missing_model.status_code == 404
    # nothing already accepted was lost: the model is still at the version the flow published
    async with httpx.AsyncClient(headers=bearer()) as http:
        model = (await http.get(f"{running_services.model_hub}/models/us-large-core")).json()
    assert model["version"] == flow["published"]["version"]


async def _counter(http: httpx.AsyncClient, urls: list[str], topic: str, outcome: str) -> float:
    """The consumed-events counter summed over the instances."""
    total = 0.0
    for url in urls:
        text = (await http.get(f"{url}/metrics")).text
        for line in text.splitlines():
            if (
                line.startswith("ballast_events_consumed_total{")
                and f'topic="{topic}"' in line
                and f'outcome="{outcome}"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
    return total


def _trace_id(traceparent: str | None) -> str:
    assert traceparent, "no trace context"
    return traceparent.split("-")[1]


async def _events_on(kafka_client_options: dict, topics: list[str]) -> dict[str, dict]:
    """Every event on these topics so far, by id (what cannot be decoded is skipped)."""
    events: dict[str, dict] = {}
    for _, _, value in await _records_on(kafka_client_options, topics):
        try:
            envelope = json.loads(value)
        except ValueError:
            continue
        if isinstance(envelope, dict) and "id" in envelope:
            events[envelope["id"]] = envelope
    return events


async def _records_on(
    kafka_client_options: dict, topics: list[str]
) -> list[tuple[str, str, bytes]]:
    """Every record on these topics so far: (topic, key, value)."""
    consumer = AIOKafkaConsumer(
        *topics,
        **kafka_client_options,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"lineage-{uuid.uuid4().hex[:6]}",
    )
    records: list[tuple[str, str, bytes]] = []

    def keep(batches: dict) -> None:
        for batch in batches.values():
            for record in batch:
                key = record.key.decode() if record.key is not None else ""
                records.append((record.topic, key, record.value or b""))

    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while not consumer.assignment():
                keep(await consumer.getmany(timeout_ms=500))
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                keep(await consumer.getmany(timeout_ms=500, max_records=5000))
    finally:
        await consumer.stop()
    return records
