"""contracts/ is exactly what `make contracts` writes, and its AsyncAPI document describes what
goes on Kafka: every reference resolves, every schema in it is a valid JSON Schema, its
examples fit, and the headers, envelope and key that the code really sends match it."""

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ballast_common.consumer import BatchProcessor, Subscription
from ballast_common.contracts.envelope import Envelope, decode_envelope
from ballast_common.contracts.registry import CONTRACTS, TOPICS
from ballast_common.contracts.schema import export, message_name
from ballast_common.outbox import outbox
from ballast_common.testing import consumer_record, migrated_database, unit_of_work
from ballast_common.uow import UnitOfWork
from probe_svc import make_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[3] / "contracts"
DOCUMENT = json.loads((ROOT / "asyncapi.json").read_text())
MESSAGES: dict[str, Any] = DOCUMENT["components"]["messages"]
CASES = sorted(CONTRACTS.values(), key=lambda c: (c.type, c.version))
EVENTS = [c for c in CASES if c.type != "dead-letter"]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_contracts_folder_is_what_make_contracts_writes(tmp_path):
    export(tmp_path / "first")
    export(tmp_path / "second")
    generated = _files(tmp_path / "first")
    assert generated == _files(tmp_path / "second"), "two exports differ: not deterministic"
    committed = _files(ROOT)
    stale = sorted(set(committed) - set(generated))
    outdated = sorted(n for n in generated if committed.get(n) != generated[n])
    assert not stale and not outdated, (
        f"contracts/ is out of date (changed: {outdated}, not generated: {stale}): "
        "run `make contracts`"
    )


def _registry() -> Registry:
    """Every file of contracts/ by its relative path (and by its $id, if it has one)."""
    resources = []
    for name, raw in _files(ROOT).items():
        resource = Resource.from_contents(json.loads(raw), default_specification=DRAFT202012)
        resources.append((name, resource))
        if "$id" in resource.contents:
            resources.append((resource.contents["$id"], resource))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, registry=REGISTRY, format_checker=jsonschema.FormatChecker()
    )


def _refs(node: Any, path: str = "#") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        found = [(path, node["$ref"])] if "$ref" in node else []
        for key, child in node.items():
            found += _refs(child, f"{path}/{key}")
        return found
    if isinstance(node, list):
        return [r for i, child in enumerate(node) for r in _refs(child, f"{path}/{i}")]
    return []


def test_every_reference_in_the_document_resolves():
    refs = _refs(DOCUMENT)
    assert refs
    for where, ref in refs:
        target, _, pointer = ref.partition("#")
        node: Any = DOCUMENT if not target else json.loads((ROOT / target).read_text())
        for part in filter(None, pointer.split("/")):
            assert isinstance(node, dict) and part in node, f"{where}: {ref} does not resolve"
            node = node[part]


def test_the_document_names_every_contract_topic_and_operation():
    assert DOCUMENT["asyncapi"] == "3.0.0"
    assert set(MESSAGES) == {message_name(c) for c in CASES}
    assert set(DOCUMENT["channels"]) == set(TOPICS)
    operations = DOCUMENT["operations"]
    for name, topic in TOPICS.items():
        assert operations[f"send-{name}"]["action"] == "send"
        receivers = {
            o["x-service"]
            for o in operations.values()
            if o["action"] == "receive" and o["channel"]["$ref"] == f"#/channels/{name}"
        }
        assert receivers == set(topic.consumers), name
        for operation in operations.values():
            for message in operation["messages"]:
                assert message["$ref"].startswith(operation["channel"]["$ref"] + "/messages/")


@pytest.mark.parametrize("contract", CASES, ids=[message_name(c) for c in CASES])
def test_every_example_fits_its_message_headers_payload_and_key(contract):
    message = MESSAGES[message_name(contract)]
    key = message["bindings"]["kafka"]["key"]
    [example] = message["examples"]
    _validator(message["headers"]).validate(example["headers"])
    _validator(message["payload"]).validate(example["payload"])
    for value in key["examples"]:
        _validator(key).validate(value)
    assert key["examples"] == [TOPICS[contract.type].key_of(contract.example)]


@pytest.mark.parametrize("contract", EVENTS, ids=[message_name(c) for c in EVENTS])
def test_a_published_event_is_what_its_message_describes(contract):
    """Headers, envelope and key of what UnitOfWork.publish writes, against the document."""
    message = MESSAGES[message_name(contract)]
    topic = TOPICS[contract.type]
    payload = contract.payload.model_validate(contract.example)
    cause = Envelope(
        type="model-changed",
        version=1,
        tenant="acme",
        key="m1",
        source="model-hub-svc",
        traceparent=TRACEPARENT,
        tracestate="vendor=1",
        payload={},
    )
    uow = UnitOfWork(session=None, source=topic.producer)
    uow.publish(payload, key=topic.key_of(payload), cause=cause)
    [sent] = uow._pending
    _validator(message["headers"]).validate(sent.headers)
    undocumented = set(sent.headers) - set(message["headers"]["properties"])
    assert not undocumented, f"headers sent but not in the AsyncAPI document: {undocumented}"
    _validator(message["payload"]).validate(json.loads(sent.value))
    _validator(message["bindings"]["kafka"]["key"]).validate(sent.key)
    envelope, _ = decode_envelope(sent.value)
    assert envelope.key == sent.key == topic.key_of(contract.example)


def test_a_message_that_breaks_its_description_is_caught():
    contract = CONTRACTS[("fills-received", 1)]
    message = MESSAGES[message_name(contract)]
    [example] = message["examples"]
    wrong_version = {**example["payload"], "version": 2}
    with pytest.raises(jsonschema.ValidationError):
        _validator(message["payload"]).validate(wrong_version)
    no_quantity = {**example["payload"], "payload": dict(example["payload"]["payload"])}
    del no_quantity["payload"]["quantity"]
    with pytest.raises(jsonschema.ValidationError, match="quantity"):
        _validator(message["payload"]).validate(no_quantity)
    with pytest.raises(jsonschema.ValidationError):
        _validator(message["headers"]).validate({**example["headers"], "event-type": "x"})


def test_key_templates_name_payload_fields():
    for name, topic in TOPICS.items():
        contracts = [c for c in CASES if c.type == name]
        assert contracts, f"topic {name} has no contract"
        for contract in contracts:
            missing = set(topic.key_fields) - set(contract.payload.model_fields)
            assert not missing, f"{name} v{contract.version} key names no field {missing}"


def test_a_dead_letter_keeps_the_record_key_or_names_where_it_was():
    topic = TOPICS["dead-letter"]
    letter = dict(CONTRACTS[("dead-letter", 1)].example)
    assert topic.key_of(letter) == "ACC-000123"
    letter["key"] = None
    assert topic.key_of(letter) == "fills-received:3:1041"


@pytest.mark.integration
async def test_a_dead_letter_on_the_outbox_is_what_its_message_describes(database_url):
    db = await migrated_database(make_spec(f"probe_{uuid.uuid4().hex[:6]}"), database_url)
    try:

        async def never_called(uow, envelope, payload) -> None:
            raise AssertionError("an undecodable record reached its handler")

        processor = BatchProcessor(
            "probe-svc",
            [Subscription("account-changed", never_called)],
            lambda: unit_of_work(db, "probe-svc"),
        )
        for offset, key in enumerate((b"ACC-7", None)):
            record = consumer_record(
                b"{not json", offset, topic="account-changed", key=key, partition=2
            )
            assert (await processor.process([record]))["dead_lettered"] == 1
        async with db.sessions() as session:
            rows = (
                await session.execute(
                    select(outbox.c.key, outbox.c.value, outbox.c.headers).order_by(outbox.c.id)
                )
            ).all()
    finally:
        await db.dispose()
    message = MESSAGES["dead-letter.v1"]
    assert [key for key, _, _ in rows] == ["ACC-7", "account-changed:2:1"]
    for key, value, headers in rows:
        _validator(message["headers"]).validate(headers)
        assert set(headers) <= set(message["headers"]["properties"])
        letter = json.loads(value)
        _validator(message["payload"]).validate(letter)
        _validator(message["bindings"]["kafka"]["key"]).validate(key)
        assert key == TOPICS["dead-letter"].key_of(letter)
