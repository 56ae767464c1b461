"""Issue 11 items 1 and 8 through the running system: a quantity break seeded into the
custodian's files holds the account from trading; a person accepts the custodian's figure on
the dashboard's route (reporting-svc forwarding to taxlot-svc with their own token); the
ledger becomes the custodian's, the new holdings reach reporting-svc over Kafka, the account
is released, and the next day, the custodian saying the same, reconciles clean.

A small book of its own (no trading), on a system of its own (one instance of each service,
on a database and topic prefix of its own, ports above the other modules')."""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from ballast_cli import custodian
from ballast_common.custodian_files import BALLAST
from ballast_common.testing import bearer, eventually, issuer_for_tests
from ballast_demo.book import MODELS, ModelSpec, build_accounts
from ballast_demo.driver import Ballast, Urls

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# above the ports of the other modules' systems (conftest.py: +0, test_custodian_day: +100)
PORT_BASE = int(os.environ.get("BALLAST_TEST_PORT_BASE", "18600")) + 200
PREFIX = "acp-"
NO_BREAKS = {"missing": 0, "extra": 0, "quantity": 0, "basis": 0, "date": 0, "cash": 0}


def _own(model: ModelSpec) -> ModelSpec:
    return dataclasses.replace(model, model_id=PREFIX + model.model_id)


BOOK = [
    dataclasses.replace(
        a,
        account_id=a.account_id.replace("ACC-", "ACP-"),
        household_id=a.household_id.replace("HH-", "ACPH-"),
        model_id=PREFIX + a.model_id if a.model_id else None,
        restrictions=[],
    )
    for a in build_accounts(40, seed=11)
    if not a.is_uma
][:6]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _one_share_short(folder: Path, day: date, account_id: str, lot_id: str | None) -> str:
    """The custodian's files of `day` made to hold one share less of a lot of the account
    (the first with more than one share, or `lot_id`); returns the lot's id."""
    lots_file = folder / BALLAST.file_name("lots.csv", day)
    positions_file = folder / BALLAST.file_name("positions.csv", day)
    lots, positions = _rows(lots_file), _rows(positions_file)
    changed = next(
        r
        for r in lots
        if r["account_id"] == account_id
        and (r["lot_id"] == lot_id if lot_id else Decimal(r["quantity"]) > 1)
    )
    changed["quantity"] = str(Decimal(changed["quantity"]) - 1)
    position = next(
        r for r in positions if (r["account_id"], r["symbol"]) == (account_id, changed["symbol"])
    )
    position["quantity"] = str(Decimal(position["quantity"]) - 1)
    _write_rows(lots_file, lots)
    _write_rows(positions_file, positions)
    return changed["lot_id"]


@pytest.fixture(scope="module")
def own_system(start_own_system: Any) -> Iterator[Any]:
    """The six services and the custodian simulator as processes of this module alone."""
    # the dashboard's exceptions routes reach this system's taxlot-svc
    env = {"REPORTING_SVC_TAXLOT_SVC_URL": f"http://127.0.0.1:{PORT_BASE + 4}"}
    with start_own_system("accept", PORT_BASE, env) as system:
        yield system


@dataclasses.dataclass
class Book:
    ballast: Ballast
    http: httpx.AsyncClient
    urls: Urls
    custodian: str
    first_day: date
    root: Path

    async def files(self, day: date) -> Path:
        """The custodian simulator's file set of a day, from its own book."""
        url = f"{self.urls.custodian}/files/{day}"
        written = await self.http.post(url, json={"root": str(self.root)})
        assert written.status_code == 201, written.text
        return Path(written.json()["folder"])

    async def reconcile(self, folder: Path, day: date) -> dict[str, Any]:
        """`ballast custodian reconcile`'s upload and apply, as operations of the tenant."""
        files = custodian.day_files(folder, BALLAST, folder.parent.name, day)
        outcome, _ = await custodian.reconcile_day(
            files, folder.parent.name, self.urls.taxlot, token=self.ballast.token()
        )
        assert not outcome.problems, outcome.problems
        return dict(outcome.applied["taxlot-svc"])


@pytest.fixture(scope="module")
async def book(own_system: Any) -> AsyncIterator[Book]:
    """The book loaded here and at the custodian; its first day reconciled (clean)."""
    urls = own_system.urls
    ballast = Ballast(urls, issuer_for_tests())
    http = httpx.AsyncClient(timeout=60, headers=bearer())
    try:
        await ballast.load_securities()
        for model in MODELS:
            await ballast.publish_model(_own(model))
        root = Path(os.environ.get("TMPDIR", "/tmp")) / f"accept-{os.getpid()}"
        await ballast.load_book(BOOK, root / "book")
        first_day = datetime.now(UTC).date()
        held = Book(ballast, http, urls, "", first_day, root / "custodian")
        folder = await held.files(first_day)
        held.custodian = folder.parent.name
        result = await held.reconcile(folder, first_day)
        assert result["breaks"] == NO_BREAKS, result
        assert result["accounts"] == len(BOOK)
        yield held
    finally:
        await http.aclose()
        await ballast.close()


async def test_a_break_accepted_on_the_dashboard_makes_the_ledger_the_custodians(
    book: Book, own_system: Any
) -> None:
    account_id = BOOK[0].account_id
    day = book.first_day + timedelta(days=1)
    folder = await book.files(day)
    lot_id = _one_share_short(folder, day, account_id, None)
    result = await book.reconcile(folder, day)
    assert result["breaks"] == NO_BREAKS | {"quantity": 1}, result
    assert result["accounts_held"] == 1

    ops = book.ballast.headers()
    listed = await book.http.get(
        f"{book.urls.reporting}/custodian/breaks",
        params={"account_id": account_id},
        headers=ops,
    )
    assert listed.status_code == 200, listed.text
    [found] = listed.json()["breaks"]
    assert (found["kind"], found["lot_id"], found["policy"]) == ("quantity", lot_id, "suspend")
    theirs = Decimal(found["theirs"]["quantity"])

    holds = await asyncpg.connect(own_system.database_url.replace("+asyncpg", ""))
    try:

        async def hold() -> str | None:
            return await holds.fetchval(
                "SELECT reason FROM rebalance.trading_holds WHERE account_id = $1", account_id
            )

        reason = await eventually("rebalance-svc holding the account", hold)
        assert reason.startswith(f"quantity break of lot {lot_id}")

        url = f"{book.urls.reporting}/custodian/breaks/{found['id']}/resolve"
        body = {"resolution": "accept-custodian", "note": "the custodian's count; ticket 7"}
        accepted = await book.http.post(url, json=body, headers=ops)
        assert accepted.status_code == 200, accepted.text
        answer = accepted.json()
        assert answer["account_released"] is True
        assert answer["resolved"]["resolved_by"] == "ops@demo"
        [entry] = answer["adjustments"]
        assert (entry["cause"], entry["kind"], Decimal(entry["quantity"])) == (
            f"reconciliation:{found['id']}",
            "lot-adjust",
            Decimal(-1),
        )
        again = await book.http.post(url, json=body, headers=ops)
        assert again.status_code == 409
        assert again.headers["content-type"] == "application/problem+json"

        # the ledger is the custodian's, and the new holdings reach reporting-svc
        lots = await book.http.get(f"{book.urls.taxlot}/accounts/{account_id}/lots", headers=ops)
        [lot] = [x for x in lots.json()["lots"] if x["lot_id"] == lot_id]
        assert Decimal(lot["quantity"]) == theirs

        async def reported() -> bool:
            page = await book.http.get(
                f"{book.urls.reporting}/accounts/{account_id}/lots", headers=ops
            )
            return any(
                x["lot_id"] == lot_id and Decimal(x["quantity"]) == theirs
                for x in page.json().get("lots", [])
            )

        await eventually("reporting-svc showing the custodian's figure", reported)

        async def released() -> bool:
            return await hold() is None

        await eventually("rebalance-svc releasing the account", released)
    finally:
        await holds.close()

    # the next day the custodian says the same: nothing to find
    next_day = day + timedelta(days=1)
    folder = await book.files(next_day)
    _one_share_short(folder, next_day, account_id, lot_id)
    result = await book.reconcile(folder, next_day)
    assert result["breaks"] == NO_BREAKS, result
    assert (result["accounts_held"], result["lots_compared"]) == (0, result["matched"])
