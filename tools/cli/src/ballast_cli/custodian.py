"""`ballast custodian check DIR`: check a custodian's daily file set (docs/custodian-files.md)
offline, with the same validation the ingest runs, and print the report.
`ballast custodian reconcile DIR`: the same check, then the day's positions, lots and cash
(converted to the canonical columns while they stream) uploaded to taxlot-svc and reconciled
against its ledger (with `ballast book load`'s client), and the summary printed.
`ballast custodian watch ROOT`: the same for every day folder dropped in an inbox, by itself
(`ballast_cli.custodian_inbox`).

DIR is `<custodian>/<YYYY-MM-DD>/`: the custodian's name picks its adapter, the folder's name
is the business date (`--custodian`, `--format` and `--date` override them). Exit status 0:
the set is valid; 1: it has problems (each named by file, line, column and reason); 2: a
wrong argument or a folder that cannot be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import io
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx
from ballast_common.auth import Role
from ballast_common.contracts.custodian_files import BY_NAME
from ballast_common.custodian_files import (
    ADAPTERS,
    CustodianFormat,
    Problem,
    Report,
    adapter_for,
    check_file_set,
    read_lot_keys,
)
from ballast_engine.commands import EXIT_OK, EXIT_PROBLEMS, CommandError, error, runs

from ballast_cli.book import (
    BookLoader,
    BookLoadError,
    FileSet,
    Outcome,
    Reporter,
    service_urls,
)
from ballast_cli.book import _lines as problem_lines
from ballast_cli.credentials import TOKEN_ENV, authorization, bearer_token
from ballast_cli.retrying import DEFAULT_RETRY, RetryPolicy

SHOWN_PER_FILE = 20
RECONCILED_FILES = ("cash.csv", "positions.csv", "lots.csv")  # what taxlot-svc reconciles
# what a day's load uploads: the reconciled files and those the ingest applies first
# (corporate_actions.csv when the set has it)
UPLOADED_FILES = (*RECONCILED_FILES, "transactions.csv", "prices.csv", "corporate_actions.csv")
DAYS_ROUTE = "/custodian-days"
OWN_FILES = ("ballast-report.txt", "ballast-exception.json")  # the watcher's, in .rejected/
TAXLOT = "taxlot-svc"
BREAKS_SHOWN = 20
CONVERT_ROWS = 10_000  # rows per chunk of a converted file
PROGRESS_BYTES = 8 << 20  # files larger than this get a progress line
PROGRESS_EVERY_S = 1.0


class ProgressLine:
    """A progress line on stderr for large files: a line rewritten in place on a terminal,
    a line every few seconds otherwise."""

    def __init__(self, out: TextIO = sys.stderr, every_s: float = PROGRESS_EVERY_S) -> None:
        self.out = out
        self.every_s = every_s
        self.last = 0.0
        self.tty = out.isatty()

    def __call__(self, name: str, done: int, total: int, rows: int) -> None:
        if total < PROGRESS_BYTES:
            return
        now = time.monotonic()
        finished = done >= total
        if not finished and now - self.last < (self.every_s if self.tty else 5 * self.every_s):
            return
        self.last = now
        percent = 100 * done // max(total, 1)
        text = f"checking {name}: {percent}% ({rows:,} rows)"
        if self.tty:
            self.out.write("\r" + text.ljust(60) + ("\n" if finished else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


def symbols_of(path: Path) -> set[str]:
    """The symbols the security master knows, from a CSV file with a `symbol` column (a book's
    securities.csv, an export of the security master)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = csv.reader(f)
            header = [h.strip().lower() for h in next(rows, [])]
            if "symbol" not in header:
                raise CommandError(f"{path}: no 'symbol' column in its first line")
            at = header.index("symbol")
            return {row[at].strip() for row in rows if len(row) > at and row[at].strip()}
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror})") from None


def _date_of(folder: Path, given: date | None) -> date:
    if given is not None:
        return given
    name = folder.resolve().name
    try:
        return date.fromisoformat(name) if len(name) == 10 else _no_date(folder)
    except ValueError:
        return _no_date(folder)


def _no_date(folder: Path) -> date:
    raise CommandError(
        f"{folder}: name the folder by its business date (YYYY-MM-DD) or give --date"
    )


def _adapter(custodian: str, format_name: str | None) -> CustodianFormat:
    try:
        return adapter_for(format_name or custodian)
    except KeyError as exc:
        raise CommandError(f"{exc.args[0]}; give --format") from None


def check_folder(args: argparse.Namespace) -> Report:
    """The report of the file set the arguments name (CommandError: it cannot be checked)."""
    folder: Path = args.folder
    if not folder.is_dir():
        raise CommandError(f"{folder} is not a folder (a file set is <custodian>/<YYYY-MM-DD>/)")
    business_date = _date_of(folder, args.date)
    custodian = args.custodian or folder.resolve().parent.name
    adapter = _adapter(custodian, args.format)
    known = symbols_of(args.securities) if args.securities else None
    previous = None
    if args.previous is not None:
        if not args.previous.is_dir():
            raise CommandError(f"{args.previous} is not a folder")
        try:
            previous = read_lot_keys(args.previous, adapter, _date_of(args.previous, None))
        except (OSError, ValueError) as exc:
            raise CommandError(f"--previous: {exc}") from None
    return check_file_set(
        folder,
        adapter,
        business_date,
        custodian=custodian,
        known_symbols=known,
        previous_lots=previous,
        progress=None if args.json else ProgressLine(),
        limit=max(args.limit, 1),
    )


def render(report: Report, shown_per_file: int = SHOWN_PER_FILE) -> Iterable[str]:
    """The report for people: each file's counts, then its problems, a few of each file."""
    state = "valid" if report.valid else f"{report.problem_count:,} problem(s)"
    yield (
        f"{report.custodian} {report.business_date.isoformat()} ({report.adapter} format), "
        f"{report.folder}: {state}"
    )
    yield ""
    yield f"  {'file':<28} {'rows':>11} {'manifest':>11} {'bytes':>13} {'problems':>9}"
    for f in report.files.values():
        manifest = "-" if f.manifest_rows is None else f"{f.manifest_rows:,}"
        rows = f"{f.rows:,}" if f.present else "missing"
        yield f"  {f.name:<28} {rows:>11} {manifest:>11} {f.size:>13,} {f.problems:>9,}"
    by_file: dict[str, list[Problem]] = {}
    for p in report.problems:
        by_file.setdefault(p.file, []).append(p)
    counted = {f.name: f.problems for f in report.files.values()}
    for name, problems in by_file.items():
        yield ""
        yield f"{name}:"
        problems.sort(key=lambda p: p.line)
        for p in problems[:shown_per_file]:
            yield f"  {p}"
        more = (counted.get(name) or len(problems)) - min(len(problems), shown_per_file)
        if more > 0:
            yield f"  ... and {more:,} more"
    kept = len(report.problems)
    if report.problem_count > kept:
        yield ""
        yield f"(only the first {kept:,} problems were kept; --limit keeps more)"
    if report.securities_checked:
        yield ""
        unknown = list(report.unknown_securities.values())
        if unknown:
            yield f"unknown securities ({len(unknown)}), for the security master:"
            for u in unknown[:shown_per_file]:
                yield f"  {u.symbol} first in {u.first_seen} ({u.rows:,} row(s))"
            if len(unknown) > shown_per_file:
                yield f"  ... and {len(unknown) - shown_per_file:,} more"
        else:
            yield "unknown securities: none"
    if report.unverified_lot_references:
        yield ""
        yield (
            f"{report.unverified_lot_references:,} lot(s) relieved today are not in today's "
            "lots and were not checked against the lots known before (--previous DIR)"
        )


# --- reconcile: upload the day to taxlot-svc ------------------------------------------------


def canonical_chunks(path: Path, adapter: CustodianFormat, canonical: str) -> Iterator[bytes]:
    """A custodian's file as canonical CSV (its present columns, values adapted), a chunk of
    rows at a time. For a file set that passed the check: a row it cannot convert raises."""
    file = BY_NAME[canonical]
    names = adapter.header_names(canonical)
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, strict=True)
        header = [names[h.strip().lower()] for h in next(rows)]
        at = {name: i for i, name in enumerate(header)}
        order = [at.get(c.name, -1) for c in file.columns]
        present = frozenset(header)
        shown = [i for i, c in enumerate(file.columns) if c.name in present]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([file.columns[i].name for i in shown])
        for count, row in enumerate(rows, start=1):
            if not row:
                continue
            values = [row[i] if i >= 0 else "" for i in order]
            problems = adapter.adapt(file, values, present)
            if problems:
                raise CommandError(f"{path}:{rows.line_num}: {problems[0][0]} {problems[0][1]}")
            writer.writerow([values[i] for i in shown])
            if count % CONVERT_ROWS == 0:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()


def day_files(folder: Path, adapter: CustodianFormat, custodian: str, day: date) -> FileSet:
    """The day's files as a load of taxlot-svc: canonical names, converted where the
    custodian's format is not the canonical one; the load id names the custodian, the date
    and a digest of the files."""
    paths = {name: folder / adapter.file_name(name, day) for name in UPLOADED_FILES}
    paths = {n: p for n, p in paths.items() if n in RECONCILED_FILES or p.exists()}
    digest = hashlib.sha256(f"{custodian}/{day.isoformat()}".encode())
    for name, path in paths.items():
        digest.update(name.encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    converted: dict[str, Callable[[], Iterator[bytes]]] = {
        name: partial(canonical_chunks, path, adapter, name)
        for name, path in paths.items()
        if not adapter.is_identity(name)
    }
    load_id = f"{custodian}-{day.isoformat()}-{digest.hexdigest()[:16]}"
    if len(load_id) > 64:
        raise CommandError(f"the custodian's name {custodian!r} is too long (at most 35 chars)")
    return FileSet(folder, day, paths, load_id, converted)


async def reconcile_day(
    files: FileSet,
    custodian: str,
    taxlot_url: str,
    *,
    token: str,
    reporter: Reporter | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
    http: httpx.AsyncClient | None = None,
) -> tuple[Outcome, list[dict[str, Any]]]:
    """Upload and reconcile a custodian's day at taxlot-svc (`http`: a client of its own, e.g.
    over an in-process app); returns the outcome and the day's first breaks."""
    if http is None:
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=10.0), headers=authorization(token)
        ) as client:
            return await reconcile_day(
                files,
                custodian,
                taxlot_url,
                token=token,
                reporter=reporter,
                retry=retry,
                http=client,
            )
    loader = BookLoader(
        {TAXLOT: taxlot_url},
        http,
        reporter or Reporter(),
        retry,
        route=DAYS_ROUTE,
        services=(TAXLOT,),
        files_of=lambda _: UPLOADED_FILES,
    )
    await keep_originals(http, taxlot_url, files.folder, custodian, files.as_of)
    outcome = await loader.load(files)
    if outcome.problems:
        return outcome, []
    result = outcome.applied[TAXLOT]
    params = {
        "custodian": custodian,
        "business_date": files.as_of.isoformat(),
        "limit": BREAKS_SHOWN,
    }
    if result.get("repeated") and "breaks" not in result:
        summary = await http.get(f"{taxlot_url}/reconciliations/{custodian}/{files.as_of}")
        if summary.status_code == 200:
            outcome.applied[TAXLOT] = {**summary.json(), "repeated": True}
    page = await http.get(f"{taxlot_url}/breaks", params=params)
    if page.status_code != 200:
        raise BookLoadError(f"{TAXLOT} answered {page.status_code} for the day's breaks")
    return outcome, list(page.json()["breaks"])


def manifest_digests(folder: Path, custodian: str, day: date) -> dict[str, str]:
    """File name -> the SHA-256 the set's manifest gives it (none when it cannot be read)."""
    try:
        adapter = adapter_for(custodian)
        path = folder / adapter.file_name("manifest.csv", day)
        canonical = b"".join(canonical_chunks(path, adapter, "manifest.csv")).decode()
        rows = csv.DictReader(io.StringIO(canonical))
        return {r["file"]: r["sha256"].lower() for r in rows if r.get("file") and r.get("sha256")}
    except (KeyError, OSError, ValueError, CommandError, csv.Error):
        return {}


async def keep_originals(
    http: httpx.AsyncClient, taxlot_url: str, folder: Path, custodian: str, day: date
) -> int:
    """Every file of a day's folder, as delivered, kept by taxlot-svc for audit (with the
    digest the manifest gives it); the watcher's own files (names starting with a dot) and
    its reports are not the custodian's. Returns how many were sent."""
    digests = manifest_digests(folder, custodian, day)
    sent = 0
    for path in delivered_files(folder):
        params = {"manifest_sha256": digests[path.name]} if path.name in digests else {}
        url = f"{taxlot_url}{DAYS_ROUTE}/{custodian}/{day.isoformat()}/files/{path.name}"
        response = await http.put(url, content=_file_chunks(path), params=params)
        if response.status_code not in (200, 201):
            raise BookLoadError(
                f"{TAXLOT} answered {response.status_code} keeping {path.name}: {response.text}"
            )
        sent += 1
    return sent


def delivered_files(folder: Path) -> list[Path]:
    """The custodian's files of a day's folder (not the watcher's own)."""
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.name not in OWN_FILES
    ]


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def render_reconciliation(outcome: Outcome, first: list[dict[str, Any]]) -> Iterable[str]:
    """The day's summary for people: counts, breaks by kind, the first breaks."""
    r = outcome.applied[TAXLOT]
    again = " (reconciled before; not applied again)" if r.get("repeated") else ""
    yield f"{r['custodian']} {r['business_date']}: load {outcome.load_id}{again}"
    yield (
        f"  accounts {r['accounts']:,}, lots compared {r['lots_compared']:,}, "
        f"matched {r['matched']:,}, accounts with breaks {r['accounts_with_breaks']:,}"
    )
    breaks = r["breaks"]
    yield "  breaks: " + ", ".join(f"{kind} {n:,}" for kind, n in breaks.items())
    if first:
        yield ""
        yield "first breaks:"
        for b in first:
            where = " ".join(x for x in (b["account_id"], b["symbol"], b["lot_id"]) if x)
            sides = f"ours {b['ours']}, theirs {b['theirs']}"
            yield f"  {b['kind']:<9} {where}: {sides} -> {b['policy']}"
        total = sum(breaks.values())
        if total > len(first):
            yield f"  ... and {total - len(first):,} more (GET /breaks)"


# --- the command --------------------------------------------------------------------------


def register(areas: argparse._SubParsersAction) -> None:
    custodian = areas.add_parser("custodian", help="the custodian's daily files")
    cmds = custodian.add_subparsers(dest="custodian_cmd", metavar="COMMAND", required=True)
    check = cmds.add_parser(
        "check",
        help="check a custodian's daily file set offline",
        description="Check a custodian's daily file set (docs/custodian-files.md) with the "
        "ingest's validation and print the report: exit 0 valid, 1 problems found, 2 a "
        "folder that cannot be checked.",
    )
    check.add_argument("folder", metavar="DIR", type=Path, help="e.g. custodian/ballast/2026-12-04")
    check.add_argument("--date", type=date.fromisoformat, help="default: the folder's name")
    check.add_argument("--custodian", help="default: the name of DIR's parent folder")
    check.add_argument(
        "--format",
        choices=sorted(ADAPTERS),
        help="the adapter to read the files with (default: the custodian's)",
    )
    check.add_argument(
        "--securities",
        type=Path,
        metavar="FILE",
        help="a CSV with a symbol column: the securities known (others are reported as "
        "unknown securities)",
    )
    check.add_argument(
        "--previous",
        type=Path,
        metavar="DIR",
        help="the previous business day's folder: the lots a sell may relieve",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument(
        "--limit", type=int, default=1000, help="problems kept in the report (default 1000)"
    )
    runs(check, _run_check)
    reconcile = cmds.add_parser(
        "reconcile",
        help="check a custodian's day, then reconcile it against taxlot-svc's ledger",
        description="Check a custodian's daily file set as `check` does (an invalid set is "
        "refused: exit 1), then upload its positions, lots and cash to taxlot-svc, which "
        "compares them lot by lot with its ledger and keeps every break; print the summary.",
    )
    reconcile.add_argument(
        "folder", metavar="DIR", type=Path, help="e.g. custodian/ballast/2026-12-04"
    )
    reconcile.add_argument("--date", type=date.fromisoformat, help="default: the folder's name")
    reconcile.add_argument("--custodian", help="default: the name of DIR's parent folder")
    reconcile.add_argument("--format", choices=sorted(ADAPTERS), help="default: the custodian's")
    reconcile.add_argument(
        "--previous", type=Path, metavar="DIR", help="the previous business day's folder"
    )
    _taxlot_connection(reconcile)
    runs(reconcile, _run_reconcile)
    watch = cmds.add_parser(
        "watch",
        help="watch the custodians' inbox: each day's set checked and reconciled as it arrives",
        description="Every --interval seconds, look at ROOT/<custodian>/<YYYY-MM-DD>/: a set "
        "whose files have settled is checked, then reconciled at taxlot-svc (a set applied "
        "before is ignored); a refused set is reported to taxlot-svc as an exception and moved "
        "to ROOT/.rejected/ with its report. What was done is kept in the folders.",
    )
    watch.add_argument("root", metavar="ROOT", type=Path, help="the inbox, e.g. custodian/")
    watch.add_argument(
        "--interval", type=float, default=60.0, metavar="SECONDS",
        help="seconds between two scans (default 60)",
    )  # fmt: skip
    watch.add_argument(
        "--settle", type=float, default=60.0, metavar="SECONDS",
        help="a set is taken once its files have not changed for this long (default 60)",
    )  # fmt: skip
    watch.add_argument("--once", action="store_true", help="scan once and exit")
    _taxlot_connection(watch)
    runs(watch, _run_watch)


def _taxlot_connection(parser: argparse.ArgumentParser) -> None:
    """Where taxlot-svc is and who calls it: the options `reconcile` and `watch` share."""
    parser.add_argument(
        "--token", help=f"bearer token (default: ${TOKEN_ENV}; locally, one for --tenant)"
    )
    parser.add_argument("--tenant", default="demo", help="the firm, for a local token")
    parser.add_argument("--taxlot-url", metavar="URL", dest="taxlot_svc")
    parser.add_argument(
        "--port-base", type=int, default=8000, help="taxlot-svc on PORT_BASE+4 (default 8000)"
    )
    parser.add_argument(
        "--retry-for", type=float, default=60.0, metavar="SECONDS",
        help="how long to retry a restarting taxlot-svc (default 60)",
    )  # fmt: skip


def _run_watch(args: argparse.Namespace) -> int:
    from ballast_cli.custodian_inbox import Inbox, print_events

    if not args.root.is_dir():
        raise CommandError(f"{args.root} is not a folder (the inbox: ROOT/<custodian>/<date>/)")
    if args.interval <= 0 or args.settle < 0:
        raise CommandError("--interval must be above 0 and --settle not below 0")
    url = service_urls(args.port_base, **{TAXLOT: args.taxlot_svc})[TAXLOT]
    retry = RetryPolicy(budget_s=max(0.0, args.retry_for))

    async def watch() -> None:
        quiet = False
        while True:
            # a token per scan: a local one expires, the watcher does not
            token = bearer_token(args.token, args.tenant, Role.OPERATIONS, quiet=quiet)
            quiet = True
            async with httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=10.0), headers=authorization(token)
            ) as http:
                inbox = Inbox(args.root, http, url, settle_s=args.settle, retry=retry)
                print_events(await inbox.scan())
            if args.once:
                return
            await asyncio.sleep(args.interval)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch())
    return EXIT_OK


def _run_reconcile(args: argparse.Namespace) -> int:
    args.securities, args.json, args.limit = None, False, 1000
    report = check_folder(args)
    if not report.valid:
        for line in render(report):
            print(line)
        error(args, f"{report.problem_count:,} problem(s) in the file set; nothing was uploaded")
        return EXIT_PROBLEMS
    adapter = _adapter(report.custodian, args.format)
    files = day_files(args.folder, adapter, report.custodian, report.business_date)
    url = service_urls(args.port_base, **{TAXLOT: args.taxlot_svc})[TAXLOT]
    token = bearer_token(args.token, args.tenant, Role.OPERATIONS)
    retry = RetryPolicy(budget_s=max(0.0, args.retry_for))
    outcome, first = asyncio.run(
        reconcile_day(files, report.custodian, url, token=token, retry=retry)
    )
    if outcome.problems:
        more = "+" if outcome.truncated else ""
        error(
            args,
            f"{len(outcome.problems)}{more} problem(s); nothing was reconciled:\n"
            + problem_lines(outcome.problems),
        )
        return EXIT_PROBLEMS
    for line in render_reconciliation(outcome, first):
        print(line)
    return EXIT_OK


def _run_check(args: argparse.Namespace) -> int:
    report = check_folder(args)
    if args.json:
        json.dump(report.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in render(report):
            print(line)
    if report.valid:
        return EXIT_OK
    error(args, f"{report.problem_count:,} problem(s) in the file set")
    return EXIT_PROBLEMS
