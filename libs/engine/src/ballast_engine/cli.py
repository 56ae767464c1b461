"""The `ballast` command line's parser and dispatcher: `ballast engine ...`, `ballast taxlot
...` and `ballast backtest` (this package), and areas other packages add (`ballast book ...`,
in tools/cli). Every command follows the convention of `ballast_engine.commands` (exit
statuses, error lines).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from ballast_engine import engine_cli
from ballast_engine.backtest import cli as backtest_cli
from ballast_engine.commands import CommandError, Register, error
from ballast_engine.tax import cli as tax_cli


def build_parser(extra: Sequence[Register] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ballast",
        description="Ballast from the command line: replay rebalances and tax-lot decisions "
        "from files, and load a book from files into the running services.",
        epilog="Exit status: 0 done; 1 the command ran and found problems (each one on "
        "stderr); 2 a wrong argument or unusable input; 3 a service is unreachable or failed. "
        "Errors read `ballast AREA COMMAND: error: MESSAGE`.",
    )
    areas = parser.add_subparsers(dest="area", metavar="AREA", required=True)
    engine_cli.register(areas)
    tax_cli.register(areas)
    backtest_cli.register(areas)
    for register in extra:
        register(areas)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; a `CommandError` becomes one error line and its exit status."""
    try:
        return int(args.run(args))
    except CommandError as exc:
        error(args, exc.message)
        return exc.exit_code


def main(argv: Sequence[str] | None = None, extra: Sequence[Register] = ()) -> None:
    # `ballast ... | head` ends quietly when head has read enough, as command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(run(build_parser(extra).parse_args(argv)))
