"""Issue 11 items 1-3: a custodian's generated day goes into the ledger before it is compared
with it, against the real PostgreSQL: the book of the day before loaded from files, then the
day's set (a dividend, a deposit, client-directed trades, a lot transferred in, the day's
corporate action) uploaded by `ballast custodian reconcile`'s client reconciles clean, its
original files kept; then a set held back past its deadline (`late_file`) holds the
custodian's accounts until it arrives.

taxlot-svc runs in process, on a schema of its own (its outbox holds this module's events
only), with the test's clock; nothing listens on a port (BALLAST_TEST_PORT_BASE is not used)."""

from __future__ import annotations

import csv
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from ballast_cli import custodian
from ballast_common.auth import Role
from ballast_common.custodian_files import BALLAST
from ballast_common.custodian_files.generator import account_id, generate
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database, outbox_events, unit_of_work
from taxlot_svc import custodian_day, custodian_monitor
from taxlot_svc.main import spec as taxlot_spec
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

URL = "http://taxlot-svc"
ACCOUNTS = 8
SEED = 32  # every kind of transaction but a fee, and a holder of S030 (its symbol change)
THURSDAY, FRIDAY, MONDAY = date(2026, 12, 3), date(2026, 12, 4), date(2026, 12, 7)
# Monday's set (another seed) differs from the ledger: its breaks are flagged, so every hold
# of Monday comes from transfer monitoring.
SETTINGS = Settings(custodian_monitoring=["ballast"])
MONDAY_SETTINGS = Settings(
    custodian_monitoring=["ballast"],
    break_policies={"missing": "flag", "extra": "flag", "quantity": "flag"},
)
NO_BREAKS = {"missing": 0, "extra": 0, "quantity": 0, "basis": 0, "date": 0, "cash": 0}
TENANT = f"ingest-{uuid.uuid4().hex[:6]}"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock(datetime(2026, 12, 4, 23, 0, tzinfo=UTC))


@pytest.fixture(scope="module")
async def taxlot(database_url: str, clock: Clock) -> AsyncIterator[tuple[Any, Database]]:
    spec = replace(
        taxlot_spec,
        schema=f"taxlot_ingest_{uuid.uuid4().hex[:6]}",
        file_loads=[custodian_day.spec(SETTINGS, clock)],
    )
    db = await migrated_database(spec, database_url)
    yield spec, db
    await db.dispose()


@pytest.fixture(scope="module")
async def operations(taxlot: tuple[Any, Database]) -> AsyncIterator[httpx.AsyncClient]:
    spec, db = taxlot
    async with api_client(spec, db, SETTINGS, tenant=TENANT, roles=[Role.OPERATIONS]) as client:
        yield client


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


async def load_book(client: httpx.AsyncClient, folder: Path, as_of: date) -> dict[str, Any]:
    load_id = f"book-{uuid.uuid4().hex[:8]}"
    for path in files_of(folder):
        put = await client.put(
            f"/book-loads/{load_id}/files/{path.name}",
            content=path.read_bytes(),
            headers={"content-type": "text/csv"},
        )
        assert put.status_code == 201, put.text
    applied = await client.post(f"/book-loads/{load_id}/apply", json={"as_of": as_of.isoformat()})
    assert applied.status_code == 200, applied.text
    return dict(applied.json())


async def reconcile(client: httpx.AsyncClient, folder: Path, day: date) -> dict[str, Any]:
    files = custodian.day_files(folder, BALLAST, "ballast", day)
    outcome, _ = await custodian.reconcile_day(files, "ballast", URL, token="", http=client)
    assert not outcome.problems, outcome.problems[:3]
    return dict(outcome.applied[custodian.TAXLOT])


async def holds(db: Database, account: str) -> list[tuple[bool, str | None]]:
    events = await outbox_events(db, "trading-hold-changed", account)
    return [(e.payload.held, e.payload.reason) for e in events]


async def test_a_generated_day_goes_into_the_ledger_and_reconciles_clean_then_a_late_set_holds(
    tmp_path: Path,
    taxlot: tuple[Any, Database],
    operations: httpx.AsyncClient,
    clock: Clock,
) -> None:
    spec, db = taxlot
    made = generate(tmp_path, accounts=ACCOUNTS, seed=SEED, business_date=FRIDAY, book=True)
    assert made.book is not None
    await load_book(operations, made.book, THURSDAY)

    friday = await reconcile(operations, made.folder, FRIDAY)

    assert friday["breaks"] == NO_BREAKS, friday
    assert friday["accounts_held"] == 0
    outcomes = friday["transactions"]["outcomes"]
    assert outcomes.get("cash", 0) >= 2 and outcomes.get("trade", 0) >= 1, outcomes
    assert set(outcomes) <= {"cash", "trade", "transfer"}, friday["transactions"]["not_applied"]
    assert friday["corporate_actions"]["announced"] == ["CA1-20261204", "CA2-20261204"]
    # S030 -> S030N, as the custodian's lots show
    assert friday["corporate_actions"]["applied"] == ["CA3-20261204"]
    first = account_id(0)
    mine = [r for r in rows(made.folder / "transactions.csv") if r["account_id"] == first]
    assert {"dividend", "deposit"} <= {r["type"] for r in mine}
    [cash_row] = [r for r in rows(made.folder / "cash.csv") if r["account_id"] == first]
    holdings = (await operations.get(f"/accounts/{first}/holdings")).json()
    assert Decimal(holdings["cash"]) == Decimal(cash_row["amount"])
    # the originals, as delivered
    kept = (await operations.get(f"/custodian-days/ballast/{FRIDAY}/files")).json()["files"]
    assert {f["name"] for f in kept} == {p.name for p in files_of(made.folder)}
    assert all(f["matches_manifest"] for f in kept if f["name"] != "manifest.csv")
    lots = await operations.get(f"/custodian-days/ballast/{FRIDAY}/files/lots.csv")
    assert lots.content == (made.folder / "lots.csv").read_bytes()

    # Monday's set is held back past its deadline (Tuesday 07:00 New York)
    monday = generate(
        tmp_path / "monday", accounts=ACCOUNTS, seed=SEED + 1, business_date=MONDAY,
        breaks=("late_file",),
    )  # fmt: skip
    assert monday.late is not None
    async with unit_of_work(db, "taxlot-svc") as uow:
        opened = await custodian_monitor.open_overdue(
            uow, SETTINGS, datetime(2026, 12, 8, 12, 30, tzinfo=UTC)
        )
    assert [(e["custodian"], e["business_date"]) for e in opened] == [("ballast", MONDAY)]
    for n in range(ACCOUNTS):
        held, reason = (await holds(db, account_id(n)))[-1]
        assert held and reason is not None and "2026-12-07 is missing" in reason

    monday.deliver()
    clock.now = datetime(2026, 12, 8, 13, 0, tzinfo=UTC)
    late_spec = replace(spec, file_loads=[custodian_day.spec(MONDAY_SETTINGS, clock)])
    async with api_client(
        late_spec, db, MONDAY_SETTINGS, tenant=TENANT, roles=[Role.OPERATIONS]
    ) as client:
        arrived = await reconcile(client, monday.folder, MONDAY)
    assert arrived["accounts_released"] == ACCOUNTS, arrived
    for n in range(ACCOUNTS):
        assert (await holds(db, account_id(n)))[-1] == (False, None)
    late = await operations.get("/custodian-days/exceptions", params={"kind": "late"})
    assert [e["business_date"] for e in late.json()["exceptions"]] == [MONDAY.isoformat()]
