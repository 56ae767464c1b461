"""Transfer monitoring and reconciliation holding the same accounts (docs/custodian-files.md,
*Transfer monitoring*), against the real PostgreSQL: an account is released only when neither
a break nor an open exception of its custodian holds it, whichever is lifted first. The clock
is given; the days are business days of XNYS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from ballast_common import book_loads as loads
from ballast_common.book_loads import LoadOptions
from ballast_common.db import Database
from ballast_common.errors import Conflict
from ballast_common.testing import outbox_events, unit_of_work
from sqlalchemy import text
from taxlot_svc import custodian_day, custodian_monitor
from taxlot_svc.book_load import SPEC as BOOK_SPEC
from taxlot_svc.settings import Settings

pytestmark = pytest.mark.integration

THURSDAY, FRIDAY, MONDAY, TUESDAY = (date(2026, 12, d) for d in (3, 4, 7, 8))


def utc(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = utc("2026-12-03T23:00:00")

    def __call__(self) -> datetime:
        return self.now


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Custodian:
    """A custodian of two accounts of a tenant of this test: `kept` has a ledger of one lot,
    `new` has none."""

    def __init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.tenant, self.name, self.symbol = f"mon-{run}", f"mon{run}", f"M{run.upper()}"
        self.kept, self.new = f"K-{run}", f"N-{run}"
        self.clock = Clock()
        # this custodian's sets are monitored; an account without a ledger (every lot
        # `extra`, its cash) is flagged, not held
        self.settings = Settings(custodian_monitoring=[self.name], break_policies={"extra": "flag"})
        self.spec = custodian_day.spec(self.settings, self.clock)

    async def stage(self, db: Database, spec: Any, load_id: str, files: dict[str, bytes]) -> None:
        for name, content in files.items():
            async with unit_of_work(db, "taxlot-svc") as uow:
                await loads.stage_file(
                    uow.session, spec, self.tenant, load_id, name, _chunks(content)
                )

    async def apply(self, db: Database, spec: Any, load_id: str, as_of: date) -> dict[str, Any]:
        async with unit_of_work(db, "taxlot-svc") as uow:
            options = LoadOptions(as_of=as_of, tenant=self.tenant)
            return await loads.apply(uow, spec, load_id, options)

    async def open_ledger(self, db: Database) -> None:
        book = {
            "prices.csv": csv("symbol,price", [f"{self.symbol},10"]),
            "accounts.csv": csv("account_id,household_id,name", [f"{self.kept},H-{self.kept},k"]),
            "cash.csv": csv("account_id,amount", [f"{self.kept},100.00"]),
            "positions.csv": csv("account_id,symbol,quantity", [f"{self.kept},{self.symbol},5"]),
            "lots.csv": csv(
                "account_id,symbol,lot_id,quantity,acquired_on,cost_basis",
                [f"{self.kept},{self.symbol},L1,5,2025-01-02,50.00"],
            ),
        }
        load_id = f"book-{self.name}"
        await self.stage(db, BOOK_SPEC, load_id, book)
        await self.apply(db, BOOK_SPEC, load_id, date(2026, 11, 30))

    async def day_arrives(self, db: Database, day: date, with_kept_lot: bool) -> dict[str, Any]:
        """The custodian's set of `day`: `new` holds one lot; `kept` its lot L1, or nothing
        (the ledger's lot is then `missing`, a break that suspends)."""
        as_of = day.isoformat()
        lots = [f"{self.new},{self.symbol},X1,1,2026-12-01,10.00,{as_of}"]
        positions = [f"{self.new},{self.symbol},1,{as_of}"]
        if with_kept_lot:
            lots.append(f"{self.kept},{self.symbol},L1,5,2025-01-02,50.00,{as_of}")
            positions.append(f"{self.kept},{self.symbol},5,{as_of}")
        files = {
            "cash.csv": csv(
                "account_id,amount,as_of", [f"{self.kept},100.00,{as_of}", f"{self.new},0,{as_of}"]
            ),
            "positions.csv": csv("account_id,symbol,quantity,as_of", positions),
            "lots.csv": csv("account_id,symbol,lot_id,quantity,acquired_on,cost_basis,as_of", lots),
        }
        load_id = f"{self.name}-{as_of}-{uuid.uuid4().hex[:8]}"
        await self.stage(db, self.spec, load_id, files)
        return await self.apply(db, self.spec, load_id, day)

    async def holds(self, db: Database, account: str) -> list[bool]:
        events = await outbox_events(db, "trading-hold-changed", account)
        return [e.payload.held for e in events if e.envelope.tenant == self.tenant]

    async def exceptions(self, db: Database) -> list[tuple[date, str, str, str | None]]:
        async with db.sessions() as session:
            rows = await session.execute(
                text(
                    "SELECT business_date, kind, status, resolved_by FROM transfer_exceptions"
                    " WHERE tenant = :tenant ORDER BY id"
                ),
                {"tenant": self.tenant},
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

    async def open_overdue(self, db: Database, at: str) -> list[tuple[str, date]]:
        async with unit_of_work(db, "taxlot-svc") as uow:
            opened = await custodian_monitor.open_overdue(uow, self.settings, utc(at))
        return [(o["custodian"], o["business_date"]) for o in opened]


async def test_an_account_is_released_when_neither_a_break_nor_an_exception_holds_it(
    taxlot_db: Database,
) -> None:
    c = Custodian()
    await c.open_ledger(taxlot_db)
    db = taxlot_db

    # Thursday: `kept` lacks its lot at the custodian (a missing break: held), `new` is flagged
    thursday = await c.day_arrives(db, THURSDAY, with_kept_lot=False)
    assert (thursday["accounts_held"], thursday["accounts_released"]) == (1, 0)
    assert await c.holds(db, c.kept) == [True] and await c.holds(db, c.new) == []

    # Friday's set does not come by Monday 07:00 New York: both accounts held
    assert (c.name, FRIDAY) in await c.open_overdue(db, "2026-12-07T12:00:00")
    assert await c.holds(db, c.kept) == [True, True] and await c.holds(db, c.new) == [True]

    # a person resolves it: `new` is released, `kept` is still held by its break
    assert await c.exceptions(db) == [(FRIDAY, "missing", "open", None)]
    async with db.sessions() as session:
        found = await session.execute(
            text("SELECT id FROM transfer_exceptions WHERE tenant = :t"), {"t": c.tenant}
        )
        exception_id = found.scalar_one()
    async with unit_of_work(db, "taxlot-svc") as uow:
        resolved = await custodian_monitor.resolve(
            uow, c.tenant, exception_id, "ops@firm", "the custodian had a holiday"
        )
    assert resolved["status"] == "resolved" and resolved["resolved_by"] == "ops@firm"
    assert await c.holds(db, c.new) == [True, False]
    assert await c.holds(db, c.kept) == [True, True]
    with pytest.raises(Conflict, match="resolved already"):
        async with unit_of_work(db, "taxlot-svc") as uow:
            await custodian_monitor.resolve(uow, c.tenant, exception_id, "ops@firm", "again")
    # resolved by a person: not opened again
    assert (c.name, FRIDAY) not in await c.open_overdue(db, "2026-12-07T12:30:00")

    # Monday's set is overdue on Tuesday morning: both held again
    assert (c.name, MONDAY) in await c.open_overdue(db, "2026-12-08T12:00:00")
    assert await c.holds(db, c.new) == [True, False, True]
    assert await c.holds(db, c.kept) == [True, True, True]

    # Tuesday's set comes (on time) and has `kept`'s lot: its break is gone, but Monday's
    # exception still holds both accounts
    c.clock.now = utc("2026-12-08T20:00:00")
    tuesday = await c.day_arrives(db, TUESDAY, with_kept_lot=True)
    assert (tuesday["accounts_held"], tuesday["accounts_released"]) == (0, 0)
    assert await c.holds(db, c.kept) == [True, True, True]

    # Monday's set arrives, late: the last exception lifted, both released
    c.clock.now = utc("2026-12-08T21:00:00")
    monday = await c.day_arrives(db, MONDAY, with_kept_lot=True)
    assert monday["accounts_released"] == 2
    assert await c.holds(db, c.kept) == [True, True, True, False]
    assert await c.holds(db, c.new) == [True, False, True, False]
    assert await c.exceptions(db) == [
        (FRIDAY, "missing", "resolved", "ops@firm"),
        (MONDAY, "missing", "resolved", "arrival"),
        (MONDAY, "late", "resolved", "arrival"),
    ]
    # the custodian's accounts stay those of its latest day (Tuesday), whatever came after
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT account_id, business_date FROM custodian_accounts WHERE tenant = :t"
                " ORDER BY account_id"
            ),
            {"t": c.tenant},
        )
        assert [tuple(r) for r in rows] == [(c.kept, TUESDAY), (c.new, TUESDAY)]
