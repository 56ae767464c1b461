"""JSON Schema export of the contracts, and the check that a version changed compatibly.

`python -m ballast_common.contracts.schema export contracts/` writes, per contract,
`<type>/v<version>.schema.json` and `<type>/v<version>.example.json`, plus the envelope
schema and an AsyncAPI 3 description of every topic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.registry import CONTRACTS, DEAD_LETTER_TOPIC_PREFIX, Contract

Schema = dict[str, Any]


def payload_schema(contract: Contract) -> Schema:
    schema = contract.payload.model_json_schema(mode="serialization")
    schema["$id"] = f"https://ballast.dev/contracts/{contract.type}/v{contract.version}.json"
    schema["title"] = f"{contract.type} v{contract.version}"
    return schema


def schema_paths(root: Path, contract: Contract) -> tuple[Path, Path]:
    folder = root / contract.type
    return folder / f"v{contract.version}.schema.json", folder / f"v{contract.version}.example.json"


def asyncapi_document() -> Schema:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for contract in sorted(CONTRACTS.values(), key=lambda c: (c.type, c.version)):
        name = f"{contract.type}.v{contract.version}"
        messages[name] = {
            "name": name,
            "summary": contract.description,
            "contentType": "application/json",
            "payload": {"$ref": f"{contract.type}/v{contract.version}.schema.json"},
            "x-producer": contract.producer,
            "x-consumers": list(contract.consumers),
        }
        address = (
            DEAD_LETTER_TOPIC_PREFIX + "{consumerGroup}"
            if contract.type == "dead-letter"
            else contract.type
        )
        channel = channels.setdefault(contract.type, {"address": address, "messages": {}})
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
        operations[f"publish-{contract.type}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{contract.type}"},
            "summary": f"published by {contract.producer}",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ballast events",
            "version": "1",
            "description": "Every Kafka topic of Ballast. Events travel in the envelope "
            "(envelope.schema.json); the key is the account id or model id.",
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


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
