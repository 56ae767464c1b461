"""The `ballast` command line: `ballast engine ...` and `ballast taxlot ...`.

Each area registers its own sub-commands; this module only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ballast",
        description="Ballast: replay rebalances and tax-lot decisions from files.",
    )
    areas = parser.add_subparsers(dest="area", metavar="AREA", required=True)
    from ballast_engine import engine_cli
    from ballast_engine.tax import cli as tax_cli

    engine_cli.register(areas)
    tax_cli.register(areas)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Each sub-command stores its handler in `run`; it returns the process exit code.
    code = args.run(args)
    sys.exit(code)
