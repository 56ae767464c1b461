"""`ballast custodian watch ROOT`: the custodians' inbox, watched (docs/custodian-files.md,
*The inbox*).

Every interval, each folder `ROOT/<custodian>/<YYYY-MM-DD>/` is looked at (a `stat` of its
files, nothing read): a set whose files have not changed for `--settle` seconds is checked
(`ballast custodian check`'s validation), then uploaded and reconciled at taxlot-svc
(`ballast custodian reconcile`'s client). What was done is kept in the folder, so a restart
picks up where it stopped: an applied set gets `.ballast-inbox.json` (its load id and the
files' sizes and times; the same files are not looked at again, and a set dropped again with
the same content is recognised by its digest and ignored); a refused set is reported to
taxlot-svc as an exception (`POST /custodian-days/exceptions`, which holds the custodian's
accounts from trading) and moved aside to `ROOT/.rejected/<custodian>/<date>-<time>/` with
its report.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
from ballast_common.custodian_files import Report, adapter_for, check_file_set

from ballast_cli.book import BookLoadError
from ballast_cli.custodian import (
    TAXLOT,
    day_files,
    keep_originals,
    reconcile_day,
    render,
)
from ballast_cli.retrying import DEFAULT_RETRY, RetryPolicy

STATE_FILE = ".ballast-inbox.json"
REJECTED = ".rejected"
EXCEPTIONS_ROUTE = "/custodian-days/exceptions"
PROBLEMS_REPORTED = 50

Fingerprint = list[tuple[str, int, int]]  # (file name, size, mtime in ns)


@dataclass(frozen=True)
class InboxEvent:
    """What one scan did with one day folder."""

    custodian: str
    folder: str
    outcome: str  # reconciled | ignored | rejected | failed
    detail: str
    load_id: str | None = None

    def __str__(self) -> str:
        return f"{self.custodian} {Path(self.folder).name}: {self.outcome}: {self.detail}"


def fingerprint(folder: Path) -> Fingerprint:
    """The set's files (not our own dotfiles) by name, size and modification time."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stat = path.stat()
        found.append((path.name, stat.st_size, stat.st_mtime_ns))
    return found


def _state(folder: Path) -> dict[str, Any] | None:
    try:
        found = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _write_state(folder: Path, files: Fingerprint, load_id: str, result: dict[str, Any]) -> None:
    state = {
        "load_id": load_id,
        "files": [list(f) for f in files],
        "result": result,
        "at": datetime.now(UTC).isoformat(),
    }
    temporary = folder / (STATE_FILE + ".tmp")
    temporary.write_text(json.dumps(state, indent=2, default=str))
    temporary.replace(folder / STATE_FILE)


def _business_date(name: str) -> date | None:
    try:
        return date.fromisoformat(name) if len(name) == 10 else None
    except ValueError:
        return None


def exception_kind(report: Report) -> str:
    """What a refused set is for operations: `empty` (a file without even a header, or no
    files), `truncated` (fewer rows than the manifest says, a file it lists absent, a digest
    that differs) or `invalid` (rows refused)."""
    whole_file = [p.message for p in report.problems if p.line == 0]
    if any(m.startswith("is empty") for m in whole_file) or not any(
        f.present for f in report.files.values()
    ):
        return "empty"
    if any("truncated" in m or m.startswith("is missing (the manifest") for m in whole_file):
        return "truncated"
    return "invalid"


class Inbox:
    """One scan of the inbox at a time; taxlot-svc reached with `http` at `taxlot_url`."""

    def __init__(
        self,
        root: Path,
        http: httpx.AsyncClient,
        taxlot_url: str,
        *,
        settle_s: float = 60.0,
        clock: Callable[[], float] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self.root = root
        self.http = http
        self.taxlot_url = taxlot_url.rstrip("/")
        self.settle_s = settle_s
        self.clock = clock or (lambda: datetime.now(UTC).timestamp())
        self.retry = retry

    def day_folders(self) -> list[tuple[str, Path]]:
        """Every `<custodian>/<day>/` folder of the inbox (names starting with a dot are ours)."""
        found = []
        for custodian in sorted(self.root.iterdir()):
            if custodian.name.startswith(".") or not custodian.is_dir():
                continue
            for day in sorted(custodian.iterdir()):
                if not day.name.startswith(".") and day.is_dir():
                    found.append((custodian.name, day))
        return found

    async def scan(self) -> list[InboxEvent]:
        """Take every day folder that is new or changed and has settled."""
        events = []
        for custodian, folder in self.day_folders():
            files = fingerprint(folder)
            if not files:
                continue  # nothing delivered yet (a missing day is the monitor's)
            state = _state(folder)
            if state is not None and [tuple(f) for f in state.get("files", [])] == files:
                continue  # taken already
            newest = max(mtime for _, _, mtime in files) / 1e9
            if self.clock() - newest < self.settle_s:
                continue  # still arriving
            try:
                events.append(await self.take(custodian, folder, files))
            except (BookLoadError, httpx.HTTPError, OSError) as exc:
                detail = f"{exc} (left in place; tried again next scan)"
                events.append(InboxEvent(custodian, str(folder), "failed", detail))
        return events

    async def take(self, custodian: str, folder: Path, files: Fingerprint) -> InboxEvent:
        """Check one day's set, then reconcile it, ignore it (applied already) or refuse it."""
        day = _business_date(folder.name)
        if day is None:
            note = f"{folder.name!r} is not a business date (YYYY-MM-DD)"
            moved = self.move_aside(custodian, folder, folder.name, note, None)
            return InboxEvent(custodian, str(folder), "rejected", f"{note}; moved to {moved}")
        try:
            adapter = adapter_for(custodian)
        except KeyError as exc:
            return await self.refuse(custodian, folder, day, "invalid", str(exc.args[0]), [])
        report = await asyncio.to_thread(check_file_set, folder, adapter, day, custodian=custodian)
        if not report.valid:
            kind = exception_kind(report)
            detail = f"{report.problem_count:,} problem(s), first: {report.problems[0]}"
            problems = [str(p) for p in report.problems[:PROBLEMS_REPORTED]]
            return await self.refuse(custodian, folder, day, kind, detail, problems, report)
        load = day_files(folder, adapter, custodian, day)
        done = await self.reconciled_load(custodian, day)
        if done is not None and done != load.load_id:
            detail = f"a different file set for a day reconciled already (by load {done})"
            return await self.refuse(custodian, folder, day, "invalid", detail, [])
        outcome, _ = await reconcile_day(
            load, custodian, self.taxlot_url, token="", retry=self.retry, http=self.http
        )
        if outcome.problems:
            problems = [
                f"{p['file']}:{p['line']} {p['column']}: {p['message']}" for p in outcome.problems
            ]
            detail = f"taxlot-svc refused {len(problems)} row(s), first: {problems[0]}"
            return await self.refuse(
                custodian, folder, day, "invalid", detail, problems[:PROBLEMS_REPORTED]
            )
        result = outcome.applied[TAXLOT]
        _write_state(folder, files, load.load_id, result)
        if result.get("repeated"):
            what = f"applied before (load {load.load_id}); ignored"
            return InboxEvent(custodian, str(folder), "ignored", what, load.load_id)
        breaks = sum(result.get("breaks", {}).values())
        what = (
            f"reconciled (load {load.load_id}): {result.get('accounts', 0):,} accounts, "
            f"{breaks:,} break(s), {result.get('accounts_held', 0):,} held"
        )
        return InboxEvent(custodian, str(folder), "reconciled", what, load.load_id)

    async def reconciled_load(self, custodian: str, day: date) -> str | None:
        """The load that reconciled this custodian's day at taxlot-svc, if one did."""
        url = f"{self.taxlot_url}/reconciliations/{custodian}/{day.isoformat()}"
        response = await self.http.get(url)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BookLoadError(f"{TAXLOT} answered {response.status_code} for {url}")
        return str(response.json()["load_id"])

    async def refuse(
        self,
        custodian: str,
        folder: Path,
        day: date,
        kind: str,
        detail: str,
        problems: list[str],
        report: Report | None = None,
    ) -> InboxEvent:
        """Keep the refused set's files at taxlot-svc, report it (an exception), then move it
        aside."""
        await keep_originals(self.http, self.taxlot_url, folder, custodian, day)
        body = {
            "custodian": custodian,
            "business_date": day.isoformat(),
            "kind": kind,
            "detail": detail[:2000],
            "problems": [p[:1000] for p in problems[:PROBLEMS_REPORTED]],
        }
        response = await self.http.post(f"{self.taxlot_url}{EXCEPTIONS_ROUTE}", json=body)
        if response.status_code != 201:
            raise BookLoadError(
                f"{TAXLOT} answered {response.status_code} to the exception: {response.text}"
            )
        exception = response.json()
        text = "\n".join(render(report)) if report is not None else f"{kind}: {detail}"
        moved = self.move_aside(custodian, folder, day.isoformat(), text, exception)
        what = f"{kind} (exception {exception['id']}): {detail}; moved to {moved}"
        return InboxEvent(custodian, str(folder), "rejected", what)

    def move_aside(
        self, custodian: str, folder: Path, name: str, report: str, exception: Any
    ) -> Path:
        """Move a refused set to `ROOT/.rejected/<custodian>/<name>-<time>/` with its report."""
        stamp = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.root / REJECTED / custodian / f"{name}-{stamp}"
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.root / REJECTED / custodian / f"{name}-{stamp}-{suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))
        (target / "ballast-report.txt").write_text(report + "\n")
        if exception is not None:
            (target / "ballast-exception.json").write_text(json.dumps(exception, indent=2))
        return target


def print_events(events: list[InboxEvent]) -> None:
    for event in events:
        stream = sys.stderr if event.outcome == "failed" else sys.stdout
        print(f"{datetime.now(UTC):%H:%M:%S} {event}", file=stream, flush=True)
