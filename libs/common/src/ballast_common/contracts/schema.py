"""JSON Schema export of the contracts, and the check that a version changed compatibly.

`python -m ballast_common.contracts.schema export contracts/` writes, per contract,
`<type>/v<version>.schema.json` and `<type>/v<version>.example.json`, plus the envelope
schema and an AsyncAPI 3 description of every topic: the envelope each event travels in, its
Kafka key and the headers sent with it. The output depends on the code only (fixed example
ids and times, sorted keys), so running it again changes nothing.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.registry import (
    CONTRACTS,
    DEAD_LETTER_TOPIC_PREFIX,
    TOPICS,
    Contract,
    Topic,
)
from ballast_common.settings import ServiceSettings

Schema = dict[str, Any]

DEAD_LETTER = "dead-letter"
JSON = "application/json"
KAFKA_BINDING_VERSION = "0.5.0"
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_EXAMPLE_TIME = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)
_EXAMPLE_IDS = uuid.UUID("3f0b9a57-52a4-4d0e-9c55-0f7d2b6c1e44")  # namespace of example ids
_EXAMPLE_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def payload_schema(contract: Contract) -> Schema:
    schema = contract.payload.model_json_schema(mode="serialization")
    schema["$id"] = f"https://ballast.dev/contracts/{contract.type}/v{contract.version}.json"
    schema["title"] = f"{contract.type} v{contract.version}"
    return schema


def schema_paths(root: Path, contract: Contract) -> tuple[Path, Path]:
    folder = root / contract.type
    return folder / f"v{contract.version}.schema.json", folder / f"v{contract.version}.example.json"


def message_name(contract: Contract) -> str:
    return f"{contract.type}.v{contract.version}"


def event_headers_schema(contract: Contract) -> Schema:
    """The headers `UnitOfWork.publish` puts on every event record."""
    return {
        "type": "object",
        "properties": {
            "event-type": _text("the envelope's type", const=contract.type),
            "event-version": _text(
                "the envelope's version, in decimal", const=str(contract.version)
            ),
            "event-id": _text("the envelope's id", format="uuid"),
            "content-type": _text("the value's media type", const=JSON),
            "traceparent": _text(
                "W3C trace context of the code that wrote the event (absent outside a trace)",
                pattern=TRACEPARENT_PATTERN,
            ),
            "tracestate": _text("W3C trace state (absent when empty)"),
        },
        "required": ["content-type", "event-id", "event-type", "event-version"],
    }


def dead_letter_headers_schema() -> Schema:
    """The headers a consumer puts on a dead letter."""
    return {
        "type": "object",
        "properties": {
            "content-type": _text("the value's media type", const=JSON),
            "error-type": _text("class name of the error that stopped the record"),
        },
        "required": ["content-type", "error-type"],
    }


def key_schema(topic: Topic, example: str) -> Schema:
    """The Kafka key of a topic's records (also the envelope's `key`)."""
    if not topic.key_fields:
        schema = _text(f"Always {topic.key!r}. {topic.ordering}", const=topic.key)
    else:
        rule = f"{topic.key!r} filled from the payload's fields"
        if topic.key_fallback:
            rule += f", or {topic.key_fallback!r} when that is empty"
        schema = _text(f"{rule}. {topic.ordering}", minLength=1)
    schema["examples"] = [example]
    return schema


def example_envelope(contract: Contract) -> Schema:
    """The example payload in its envelope, with fixed ids: an event as it travels."""
    topic = TOPICS[contract.type]
    return {
        "id": str(_example_id(contract, "event")),
        "type": contract.type,
        "version": contract.version,
        "time": _EXAMPLE_TIME.isoformat(),
        "tenant": "demo",
        "key": topic.key_of(contract.example),
        "source": topic.producer,
        "causation_id": str(_example_id(contract, "cause")),
        "traceparent": _EXAMPLE_TRACEPARENT,
        "tracestate": None,
        "payload": contract.example,
    }


def asyncapi_document() -> Schema:
    """AsyncAPI 3.0 description of every topic: channels, who sends and receives, messages."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for contract in sorted(CONTRACTS.values(), key=lambda c: (c.type, c.version)):
        name = message_name(contract)
        messages[name] = _message(contract)
        channel = channels.setdefault(contract.type, _channel(TOPICS[contract.type]))
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for name, topic in sorted(TOPICS.items()):
        channel_messages = [
            {"$ref": f"#/channels/{name}/messages/{message}"}
            for message in channels[name]["messages"]
        ]
        operations[f"send-{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{name}"},
            "messages": channel_messages,
            "summary": f"{topic.producer} publishes (through its outbox)",
            "x-service": topic.producer,
        }
        for consumer in topic.consumers:
            operations[f"receive-{name}-{consumer}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{name}"},
                "messages": channel_messages,
                "summary": f"{consumer} consumes",
                "x-service": consumer,
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ballast events",
            "version": "1",
            "description": (
                "Every Kafka topic of Ballast. An event travels as a JSON envelope "
                "(envelope.schema.json: id, type, version, time, tenant, key, source, "
                "causation_id, traceparent, tracestate, payload) whose payload is the "
                "contract of its type and version; its headers repeat the type, version and "
                "id and carry the trace context; its Kafka key is the envelope's key, by the "
                "topic's rule. Dead letters are plain records. Every topic name may carry a "
                "prefix (BALLAST_TOPIC_PREFIX)."
            ),
        },
        "defaultContentType": JSON,
        "servers": {
            "local": {
                "host": ServiceSettings.model_fields["kafka_bootstrap_servers"].default,
                "protocol": "kafka",
                "description": "the broker `make stack-up` starts; elsewhere "
                "BALLAST_KAFKA_BOOTSTRAP_SERVERS",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def _channel(topic: Topic) -> Schema:
    channel: Schema = {
        "address": topic.name,
        "description": f"Written by {topic.producer}; read by {', '.join(topic.consumers)}.",
        "messages": {},
        "x-producer": topic.producer,
        "x-consumers": list(topic.consumers),
        "x-key": topic.key,
    }
    if topic.name == DEAD_LETTER:
        services = sorted(
            {c for t in TOPICS.values() for c in t.consumers if t.name != DEAD_LETTER}
        )
        channel["address"] = DEAD_LETTER_TOPIC_PREFIX + "{service}"
        channel["parameters"] = {
            "service": {"description": "the service whose consumer gave up", "enum": services}
        }
    return channel


def _message(contract: Contract) -> Schema:
    topic = TOPICS[contract.type]
    example_key = topic.key_of(contract.example)
    own_schema = f"{contract.type}/v{contract.version}.schema.json"
    if contract.type == DEAD_LETTER:
        headers = dead_letter_headers_schema()
        payload: Schema = {"$ref": own_schema}
        example = {"headers": {"content-type": JSON, "error-type": contract.example["error_type"]}}
        example["payload"] = contract.example
    else:
        headers = event_headers_schema(contract)
        envelope_key = key_schema(topic, example_key)
        del envelope_key["examples"]
        payload = {
            "allOf": [{"$ref": "envelope.schema.json"}],
            "properties": {
                "type": {"const": contract.type},
                "version": {"const": contract.version},
                "key": envelope_key,
                "source": {"const": topic.producer},
                "payload": {"$ref": own_schema},
            },
        }
        envelope = example_envelope(contract)
        example = {
            "headers": {
                "event-type": contract.type,
                "event-version": str(contract.version),
                "event-id": envelope["id"],
                "content-type": JSON,
                "traceparent": _EXAMPLE_TRACEPARENT,
            },
            "payload": envelope,
        }
    return {
        "name": message_name(contract),
        "title": f"{contract.type} v{contract.version}",
        "summary": contract.description,
        "contentType": JSON,
        "headers": headers,
        "payload": payload,
        "bindings": {
            "kafka": {
                "key": key_schema(topic, example_key),
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
        "examples": [{"name": "example", "summary": f"key {example_key!r}", **example}],
    }


def _text(description: str, **constraints: Any) -> Schema:
    return {"type": "string", "description": description, **constraints}


def _example_id(contract: Contract, role: str) -> uuid.UUID:
    return uuid.uuid5(_EXAMPLE_IDS, f"{contract.type}.v{contract.version}.{role}")


def export(root: Path) -> list[Path]:
    written: list[Path] = []
    root.mkdir(parents=True, exist_ok=True)
    for contract in CONTRACTS.values():
        schema_path, example_path = schema_paths(root, contract)
        schema_path.parent.mkdir(parents=True, exist_ok=True)
        _write(schema_path, payload_schema(contract))
        _write(example_path, contract.example)
        written += [schema_path, example_path]
    _write(root / "envelope.schema.json", Envelope.model_json_schema(mode="serialization"))
    _write(root / "asyncapi.json", asyncapi_document())
    written += [root / "envelope.schema.json", root / "asyncapi.json"]
    return written


def _write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- compatibility ----------------------------------------------------------------------------


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """What a consumer of `old` messages would trip over in `new`; empty if compatible.

    Breaking: a property removed, retyped, or newly required; an enum changed; a constraint
    (pattern, minimum, maxLength...) changed. Adding an optional property is compatible.
    """
    problems: list[str] = []
    _compare(_resolve(old, old), _resolve(new, new), old, new, "$", problems)
    return problems


_CONSTRAINTS = (
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "format",
    "const",
)


def _resolve(node: Schema, doc: Schema) -> Schema:
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"external $ref not supported: {ref}")
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _types(node: Schema, doc: Schema) -> set[str]:
    node = _resolve(node, doc)
    if "anyOf" in node:
        out: set[str] = set()
        for option in node["anyOf"]:
            out |= _types(option, doc)
        return out
    kind = node.get("type")
    if isinstance(kind, list):
        return set(kind)
    if kind is None:
        return {"enum"} if "enum" in node else {"any"}
    return {kind}


def _compare(
    old: Schema, new: Schema, old_doc: Schema, new_doc: Schema, path: str, problems: list[str]
) -> None:
    old_types, new_types = _types(old, old_doc), _types(new, new_doc)
    if old_types != new_types:
        problems.append(f"{path}: type changed from {sorted(old_types)} to {sorted(new_types)}")
        return
    for key in ("enum", *_CONSTRAINTS):
        if old.get(key) != new.get(key):
            problems.append(f"{path}: {key} changed from {old.get(key)!r} to {new.get(key)!r}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            problems.append(f"{path}.{name}: property removed")
    added_required = set(new.get("required", [])) - set(old.get("required", []))
    for name in sorted(added_required):
        problems.append(f"{path}.{name}: became required")
    for name, old_child in old_props.items():
        if name in new_props:
            _compare_nodes(old_child, new_props[name], old_doc, new_doc, f"{path}.{name}", problems)
    if "items" in old and "items" in new:
        _compare_nodes(old["items"], new["items"], old_doc, new_doc, f"{path}[]", problems)
    old_any, new_any = old.get("anyOf"), new.get("anyOf")
    if old_any and new_any:
        old_objects = [_resolve(o, old_doc) for o in old_any if _types(o, old_doc) == {"object"}]
        new_objects = [_resolve(n, new_doc) for n in new_any if _types(n, new_doc) == {"object"}]
        for o, n in zip(old_objects, new_objects, strict=False):
            _compare(o, n, old_doc, new_doc, path, problems)


def _compare_nodes(
    old: Schema, new: Schema, old_doc: Schema, new_doc: Schema, path: str, problems: list[str]
) -> None:
    _compare(_resolve(old, old_doc), _resolve(new, new_doc), old_doc, new_doc, path, problems)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "export":
        print("usage: python -m ballast_common.contracts.schema export DIR", file=sys.stderr)
        return 2
    for path in export(Path(argv[1])):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
