"""The shared test kit (ballast_common.testing): what it builds is what producers, the relay
and the consumer really send and receive; and no production module imports it."""

from __future__ import annotations

import ast
import uuid
from pathlib import Path

import pytest
from ballast_common.consumer import Subscription
from ballast_common.contracts.envelope import decode_envelope
from ballast_common.contracts.events import AccountChangedV1, ModelChangedV1, ModelTargetV1
from ballast_common.errors import PermanentMessageError
from ballast_common.testing import (
    InMemoryUnitOfWork,
    committed_events,
    consumer_record,
    consumer_records,
    deliver,
    envelope,
    example,
    migrated_database,
    outbox_events,
    service_consumer,
)
from probe_svc import Note, make_spec
from sqlmodel import select

ROOT = Path(__file__).resolve().parents[3]
KIT = "ballast_common.testing"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def account(account_id: str, name: str = "Jordan") -> AccountChangedV1:
    return example("account-changed", account_id=account_id, name=name)


# --- production code does not import the kit ------------------------------------------------


def imports_the_kit(source: str, module: str) -> bool:
    """Whether Python `source` (of dotted `module`) imports ballast_common.testing."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's package
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # importlib.import_module("ballast_common.testing")
        else:
            continue
        if any(n == KIT or n.startswith(KIT + ".") for n in names):
            return True
    return False


def production_modules() -> list[tuple[Path, str]]:
    found = []
    for src in sorted(ROOT.glob("*/*/src")):
        for path in sorted(src.rglob("*.py")):
            module = ".".join(path.relative_to(src).with_suffix("").parts)
            if module not in (KIT, f"{KIT}.__init__") and not module.startswith(KIT + "."):
                found.append((path, module))
    return found


@pytest.mark.parametrize(
    ("source", "module", "imports"),
    [
        ("from ballast_common.testing import envelope", "x_svc.sample", True),
        ("import ballast_common.testing as kit", "x_svc.sample", True),
        ("from ballast_common import db, testing", "x_svc.sample", True),
        ("from . import testing", "ballast_common.app", True),
        ("from .testing import deliver", "ballast_common.app", True),
        ("import importlib\nimportlib.import_module('ballast_common.testing')", "x.y", True),
        ("from ballast_common.testing_data import rows", "x_svc.sample", False),
        ("from . import testing", "x_svc.sample", False),  # x_svc's own testing module
        ("from ballast_common import db", "x_svc.sample", False),
    ],
)
def test_an_import_of_the_kit_is_recognised(source, module, imports):
    assert imports_the_kit(source, module) is imports


def test_no_production_module_imports_the_test_kit():
    modules = production_modules()
    assert len(modules) > 50  # the workspace's src folders were found
    offenders = [
        str(path.relative_to(ROOT))
        for path, module in modules
        if imports_the_kit(path.read_text(), module)
    ]
    assert offenders == [], f"production code imports {KIT} (tests only): {offenders}"


# --- envelopes and records ------------------------------------------------------------------


def test_an_envelope_takes_type_version_and_key_from_the_contract():
    payload = account("ACC-9")
    made = envelope(payload, tenant="acme", traceparent=TRACEPARENT)
    assert (made.type, made.version, made.key, made.tenant) == (
        "account-changed",
        1,
        "ACC-9",
        "acme",
    )
    decoded, typed = decode_envelope(made.to_bytes())
    assert decoded.model_dump(mode="json") == made.model_dump(mode="json") and typed == payload
    model = ModelChangedV1(
        model_id="core",
        name="Core",
        version=2,
        changed_by="pm",
        targets=[ModelTargetV1(symbol="AAA", weight=1)],
    )
    assert envelope(model).key == "core"
    assert envelope(model, key="other").key == "other"


def test_a_record_carries_the_envelope_as_the_relay_sends_it():
    made = envelope(account("ACC-9"), traceparent=TRACEPARENT)
    record = consumer_record(made, 7)
    assert (record.topic, record.offset, record.key) == ("account-changed", 7, b"ACC-9")
    assert record.headers == [("traceparent", TRACEPARENT.encode())]
    assert decode_envelope(record.value)[0].id == made.id
    assert record.serialized_value_size == len(record.value)
    raw = consumer_record(b"{not json", 3, topic="account-changed")
    assert (raw.key, raw.headers, raw.value) == (None, [], b"{not json")
    with pytest.raises(ValueError, match="needs its topic"):
        consumer_record(b"{}")
    assert [r.offset for r in consumer_records([made, made], first_offset=5)] == [5, 6]


# --- an in-memory unit of work --------------------------------------------------------------


class Notes:
    def __init__(self) -> None:
        self.by_account: dict[str, list[str]] = {}


async def test_an_in_memory_unit_of_work_commits_events_and_rolls_back_its_fakes():
    notes, committed = Notes(), []
    async with InMemoryUnitOfWork("probe-svc", notes, committed=committed) as uow:
        notes.by_account["ACC-1"] = ["kept"]
        uow.publish(account("ACC-1"), key="ACC-1", tenant="acme")
    with pytest.raises(RuntimeError):
        async with InMemoryUnitOfWork("probe-svc", notes, committed=committed) as uow:
            notes.by_account["ACC-1"].append("undone")
            notes.by_account["ACC-2"] = ["undone"]
            uow.publish(account("ACC-2"), key="ACC-2", tenant="acme")
            await uow.flush_events()
            raise RuntimeError("the rule failed")
    assert notes.by_account == {"ACC-1": ["kept"]}
    [event] = committed_events(committed, "account-changed")
    assert (event.envelope.source, event.envelope.tenant, event.payload) == (
        "probe-svc",
        "acme",
        account("ACC-1"),
    )
    assert committed_events(committed, "account-changed", key="ACC-2") == []


# --- delivering to a service, on real PostgreSQL --------------------------------------------


@pytest.fixture
async def db(database_url):
    database = await migrated_database(make_spec(f"probe_{uuid.uuid4().hex[:6]}"), database_url)
    yield database
    await database.dispose()


@pytest.mark.integration
async def test_deliver_hands_runs_of_one_topic_to_the_handler_and_raises_its_errors(db):
    batches: list[list[str]] = []

    async def note_all(uow, deliveries) -> None:
        batches.append([d.payload.name for d in deliveries])
        for d in deliveries:
            if d.payload.name == "poison":
                raise PermanentMessageError(f"account {d.payload.account_id} is poison")
            uow.session.add(Note(account_id=d.payload.account_id, text=d.payload.name))
            uow.publish(account(d.payload.account_id, "seen"), key="x", cause=d.envelope)

    subscriptions = [Subscription.batch("account-changed", note_all)]
    first = envelope(account("ACC-1", "one"))
    sent = await deliver(db, subscriptions, first, account("ACC-2", "two"), first)
    assert batches == [["one", "two", "one"]]  # no inbox: the same envelope twice
    assert sent[0] is first and sent[1].key == "ACC-2"
    seen = await outbox_events(db, "account-changed")
    assert [e.envelope.causation_id for e in seen] == [first.id, sent[1].id, first.id]
    with pytest.raises(PermanentMessageError, match="ACC-3 is poison"):
        await deliver(db, subscriptions, account("ACC-3", "poison"))
    with pytest.raises(ValueError, match="no subscription to model-changed"):
        await deliver(
            db,
            subscriptions,
            ModelChangedV1(
                model_id="m",
                name="m",
                version=1,
                changed_by="pm",
                targets=[ModelTargetV1(symbol="AAA", weight=1)],
            ),
        )
    async with db.sessions() as session:
        assert list((await session.exec(select(Note.text))).all()) == ["one", "two", "one"]


@pytest.mark.integration
async def test_the_service_consumer_has_the_inbox_and_dead_letters(db):
    async def note(uow, envelope, payload) -> None:
        if payload.name == "poison":
            raise PermanentMessageError(f"account {payload.account_id} is poison")
        uow.session.add(Note(account_id=payload.account_id, text=payload.name))

    main = [Subscription("account-changed", note), Subscription("model-changed", note, lane="x")]
    consumer = service_consumer(db, "probe-svc", main)
    assert (consumer.group, consumer.topics, consumer.dead_letters) == (
        "probe-svc",
        ["account-changed"],
        "dlq.probe-svc",
    )
    assert service_consumer(db, "probe-svc", main, lane="x").group == "probe-svc.x"
    first = envelope(account("ACC-1", "one"))
    records = consumer_records([first, first, envelope(account("ACC-2", "poison"))])
    assert await consumer.process(records) == {"processed": 1, "duplicate": 1, "dead_lettered": 1}
