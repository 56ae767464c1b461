"""`python -m ballast_common.migrations revision|upgrade SERVICE_PACKAGE [-m MESSAGE]`.

`revision` autogenerates a revision by comparing the service's tables with its schema in a
running database (BALLAST_DATABASE_URL, default: the local stack).
"""

import argparse
import importlib
import os
import sys

from alembic import command

from ballast_common.migrations import alembic_config


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ballast_common.migrations")
    parser.add_argument("action", choices=["revision", "upgrade"])
    parser.add_argument("service", help="service package, e.g. rebalance_svc")
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args()
    try:
        spec = importlib.import_module(f"{args.service}.main").spec
    except ModuleNotFoundError as exc:
        print(f"migrations: no service package {args.service!r} ({exc})", file=sys.stderr)
        return 2
    url = os.environ.get(
        "BALLAST_DATABASE_URL", "postgresql+asyncpg://ballast:ballast@127.0.0.1:15432/ballast"
    )
    config = alembic_config(spec.schema, spec.migrations_dir, spec.metadata, url)
    if args.action == "revision":
        command.revision(
            config, message=args.message, autogenerate=True, version_path=str(spec.migrations_dir)
        )
    else:
        command.upgrade(config, "head")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
