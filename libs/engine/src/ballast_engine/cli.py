"""The `ballast` command line's parser: `ballast engine ...` and `ballast taxlot ...` (this
package), and areas other packages add (`ballast book ...`, in tools/cli).

Each area registers its own sub-commands with `runs`; this module dispatches and owns the
one convention every command follows:

- exit status `EXIT_OK` (0) done; `EXIT_PROBLEMS` (1) the command ran and found problems
  (accounts that failed, rows that do not pass their checks: each one reported);
  `EXIT_BAD_INPUT` (2) a wrong argument or an input file that cannot be used (argparse's usage
  errors exit 2 too); `EXIT_UNREACHABLE` (3) a service could not be reached or failed;
- every error goes to stderr as `ballast <area> <command>: error: <message>`, the prefix
  argparse itself uses for usage errors, one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

Register = Callable[[argparse._SubParsersAction], None]
Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3


class CommandError(Exception):
    """The command cannot go on: `message` says why, `exit_code` is the status to exit with."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def runs(command: argparse.ArgumentParser, handler: Handler, **defaults: object) -> None:
    """Make `handler(args)` run for `command`; it returns the exit status."""
    command.set_defaults(run=handler, prog=command.prog, **defaults)


def error(args: argparse.Namespace, message: str) -> None:
    """Print one error of the running command on stderr, with the command's prefix."""
    print(f"{args.prog}: error: {message}", file=sys.stderr)


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
    from ballast_engine import engine_cli
    from ballast_engine.tax import cli as tax_cli

    engine_cli.register(areas)
    tax_cli.register(areas)
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
