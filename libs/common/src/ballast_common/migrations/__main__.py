"""Migrations from the command line.

  python -m ballast_common.migrations upgrade --all            # every service, in order
  python -m ballast_common.migrations upgrade rebalance-svc ...  # the named ones (or packages)
  python -m ballast_common.migrations revision rebalance_svc -m "add a column"

`upgrade` brings each schema to head in its own transaction, prints one line per service and
exits 1 naming the service that failed (those after it are not attempted). `revision`
autogenerates a revision by comparing the service's tables with its schema in a running
database. Both use the database URL the service itself would use (`<PREFIX>_DATABASE_URL`,
then `BALLAST_DATABASE_URL`, then the local stack's).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback

from alembic import command

from ballast_common.migrations import alembic_config
from ballast_common.migrations.runner import (
    SERVICE_PACKAGES,
    MigrationError,
    Outcome,
    database_url,
    load_spec,
    load_specs,
    upgrade_services,
)

PROG = "python -m ballast_common.migrations"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["revision", "upgrade"])
    parser.add_argument(
        "services", nargs="*", help="service names or packages, e.g. rebalance-svc, taxlot_svc"
    )
    parser.add_argument(
        "--all", action="store_true", help=f"every service: {', '.join(SERVICE_PACKAGES)}"
    )
    parser.add_argument("-m", "--message", default="change", help="revision message")
    args = parser.parse_intermixed_args(argv)
    if args.action == "revision" and (args.all or len(args.services) != 1):
        parser.error("revision takes exactly one service (and no --all)")
    if args.action == "upgrade" and args.all == bool(args.services):
        parser.error("upgrade takes service names or --all (one of the two)")
    return args


def _print_outcome(outcome: Outcome) -> None:
    stream = sys.stderr if outcome.error else sys.stdout
    print(f"migrations: {outcome.line()}", file=stream, flush=True)


def upgrade(names: list[str]) -> int:
    specs = load_specs(names)
    started = time.perf_counter()
    outcomes = asyncio.run(upgrade_services(specs, report=_print_outcome))
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        skipped = [s.name for s in specs[len(outcomes) :]]
        rest = f"; not attempted: {', '.join(skipped)}" if skipped else ""
        print(
            f"migrations: failed at {failed[0].service} (schema {failed[0].schema}){rest}",
            file=sys.stderr,
        )
        return 1
    elapsed = time.perf_counter() - started
    print(f"migrations: {len(specs)} schema(s) at head ({elapsed:.1f} s)")
    return 0


def revision(name: str, message: str) -> int:
    spec = load_spec(name)
    config = alembic_config(spec.schema, spec.migrations_dir, spec.metadata, database_url(spec))
    command.revision(
        config, message=message, autogenerate=True, version_path=str(spec.migrations_dir)
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.action == "revision":
            return revision(args.services[0], args.message)
        return upgrade(list(SERVICE_PACKAGES) if args.all else args.services)
    except MigrationError as exc:
        print(f"migrations: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a service whose module fails to import
        traceback.print_exc()
        print(f"migrations: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
