"""`ballast audit verify`: recompute every service's audit chains straight from the database.

    ballast audit verify [--database-url URL] [--service account-svc] [--heads]

Rows stream in chain order through a server-side cursor (never a whole table in memory);
each tenant's first broken link is reported naming the service, tenant, sequence, subject and
what is wrong. Exit status 0: every chain intact; 1: tampering found; 2: a wrong argument,
or the database cannot be reached or has no audit trail where one is expected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import asyncpg
from ballast_common.audit import BrokenLink, ChainVerifier
from ballast_engine.commands import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_UNREACHABLE,
    CommandError,
    error,
    runs,
)

# The services with an audit trail, and the schema each keeps it in.
SCHEMAS = {"model-hub-svc": "model_hub", "account-svc": "account", "taxlot-svc": "taxlot"}
DATABASE_URL_ENV = "BALLAST_DATABASE_URL"
DEFAULT_DATABASE_URL = "postgresql://ballast:ballast@127.0.0.1:15432/ballast"
CHUNK = 5000  # rows fetched per round trip of the cursor
PROGRESS_EVERY = 100_000  # records between progress lines on a terminal

_COLUMNS = (
    "tenant, seq, recorded_at, actor, action, subject_type, subject_id, before, after, "
    "request_id, prev_hash, hash"
)


def register(areas: argparse._SubParsersAction) -> None:
    audit = areas.add_parser("audit", help="check the services' tamper-evident audit trails")
    cmds = audit.add_subparsers(dest="audit_cmd", metavar="COMMAND", required=True)
    verify = cmds.add_parser(
        "verify",
        help="recompute every audit chain's hashes and links; exit 1 on tampering",
        description="Read each service's audit_records straight from the database, in chain "
        "order, and recompute every record's hash and its link to the record before. Reports "
        "the first broken link of each tenant.",
    )
    verify.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL),
        help=f"the services' database (default: ${DATABASE_URL_ENV}, else the local stack's)",
    )
    verify.add_argument(
        "--service",
        choices=sorted(SCHEMAS),
        action="append",
        help="a service to check (repeat for several; default: all three)",
    )
    verify.add_argument(
        "--heads",
        action="store_true",
        help="print each tenant's last record (sequence and hash), to keep elsewhere",
    )
    runs(verify, _run_verify)


@dataclass
class ServiceOutcome:
    service: str
    records: int = 0
    tenants: int = 0
    broken: list[BrokenLink] = field(default_factory=list)
    heads: dict[str, tuple[int, str]] = field(default_factory=dict)


def _run_verify(args: argparse.Namespace) -> int:
    services = args.service or list(SCHEMAS)
    outcomes = asyncio.run(verify(args.database_url, services, progress=_progress_printer()))
    for outcome in outcomes:
        for broken in outcome.broken:
            error(args, describe(outcome.service, broken))
        state = f"{len(outcome.broken)} tenant(s) TAMPERED" if outcome.broken else "intact"
        print(
            f"{outcome.service}: {outcome.records:,} record(s) of {outcome.tenants} "
            f"tenant(s): {state}"
        )
        if args.heads:
            for tenant, (seq, digest) in sorted(outcome.heads.items()):
                print(f"  {tenant} head {seq} {digest}")
    return EXIT_PROBLEMS if any(o.broken for o in outcomes) else EXIT_OK


def describe(service: str, broken: BrokenLink) -> str:
    """One line naming where the chain breaks and why."""
    return (
        f"{service} tenant {broken.tenant} record {broken.seq} "
        f"({broken.subject_type} {broken.subject_id}): {'; '.join(broken.problems)}"
    )


async def verify(
    database_url: str,
    services: Sequence[str],
    progress: Callable[[str, int, int], None] | None = None,
) -> list[ServiceOutcome]:
    """Check the audit chains of `services`; raises CommandError (exit 3) when the database
    cannot be reached or read, (exit 2) when a service has no audit trail."""
    where = _redacted(database_url)
    try:
        connection = await asyncpg.connect(_plain_url(database_url), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError, ValueError) as exc:
        raise CommandError(
            f"cannot connect to the database ({where}): {exc}", EXIT_UNREACHABLE
        ) from exc
    try:
        return [await _verify_service(connection, s, progress) for s in services]
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CommandError(
            f"reading the audit trail from {where} failed: {exc}", EXIT_UNREACHABLE
        ) from exc
    finally:
        await connection.close()


async def _verify_service(
    connection: asyncpg.Connection,
    service: str,
    progress: Callable[[str, int, int], None] | None,
) -> ServiceOutcome:
    schema = SCHEMAS[service]
    table = f'"{schema}".audit_records'
    estimate = await connection.fetchval(
        "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)", table
    )
    if estimate is None:
        raise CommandError(
            f"{service} has no audit_records table in schema {schema} (not migrated yet?)"
        )
    checker = ChainVerifier()
    async with connection.transaction(readonly=True, isolation="repeatable_read"):
        cursor = connection.cursor(
            f"SELECT {_COLUMNS} FROM {table} ORDER BY tenant, seq", prefetch=CHUNK
        )
        async for row in cursor:
            checker.check(_record(row))
            if progress is not None and checker.records % PROGRESS_EVERY == 0:
                progress(service, checker.records, max(estimate, checker.records))
    return ServiceOutcome(
        service,
        checker.records,
        len(checker.tenants),
        list(checker.broken.values()),
        checker.heads(),
    )


def _record(row: asyncpg.Record) -> dict[str, Any]:
    record = dict(row)
    for name in ("before", "after"):  # asyncpg returns json as its text
        if record[name] is not None:
            record[name] = json.loads(record[name])
    return record


def _progress_printer(out: TextIO = sys.stderr) -> Callable[[str, int, int], None] | None:
    if not out.isatty():
        return None

    def show(service: str, done: int, total: int) -> None:
        out.write(f"\r{service}: {done:,} of ~{total:,} records checked")
        out.flush()

    return show


def _plain_url(url: str) -> str:
    for driver in ("postgresql+asyncpg://", "postgres+asyncpg://"):
        if url.startswith(driver):
            return "postgresql://" + url[len(driver) :]
    return url


def _redacted(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
