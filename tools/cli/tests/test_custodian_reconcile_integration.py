"""`ballast custodian reconcile DIR`: the check first (an invalid set is never uploaded), then
the day's files, converted to the canonical columns while they stream, reconciled by an
in-process taxlot-svc on the real PostgreSQL."""

from __future__ import annotations

import csv
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from ballast_cli import custodian
from ballast_cli.main import main
from ballast_common.auth import Role
from ballast_common.custodian_files import NORTHWIND
from ballast_common.custodian_files.generator import generate
from ballast_common.db import Database
from ballast_common.testing import api_client, migrated_database
from ballast_engine.commands import EXIT_PROBLEMS
from taxlot_svc.main import spec

pytestmark = pytest.mark.integration

URL = "http://taxlot-svc"


@pytest.fixture(scope="module")
async def taxlot(database_url: str) -> AsyncIterator[Database]:
    db = await migrated_database(spec, database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def operations(taxlot: Database) -> AsyncIterator[httpx.AsyncClient]:
    """taxlot-svc in process, called by operations of a tenant of this test alone."""
    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    async with api_client(spec, taxlot, tenant=tenant, roles=[Role.OPERATIONS]) as client:
        yield client


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_set_with_problems_is_refused_before_anything_is_sent(tmp_path, capsys):
    made = generate(tmp_path, accounts=3, seed=4, breaks=("lot_sum",))
    with pytest.raises(SystemExit) as exit_:
        # nothing listens on port 5: an upload would be exit 3
        main(["custodian", "reconcile", str(made.folder), "--port-base", "1", "--token", "t"])
    assert exit_.value.code == EXIT_PROBLEMS
    err = capsys.readouterr().err
    assert "problem(s) in the file set; nothing was uploaded" in err


def test_a_custodians_own_format_streams_as_canonical_csv(tmp_path):
    made = generate(tmp_path, accounts=2, seed=5, custodian="northwind", adapter=NORTHWIND)
    day = made.business_date
    path = made.folder / NORTHWIND.file_name("lots.csv", day)
    text = b"".join(custodian.canonical_chunks(path, NORTHWIND, "lots.csv")).decode()
    header, first = text.splitlines()[:2]
    assert header.split(",")[:3] == ["account_id", "symbol", "lot_id"]
    assert first.split(",")[-1] == day.isoformat()  # MM/DD/YYYY made ISO
    raw = rows(path)
    assert len(text.splitlines()) == len(raw) + 1


async def test_a_day_is_uploaded_and_reconciled_once(
    tmp_path: Path, operations: httpx.AsyncClient
) -> None:
    made = generate(tmp_path, accounts=3, seed=6, custodian="northwind", adapter=NORTHWIND)
    day = made.business_date
    files = custodian.day_files(made.folder, NORTHWIND, "northwind", day)
    assert files.load_id.startswith(f"northwind-{day.isoformat()}-")

    outcome, first = await custodian.reconcile_day(
        files, "northwind", URL, token="", http=operations
    )
    assert not outcome.problems, outcome.problems
    result = outcome.applied["taxlot-svc"]
    lots = rows(made.folder / NORTHWIND.file_name("lots.csv", day))
    # the tenant has no ledger of these accounts: every lot is extra, every account's cash
    assert result["lots_compared"] == len(lots) and result["matched"] == 0
    assert result["breaks"]["extra"] == len(lots) and result["breaks"]["cash"] == 3
    assert result["breaks"]["missing"] == 0
    extra = next(b for b in first if b["kind"] == "extra")
    theirs = next(
        r for r in lots if (r["AcctNo"], r["LotRef"]) == (extra["account_id"], extra["lot_id"])
    )
    assert Decimal(extra["theirs"]["quantity"]) == abs(Decimal(theirs["Qty"]))
    text = "\n".join(custodian.render_reconciliation(outcome, first))
    assert f"extra {len(lots)}" in text and "first breaks:" in text

    again, _ = await custodian.reconcile_day(files, "northwind", URL, token="", http=operations)
    repeated = again.applied["taxlot-svc"]
    assert repeated["repeated"] is True and repeated["breaks"] == result["breaks"]
    assert "reconciled before" in "\n".join(custodian.render_reconciliation(again, []))


def test_the_command_sends_the_checked_day_to_the_taxlot_url_given(tmp_path, capsys, monkeypatch):
    made = generate(tmp_path, accounts=2, seed=7)
    sent = {}

    async def reconcile_day(files, name, url, *, token, retry, **_):
        sent.update(load_id=files.load_id, custodian=name, url=url, token=token)
        summary = {"custodian": name, "business_date": str(files.as_of), "accounts": 2}
        summary |= {"lots_compared": 5, "matched": 4, "accounts_with_breaks": 1}
        summary["breaks"] = {"missing": 1, "extra": 0}
        return custodian.Outcome(files.load_id, applied={"taxlot-svc": summary}), []

    monkeypatch.setattr(custodian, "reconcile_day", reconcile_day)
    argv = ["custodian", "reconcile", str(made.folder), "--taxlot-url", URL, "--token", "tok"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    day = made.business_date.isoformat()
    assert sent["url"] == URL and sent["token"] == "tok" and sent["custodian"] == "ballast"
    assert sent["load_id"].startswith(f"ballast-{day}-")
    out = capsys.readouterr().out
    assert "lots compared 5, matched 4" in out and "missing 1, extra 0" in out
