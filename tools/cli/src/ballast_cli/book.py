"""`ballast book load DIR`: load a book from its CSV file set (docs/book-files.md) into the
running services, all or nothing.

The files go to the services that own them (`contracts/book_files.py`), where they stream
into staging tables; every service checks every row; only when all of them are valid is the
book applied, service by service in dependency order (the security master, the accounts,
then the book of record). A load has an id (the folder's name and a digest of its files):
running the same command again after an interruption finishes what is left, and a service
that applied the load already is not asked again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from ballast_common.auth import Role
from ballast_common.contracts.book_files import BOOK_FILES, BY_NAME, files_of
from ballast_engine.commands import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNREACHABLE,
    CommandError,
    error,
    runs,
)
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ballast_cli.credentials import TOKEN_ENV, authorization, bearer_token
from ballast_cli.retrying import DEFAULT_RETRY, RetryPolicy, send

# The order services apply a load in: each may rely on what the ones before it applied.
SERVICES = ("model-hub-svc", "account-svc", "taxlot-svc")
PORT_OFFSETS = {"account-svc": 1, "model-hub-svc": 2, "taxlot-svc": 4}
CHUNK_BYTES = 1 << 20
PROBLEMS_SHOWN = 50
_DATE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BookLoadError(CommandError):
    """The load cannot go on; the message says why and what to do (exit status 2: the
    folder is not a book; 3: a service is unreachable or failed)."""


@dataclass(frozen=True)
class FileSet:
    folder: Path
    as_of: date
    files: dict[str, Path]  # file name -> path
    load_id: str
    # file name -> its bytes as sent, when they are not the file's own (e.g. a custodian's
    # file converted to the canonical columns while it streams)
    converted: dict[str, Callable[[], Iterator[bytes]]] = field(default_factory=dict)

    def size(self, name: str) -> int:
        return self.files[name].stat().st_size

    def chunks(self, name: str) -> Iterator[bytes]:
        """The bytes sent of file `name`, a chunk at a time (a fresh stream each call)."""
        if name in self.converted:
            yield from self.converted[name]()
            return
        with self.files[name].open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk


@dataclass
class Outcome:
    """What a load did: problems found, or each service's result."""

    load_id: str
    problems: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    staged: dict[str, dict[str, int]] = field(default_factory=dict)  # service -> file -> rows
    applied: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> result

    @property
    def valid(self) -> bool:
        return not self.problems


def discover(folder: Path, as_of: date | None = None) -> FileSet:
    """The file set in `folder`: every file known, the required ones there, the as-of date
    from `as_of` or the folder's name."""
    if not folder.is_dir():
        raise BookLoadError(f"{folder} is not a folder (a book is a folder of CSV files)")
    found = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
    unknown = [n for n in found if n.endswith(".csv") and n not in BY_NAME]
    if unknown:
        names = ", ".join(f.name for f in BOOK_FILES)
        raise BookLoadError(
            f"{folder}: {', '.join(unknown)} is not a file of the book file set ({names})"
        )
    files = {n: p for n, p in found.items() if n in BY_NAME}
    missing = [f.name for f in BOOK_FILES if f.required and f.name not in files]
    if missing:
        raise BookLoadError(f"{folder}: required file(s) missing: {', '.join(missing)}")
    if as_of is None:
        if not _DATE_NAME.match(folder.name):
            raise BookLoadError(
                f"{folder}: name the folder by its as-of date (YYYY-MM-DD) or give --as-of"
            )
        try:
            as_of = date.fromisoformat(folder.name)
        except ValueError:
            raise BookLoadError(f"{folder}: {folder.name} is not a date") from None
    return FileSet(folder, as_of, files, _load_id(folder, as_of, files))


def _load_id(folder: Path, as_of: date, files: dict[str, Path]) -> str:
    """The folder's name and a digest of its files' names and contents."""
    digest = hashlib.sha256(as_of.isoformat().encode())
    for name in sorted(files):
        digest.update(name.encode())
        with files[name].open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    stem = re.sub(r"[^A-Za-z0-9._-]", "-", folder.name)[:40] or "book"
    return f"{stem}-{digest.hexdigest()[:16]}"


class Reporter:
    """Progress of a load; the command line shows bars, a program may pass its own."""

    def upload_started(self, service: str, name: str, size: int) -> Any:
        return None

    def uploaded(self, handle: Any, size: int) -> None:
        return None

    def step(self, text: str) -> Any:
        return None

    def step_done(self, handle: Any) -> None:
        return None

    def waiting(self, text: str) -> None:
        """A service is not answering for now: what the load waits for."""
        return None


class RichReporter(Reporter):
    """Bars for a rich Progress made with `progress_columns()`."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._sizes: dict[Any, tuple[int, int]] = {}

    def upload_started(self, service: str, name: str, size: int) -> Any:
        handle = self._progress.add_task(f"{name} → {service}", total=size, detail="")
        self._sizes[handle] = (0, size)
        return handle

    def uploaded(self, handle: Any, size: int) -> None:
        done, total = self._sizes[handle]
        done += size
        self._sizes[handle] = (done, total)
        self._progress.update(handle, advance=size, detail=f"{_mb(done)}/{_mb(total)} MB")

    def step(self, text: str) -> Any:
        return self._progress.add_task(text, total=None, detail="")

    def step_done(self, handle: Any) -> None:
        self._progress.update(handle, total=1, completed=1)

    def waiting(self, text: str) -> None:
        self._progress.console.print(f"[yellow]{text}[/]")


def progress_columns() -> tuple[Any, ...]:
    return (
        SpinnerColumn(),
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.fields[detail]:>15}"),
        TimeElapsedColumn(),
    )


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f}"


class BookLoader:
    """Talks to the owning services' `/book-loads` routes (or another kind of file load's:
    `route`, the `services` that take it in order, and the files each takes)."""

    def __init__(
        self,
        urls: dict[str, str],
        http: httpx.AsyncClient,
        reporter: Reporter,
        retry: RetryPolicy = DEFAULT_RETRY,
        *,
        route: str = "/book-loads",
        services: Sequence[str] = SERVICES,
        files_of: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.urls = urls
        self.http = http
        self.reporter = reporter
        self.retry = retry
        self.route = route
        self.services = tuple(services)
        self.files_of = files_of or _book_files_of

    async def load(self, files: FileSet, check_only: bool = False) -> Outcome:
        outcome = Outcome(files.load_id)
        options = {"as_of": files.as_of.isoformat()}
        status = {s: await self._status(s, files.load_id) for s in self.services}
        pending = [s for s in self.services if status[s] != "applied"]
        for service in self.services:
            if status[service] == "applied":
                outcome.applied[service] = {"repeated": True}
        await asyncio.gather(*(self._upload_all(s, files, outcome) for s in pending))
        if outcome.problems:
            return outcome
        step = self.reporter.step("checking every row")
        for service in pending:
            checked = await self._call("POST", service, f"/{files.load_id}/validate", options)
            outcome.problems += [{**p, "service": service} for p in checked["problems"]]
            outcome.truncated |= bool(checked.get("truncated"))
        self.reporter.step_done(step)
        if outcome.problems or check_only:
            return outcome
        for service in pending:
            step = self.reporter.step(f"applying ({service})")
            try:
                outcome.applied[service] = await self._call(
                    "POST", service, f"/{files.load_id}/apply", options
                )
            except BookLoadError as exc:
                done = [s for s in self.services if s in outcome.applied]
                raise BookLoadError(
                    f"{exc}\nApplied so far: {', '.join(done) or 'nothing'}. Run the same "
                    "command again to finish the load (what was applied is not applied twice).",
                    exc.exit_code,
                ) from None
            self.reporter.step_done(step)
        return outcome

    async def _status(self, service: str, load_id: str) -> str | None:
        response = await self._request("GET", service, f"/{load_id}")
        if response.status_code == 404:
            return None
        _raise_for(response, service)
        return str(response.json()["status"])

    async def _upload_all(self, service: str, files: FileSet, outcome: Outcome) -> None:
        for name in self.files_of(service):
            if name not in files.files:
                continue
            response = await self._upload(service, files, name)
            if response.status_code == 422:
                body = response.json()
                outcome.problems += [_problem_of(e, service) for e in body.get("errors", [])] or [
                    {"file": name, "line": 0, "column": "", "message": body["detail"]}
                ]
                return
            _raise_for(response, service)
            outcome.staged.setdefault(service, {})[name] = int(response.json()["rows"])

    async def _upload(self, service: str, files: FileSet, name: str) -> httpx.Response:
        size = files.size(name)
        handle = self.reporter.upload_started(service, name, size)

        async def body() -> AsyncIterator[bytes]:
            for chunk in files.chunks(name):
                self.reporter.uploaded(handle, len(chunk))
                yield chunk

        return await self._request(
            "PUT",
            service,
            f"/{files.load_id}/files/{name}",
            body=body,  # a fresh stream for each attempt
            headers={"content-type": "text/csv"},
        )

    async def _call(self, method: str, service: str, path: str, json: Any = None) -> Any:
        response = await self._request(method, service, path, json=json)
        if response.status_code == 422:
            body = response.json()
            problems = [_problem_of(e, service) for e in body.get("errors", [])]
            raise BookLoadError(
                f"{service}: {body.get('detail')}\n" + _lines(problems), EXIT_PROBLEMS
            )
        _raise_for(response, service)
        return response.json()

    async def _request(self, method: str, service: str, path: str, **kw: Any) -> httpx.Response:
        """A call to `service`, retried while it restarts (every step of a load is idempotent
        by the load's id)."""
        url = f"{self.urls[service]}{self.route}{path}"
        try:
            return await send(
                self.http, method, url, policy=self.retry, say=self.reporter.waiting, **kw
            )
        except httpx.TransportError as exc:
            raise BookLoadError(
                f"cannot reach {service} at {self.urls[service]} ({exc.__class__.__name__}): "
                "is it running? (`make up` starts the services)",
                EXIT_UNREACHABLE,
            ) from None


def _book_files_of(service: str) -> list[str]:
    """The files of the book file set `service` loads."""
    return [f.name for f in files_of(service)]


def _problem_of(error: dict[str, str], service: str) -> dict[str, Any]:
    """`{"field": "lots.csv:17 quantity", "message": ...}` as file, line and column."""
    where, _, column = error.get("field", "").partition(" ")
    name, _, line = where.partition(":")
    return {
        "file": name,
        "line": int(line) if line.isdigit() else 0,
        "column": column,
        "message": error.get("message", ""),
        "service": service,
    }


def _raise_for(response: httpx.Response, service: str) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise BookLoadError(
            f"{service} answered {response.status_code}: {detail}", EXIT_UNREACHABLE
        )


def _lines(problems: Sequence[dict[str, Any]], limit: int = PROBLEMS_SHOWN) -> str:
    shown = []
    for p in problems[:limit]:
        where = f"{p['file']}:{p['line']}" if p["line"] else p["file"]
        column = f" {p['column']}" if p["column"] else ""
        shown.append(f"  {where}{column}: {p['message']}")
    if len(problems) > limit:
        shown.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(shown)


def service_urls(port_base: int, host: str = "127.0.0.1", **given: str | None) -> dict[str, str]:
    """Each owning service's URL: given, else from the environment, else on the port base."""
    urls = {}
    for service, offset in PORT_OFFSETS.items():
        env = "BALLAST_" + service.upper().replace("-", "_").removesuffix("_SVC") + "_URL"
        urls[service] = (
            given.get(service) or os.environ.get(env) or f"http://{host}:{port_base + offset}"
        )
    return urls


async def load_folder(
    folder: Path | FileSet,
    urls: dict[str, str],
    *,
    token: str,
    as_of: date | None = None,
    check_only: bool = False,
    reporter: Reporter | None = None,
    timeout_s: float | None = None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Outcome:
    """Load a book folder (or its file set, discovered already) into the services at `urls`
    as the caller `token` names (its tenant is the book's; the demo and benchmarks call
    this)."""
    files = folder if isinstance(folder, FileSet) else discover(folder, as_of)
    timeout = httpx.Timeout(timeout_s, connect=10.0)
    async with httpx.AsyncClient(timeout=timeout, headers=authorization(token)) as http:
        loader = BookLoader(urls, http, reporter or Reporter(), retry)
        return await loader.load(files, check_only)


# --- the command --------------------------------------------------------------------------


def register(areas: argparse._SubParsersAction) -> None:
    book = areas.add_parser("book", help="load a book from its CSV files into the services")
    cmds = book.add_subparsers(dest="book_cmd", metavar="COMMAND", required=True)
    load = cmds.add_parser(
        "load",
        help="validate a book folder, then load it all or nothing",
        description="Load a book from a folder of CSV files (docs/book-files.md) into the "
        "running services: every row of every file is checked first, and nothing is applied "
        "unless all are valid. Running it again finishes an interrupted load.",
    )
    load.add_argument("folder", metavar="DIR", type=Path, help="e.g. books/2026-12-04")
    load.add_argument("--as-of", type=date.fromisoformat, help="default: the folder's name")
    load.add_argument(
        "--token",
        help=f"the bearer token to call with (default: ${TOKEN_ENV}; on the local stack, one "
        "of the local issuer for --tenant)",
    )
    load.add_argument(
        "--tenant", default="demo", help="the firm, for a local token (default: demo)"
    )
    load.add_argument("--check", action="store_true", help="validate only; write nothing")
    load.add_argument(
        "--retry-for",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to keep retrying a service that is restarting or briefly unavailable "
        "(default 60; 0: do not retry)",
    )
    load.add_argument(
        "--port-base",
        type=int,
        default=8000,
        help="services on PORT_BASE+1 (account), +2 (model hub), +4 (taxlot); default 8000",
    )
    for service in PORT_OFFSETS:
        load.add_argument(f"--{service.removesuffix('-svc')}-url", dest=service, metavar="URL")
    runs(load, _run_load)


def _run_load(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    urls = service_urls(args.port_base, **{s: getattr(args, s) for s in PORT_OFFSETS})
    # A BookLoadError is a CommandError: `ballast` prints it and exits with its status.
    files = discover(args.folder, args.as_of)
    # the security master's files (model-hub-svc) need a platform operator
    token = bearer_token(args.token, args.tenant, Role.OPERATIONS, also=(Role.PLATFORM_OPERATOR,))
    with Progress(*progress_columns(), console=console) as progress:
        outcome = asyncio.run(
            load_folder(
                files,
                urls,
                token=token,
                check_only=args.check,
                reporter=RichReporter(progress),
                retry=RetryPolicy(budget_s=max(0.0, args.retry_for)),
            )
        )
    if outcome.problems:
        more = "+" if outcome.truncated else ""
        error(
            args,
            f"{len(outcome.problems)}{more} problem(s); nothing was applied:\n"
            + _lines(outcome.problems),
        )
        return EXIT_PROBLEMS
    _show(Console(), outcome, args.check)
    return EXIT_OK


def _show(console: Console, outcome: Outcome, check_only: bool) -> None:
    title = "valid; nothing written (--check)" if check_only else "loaded"
    table = Table(title=f"Book {outcome.load_id}: {title}")
    table.add_column("service")
    table.add_column("staged rows")
    table.add_column("result")
    for service in SERVICES:
        staged = outcome.staged.get(service, {})
        applied = outcome.applied.get(service, {})
        table.add_row(
            service,
            ", ".join(f"{n} {r:,}" for n, r in staged.items()) or "-",
            "applied before" if applied.get("repeated") and not staged else _result(applied),
        )
    console.print(table)


def _result(applied: dict[str, Any]) -> str:
    skip = {"load_id", "status", "repeated"}
    return (
        ", ".join(f"{k} {v:,}" for k, v in applied.items() if k not in skip and isinstance(v, int))
        or "-"
    )


ProgressHook = Callable[[str, int], None]
