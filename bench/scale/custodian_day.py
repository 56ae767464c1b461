"""The custodian's day of a loaded book, for `make bench-custodian` (run by bench_scale.py
after its load stage): the book's files written as the custodian's daily file set (the
custodian holds exactly what the ledger holds), checked offline as `ballast custodian check`
does, then uploaded and reconciled lot by lot at taxlot-svc as `ballast custodian reconcile`
does. A clean day: every lot matches, no break."""

from __future__ import annotations

import csv
import resource
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

from ballast_cli.custodian import day_files, reconcile_day
from ballast_common.contracts.custodian_files import CASH, LOTS, POSITIONS, PRICES, TRANSACTIONS
from ballast_common.custodian_files import adapter_for, check_file_set
from ballast_common.custodian_files.writer import FileSetWriter

CUSTODIAN = "ballast"


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        yield from csv.DictReader(f)


def write_day(book: Path, root: Path, day: date) -> tuple[Path, dict[str, int]]:
    """The book folder's prices, cash, positions and lots as the custodian's file set for
    `day` (no transactions: the book is the day's close), in `root/<custodian>/<day>/`."""
    as_of = day.isoformat()
    writer = FileSetWriter(root / CUSTODIAN / as_of, day, adapter_for(CUSTODIAN))
    for row in _rows(book / "prices.csv"):
        writer.file(PRICES.name).write({"symbol": row["symbol"], "price": row["price"],
                                        "as_of": as_of})  # fmt: skip
    for row in _rows(book / "cash.csv"):
        writer.file(CASH.name).write({"account_id": row["account_id"], "amount": row["amount"],
                                      "as_of": as_of})  # fmt: skip
    for row in _rows(book / "positions.csv"):
        writer.file(POSITIONS.name).write({**row, "as_of": as_of})
    lots = writer.file(LOTS.name)
    for row in _rows(book / "lots.csv"):
        row.pop("sleeve_id", None)  # the custodian holds the account, not its sleeves
        lots.write({**row, "as_of": as_of})
    writer.file(TRANSACTIONS.name)
    return writer.folder, writer.finish()


async def measure(
    book: Path, root: Path, day: date, taxlot_url: str, token: str, step_times: Callable[[], Any]
) -> dict[str, Any]:
    """Write, check and reconcile the day; seconds of each, the day's summary and breaks.
    `step_times()`: a load Reporter keeping each step's end, in seconds from its making, in
    `ends` (made as the upload starts)."""
    started = time.monotonic()
    folder, rows = write_day(book, root, day)
    written = time.monotonic()
    cpu = time.process_time()
    report = check_file_set(folder, adapter_for(CUSTODIAN), day)
    checked = time.monotonic()
    if not report.valid:
        raise SystemExit(f"bench-custodian: the day's files are not valid: {report.as_dict()}")
    check_cpu = time.process_time() - cpu
    steps = step_times()
    outcome, breaks = await reconcile_day(
        day_files(folder, adapter_for(CUSTODIAN), CUSTODIAN, day),
        CUSTODIAN,
        taxlot_url,
        token=token,
        reporter=steps,
    )
    done = time.monotonic()
    if outcome.problems:
        raise SystemExit(f"bench-custodian: taxlot-svc refused the day: {outcome.problems[:5]}")
    applying = next((s for s in steps.ends if s.startswith("applying")), None)
    ingest_s = steps.ends.get(applying, 0.0) if applying else 0.0
    checks_end = max((v for k, v in steps.ends.items() if k != applying), default=0.0)
    return {
        "rows": rows,
        "write_files_s": round(written - started, 2),
        "check_offline_s": round(checked - written, 2),
        "check_offline_cpu_s": round(check_cpu, 2),
        "check_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        # ingest: upload, staging and every row's checks at taxlot-svc; reconcile: the apply,
        # lot by lot against the ledger, breaks kept, holds published
        "ingest_s": round(checks_end, 2),
        "reconcile_s": round(ingest_s - checks_end, 2),
        "upload_to_reconciled_s": round(done - checked, 2),
        "lots_per_s": round(rows.get(LOTS.name, 0) / max(done - checked, 1e-9)),
        "steps_s": steps.ends,
        "summary": outcome.applied.get("taxlot-svc", {}),
        "breaks_shown": breaks[:5],
    }
