"""Every contract's committed schema matches the code, examples validate, and a version
cannot change incompatibly."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from ballast_common.contracts import CONTRACTS, Envelope, EnvelopeError, decode_envelope
from ballast_common.contracts.schema import breaking_changes, payload_schema, schema_paths

ROOT = Path(__file__).resolve().parents[3] / "contracts"
CASES = sorted(CONTRACTS.values(), key=lambda c: (c.type, c.version))
IDS = [f"{c.type}-v{c.version}" for c in CASES]


@pytest.mark.parametrize("contract", CASES, ids=IDS)
def test_committed_schema_is_compatible_with_the_code(contract):
    schema_path, _ = schema_paths(ROOT, contract)
    assert schema_path.exists(), f"{schema_path} missing: run `make contracts`"
    committed = json.loads(schema_path.read_text())
    current = payload_schema(contract)
    problems = breaking_changes(committed, current)
    assert not problems, (
        f"{contract.type} v{contract.version} changed incompatibly: {problems}. "
        "Publish a new version instead of changing this one."
    )
    assert committed == json.loads(json.dumps(current)), (
        f"{schema_path} is out of date (a compatible change): run `make contracts`"
    )


@pytest.mark.parametrize("contract", CASES, ids=IDS)
def test_examples_validate_against_committed_schema(contract):
    schema_path, example_path = schema_paths(ROOT, contract)
    schema = json.loads(schema_path.read_text())
    example = json.loads(example_path.read_text())
    jsonschema.validate(example, schema)
    assert contract.payload.model_validate(example).model_dump(mode="json") == example


def test_envelope_round_trip_through_bytes():
    contract = CONTRACTS[("model-changed", 1)]
    envelope = Envelope(
        type=contract.type,
        version=1,
        tenant="demo",
        key="m1",
        source="model-hub-svc",
        payload=contract.example,
    )
    decoded, payload = decode_envelope(envelope.to_bytes())
    assert decoded.id == envelope.id
    assert payload.model_dump(mode="json") == contract.example


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type": "model-changed"}', "invalid envelope"),
        (
            json.dumps(
                {
                    "type": "nope",
                    "version": 1,
                    "tenant": "t",
                    "key": "k",
                    "source": "s",
                    "payload": {},
                }
            ).encode(),
            "unknown event type/version nope v1",
        ),
        (
            json.dumps(
                {
                    "type": "model-changed",
                    "version": 1,
                    "tenant": "t",
                    "key": "k",
                    "source": "s",
                    "payload": {"model_id": "m"},
                }
            ).encode(),
            "invalid model-changed v1 payload: name: Field required",
        ),
    ],
)
def test_bad_messages_are_named(raw, message):
    with pytest.raises(EnvelopeError, match=message):
        decode_envelope(raw)


def test_decimal_fields_travel_as_strings():
    example = CONTRACTS[("fills-received", 1)].example
    assert example["quantity"] == "12" and example["price"] == "415.18"


# --- the compatibility checker itself ----------------------------------------------------------

BASE = CONTRACTS[("fills-received", 1)]


def _schema():
    return copy.deepcopy(payload_schema(BASE))


def test_adding_an_optional_property_is_compatible():
    new = _schema()
    new["properties"]["venue"] = {"type": "string"}
    assert breaking_changes(_schema(), new) == []


def test_removing_a_property_breaks():
    new = _schema()
    del new["properties"]["price"]
    new["required"].remove("price")
    assert any("price: property removed" in p for p in breaking_changes(_schema(), new))


def test_retyping_a_property_breaks():
    new = _schema()
    new["properties"]["quantity"] = {"type": "number"}
    assert any("quantity: type changed" in p for p in breaking_changes(_schema(), new))


def test_a_new_required_property_breaks():
    new = _schema()
    new["properties"]["venue"] = {"type": "string"}
    new["required"].append("venue")
    assert breaking_changes(_schema(), new) == ["$.venue: became required"]


def test_changing_a_nested_enum_breaks():
    old = payload_schema(CONTRACTS[("holdings-reconciled", 1)])
    new = copy.deepcopy(old)
    new["properties"]["cause"]["enum"] = ["opening-balance"]
    assert any("cause: enum changed" in p for p in breaking_changes(old, new))


def test_changing_a_field_inside_a_referenced_definition_breaks():
    old = payload_schema(CONTRACTS[("trades-proposed", 1)])
    new = copy.deepcopy(old)
    del new["$defs"]["TradeV1"]["properties"]["explanation"]
    new["$defs"]["TradeV1"]["required"].remove("explanation")
    assert any("trades[].explanation: property removed" in p for p in breaking_changes(old, new))
