"""The custodians' inbox watched (`ballast custodian watch`) and the sets' deadlines monitored
(taxlot-svc), against the real PostgreSQL and Kafka: a set dropped in the inbox is reconciled
by itself and ignored when dropped again; a day that does not come by its deadline is a
`missing` exception that holds the custodian's accounts from trading until its set arrives;
a truncated set is refused, moved aside, held, and resolved by a person. The clock is given."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from ballast_cli.custodian_inbox import REJECTED, STATE_FILE, Inbox, exception_kind
from ballast_cli.main import main
from ballast_common.auth import Role
from ballast_common.bus import KafkaPublisher, ensure_topics
from ballast_common.contracts.events import SecuritiesChangedV1, SecurityV1
from ballast_common.custodian_files import BALLAST, check_file_set
from ballast_common.custodian_files.generator import account_id, generate, prices
from ballast_common.db import Database
from ballast_common.relay import OutboxRelay
from ballast_common.testing import (
    api_client,
    bearer,
    migrated_database,
    outbox_events,
    unit_of_work,
)
from sqlalchemy import text
from taxlot_svc import custodian_day, custodian_monitor, handlers
from taxlot_svc.main import spec as taxlot_spec
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

URL = "http://taxlot-svc"
ACCOUNTS = 3
THURSDAY, FRIDAY, MONDAY = date(2026, 12, 3), date(2026, 12, 4), date(2026, 12, 7)
# No break holds an account here (the tenant has no ledger: every lot is `extra`), so every
# hold comes from transfer monitoring.
SETTINGS = Settings(
    custodian_monitoring=["ballast"],
    break_policies={"missing": "flag", "extra": "flag", "quantity": "flag"},
)


def utc(text_: str) -> datetime:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC)


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        return self.now.timestamp()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(utc("2026-12-03T23:00:00"))


@pytest.fixture(scope="module")
async def taxlot(database_url: str, clock: Clock) -> AsyncIterator[tuple[Any, Database]]:
    """taxlot-svc in a schema of its own (its outbox holds this test's events only), its
    custodian days reconciled with the test's clock."""
    spec = replace(
        taxlot_spec,
        schema=f"taxlot_watch_{uuid.uuid4().hex[:6]}",
        file_loads=[custodian_day.spec(SETTINGS, clock)],
    )
    db = await migrated_database(spec, database_url)
    # the security master has announced the generated set's securities (an unknown one
    # would hold the accounts that hold it)
    announced = SecuritiesChangedV1(
        securities=[
            SecurityV1(symbol=s, name=s, asset_class="equity", sector="industrials", price=p)
            for s, p in prices(11).items()
        ]
    )
    async with unit_of_work(db, "taxlot-svc") as uow:
        await handlers.on_securities_changed(uow, None, announced)  # type: ignore[arg-type]
    yield spec, db
    await db.dispose()


TENANT = f"watch-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
async def operations(taxlot: tuple[Any, Database]) -> AsyncIterator[httpx.AsyncClient]:
    """taxlot-svc in process, called by operations of the tenant of this test."""
    spec, db = taxlot
    async with api_client(spec, db, SETTINGS, tenant=TENANT, roles=[Role.OPERATIONS]) as client:
        yield client


async def holds(db: Database, account: str) -> list[tuple[bool, str | None]]:
    """The trading-hold-changed events of an account in the outbox, oldest first."""
    events = await outbox_events(db, "trading-hold-changed", account)
    return [(e.payload.held, e.payload.reason) for e in events]


async def exceptions(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/custodian-days/exceptions", params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["exceptions"])


async def open_overdue(db: Database, at: datetime) -> list[dict[str, Any]]:
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await custodian_monitor.open_overdue(uow, SETTINGS, at)


def drop(pristine: Path, inbox: Path, day: date, at: datetime) -> Path:
    """Copy a day's set into the inbox, as a custodian's transfer does, its files written `at`."""
    target = inbox / "ballast" / day.isoformat()
    shutil.copytree(pristine / "ballast" / day.isoformat(), target)
    for path in target.iterdir():
        os.utime(path, (at.timestamp(), at.timestamp()))
    return target


async def test_a_watched_inbox_and_the_deadlines_of_its_sets(
    tmp_path: Path,
    taxlot: tuple[Any, Database],
    operations: httpx.AsyncClient,
    clock: Clock,
    kafka_connection: Any,
    topic_prefix: str,
) -> None:
    _, db = taxlot
    pristine, inbox = tmp_path / "made", tmp_path / "inbox"
    inbox.mkdir()
    for day in (THURSDAY, FRIDAY):
        generate(pristine, accounts=ACCOUNTS, seed=11, business_date=day)
    generate(pristine, accounts=ACCOUNTS, seed=11, business_date=MONDAY, breaks=("truncated",))
    watcher = Inbox(inbox, operations, URL, settle_s=30, clock=clock.timestamp)
    first = account_id(0)

    # Thursday's set arrives in the evening and is reconciled by itself, once settled
    clock.now = utc("2026-12-03T23:00:00")
    folder = drop(pristine, inbox, THURSDAY, utc("2026-12-03T22:59:40"))
    assert await watcher.scan() == []  # still arriving (written 20 s ago)
    clock.now = utc("2026-12-03T23:00:30")
    [event] = await watcher.scan()
    assert event.outcome == "reconciled", event
    load_id = json.loads((folder / STATE_FILE).read_text())["load_id"]
    assert event.load_id == load_id and load_id.startswith("ballast-2026-12-03-")
    summary = await operations.get(f"/reconciliations/ballast/{THURSDAY}")
    assert summary.status_code == 200 and summary.json()["accounts"] == ACCOUNTS
    assert await watcher.scan() == []  # nothing changed: nothing read

    # the same set dropped again: recognised by its digest and ignored
    shutil.rmtree(folder)
    drop(pristine, inbox, THURSDAY, utc("2026-12-03T23:01:00"))
    clock.now = utc("2026-12-03T23:05:00")
    [again] = await watcher.scan()
    assert again.outcome == "ignored" and again.load_id == load_id, again
    assert await exceptions(operations) == []
    assert await holds(db, first) == []

    # Friday's set is due Monday 07:00 New York (12:00 UTC) and does not come
    assert await open_overdue(db, utc("2026-12-07T11:59:59")) == []
    opened = await open_overdue(db, utc("2026-12-07T12:00:00"))
    assert [(o["custodian"], o["business_date"]) for o in opened] == [("ballast", FRIDAY)]
    assert await open_overdue(db, utc("2026-12-07T12:05:00")) == []  # once
    [missing] = await exceptions(operations, status="open")
    assert missing["kind"] == "missing" and missing["business_date"] == FRIDAY.isoformat()
    assert missing["deadline"].startswith("2026-12-07T12:00:00")
    reason = "ballast's file set of 2026-12-04 is missing (due 2026-12-07 07:00 America/New_York)"
    for n in range(ACCOUNTS):
        assert await holds(db, account_id(n)) == [(True, reason)]

    # ... until it arrives, late: the exception is resolved, a `late` one kept, holds released
    clock.now = utc("2026-12-07T13:00:00")
    folder = drop(pristine, inbox, FRIDAY, utc("2026-12-07T12:55:00"))
    [arrived] = await watcher.scan()
    assert arrived.outcome == "reconciled", arrived
    assert "3 accounts" in arrived.detail
    assert await exceptions(operations, status="open") == []
    by_kind = {e["kind"]: e for e in await exceptions(operations, business_date=FRIDAY)}
    assert by_kind["missing"]["status"] == "resolved"
    assert by_kind["missing"]["resolved_by"] == "arrival"
    assert by_kind["late"]["status"] == "resolved"
    assert "arrived 2026-12-07 08:00" in by_kind["late"]["detail"]
    for n in range(ACCOUNTS):
        assert await holds(db, account_id(n)) == [(True, reason), (False, None)]
    assert await open_overdue(db, utc("2026-12-07T14:00:00")) == []  # reconciled: not missing

    # Monday's set comes truncated: refused, moved aside with its report, an exception that
    # holds the accounts; a person resolves it and they are released
    clock.now = utc("2026-12-07T23:30:00")
    folder = drop(pristine, inbox, MONDAY, utc("2026-12-07T23:20:00"))
    [refused] = await watcher.scan()
    assert refused.outcome == "rejected" and "truncated" in refused.detail, refused
    assert not folder.exists()
    [aside] = list((inbox / REJECTED / "ballast").iterdir())
    assert aside.name == "2026-12-07-20261207T233000Z"
    assert "the file is truncated" in (aside / "ballast-report.txt").read_text()
    assert (aside / "lots.csv").exists()  # the custodian's files are kept
    [truncated] = await exceptions(operations, status="open")
    assert truncated["kind"] == "truncated" and truncated["problems"]
    assert json.loads((aside / "ballast-exception.json").read_text())["id"] == truncated["id"]
    assert await watcher.scan() == []  # moved aside: not taken again
    assert (await holds(db, first))[-1][0] is True
    assert "was refused (truncated)" in str((await holds(db, first))[-1][1])

    resolve = f"/custodian-days/exceptions/{truncated['id']}/resolve"
    # another tenant neither sees nor resolves it
    evil = bearer("evil", [Role.OPERATIONS])
    theirs = await operations.get("/custodian-days/exceptions", headers=evil)
    assert theirs.status_code == 200 and theirs.json()["exceptions"] == []
    refused_for_them = await operations.post(resolve, json={"resolution": "x"}, headers=evil)
    assert refused_for_them.status_code == 404
    done = await operations.post(resolve, json={"resolution": "custodian resent"})
    assert done.status_code == 200, done.text
    assert done.json()["resolved_by"] == f"{Role.OPERATIONS.value}@{TENANT}"
    assert (await holds(db, first))[-1] == (False, None)
    twice = await operations.post(resolve, json={"resolution": "again"})
    assert twice.status_code == 409 and "resolved already" in twice.json()["detail"]

    # the custodian's accounts are those of its most recent reconciled day
    async with db.sessions() as session:
        rows = await session.execute(
            text("SELECT custodian, business_date, count(*) FROM custodian_accounts GROUP BY 1, 2")
        )
        assert [tuple(r) for r in rows] == [("ballast", FRIDAY, ACCOUNTS)]

    # the holds reach Kafka in order, keyed by the account (the relay of the outbox)
    assert await on_kafka(db, kafka_connection, topic_prefix, first) == [True, False, True, False]


async def on_kafka(db: Database, connection: Any, prefix: str, account: str) -> list[bool]:
    """Relay the outbox to Kafka (topics under `prefix`) and read the account's holds back."""
    topic = prefix + "trading-hold-changed"
    await ensure_topics(connection, [topic], 3)
    publisher = KafkaPublisher(connection, "watch-relay")
    await publisher.start()
    try:
        relay = OutboxRelay(db, publisher, topic_prefix=prefix)
        async with asyncio.timeout(30):
            while True:
                try:
                    if await relay.publish_once() == 0:
                        break
                except KafkaError as exc:  # a topic just made may not have its leader yet
                    if not exc.retriable:
                        raise
                    await asyncio.sleep(0.5)
    finally:
        await publisher.stop()
    consumer = AIOKafkaConsumer(
        topic, auto_offset_reset="earliest", enable_auto_commit=False, **connection.client_options()
    )
    await consumer.start()
    held: list[bool] = []
    try:
        async with asyncio.timeout(30):
            while len(held) < 4:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        if record.key == account.encode():
                            held.append(json.loads(record.value)["payload"]["held"])
    finally:
        await consumer.stop()
    return held


def test_a_refused_sets_kind_for_operations(tmp_path: Path) -> None:
    truncated = generate(tmp_path, accounts=2, seed=3, breaks=("truncated",))
    report = check_file_set(truncated.folder, BALLAST, truncated.business_date)
    assert exception_kind(report) == "truncated"
    empty = generate(tmp_path / "e", accounts=2, seed=3)
    (empty.folder / "cash.csv").write_bytes(b"")
    assert exception_kind(check_file_set(empty.folder, BALLAST, empty.business_date)) == "empty"
    lot_sum = generate(tmp_path / "l", accounts=2, seed=3, breaks=("lot_sum",))
    report = check_file_set(lot_sum.folder, BALLAST, lot_sum.business_date)
    assert exception_kind(report) == "invalid"


async def test_a_refused_set_reported_with_a_wrong_kind_is_refused_naming_it(
    operations: httpx.AsyncClient,
) -> None:
    body = {"custodian": "ballast", "business_date": "2026-12-08", "kind": "lost", "detail": "x"}
    response = await operations.post("/custodian-days/exceptions", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["kind"]
    assert await exceptions(operations, business_date="2026-12-08") == []


def test_the_command_refuses_an_inbox_that_is_not_a_folder(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["custodian", "watch", str(tmp_path / "nowhere"), "--once", "--token", "t"])
    assert exit_.value.code == 2
    assert "is not a folder" in capsys.readouterr().err
