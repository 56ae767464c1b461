"""The convention every `ballast` command follows (its areas: `ballast engine`, `ballast
taxlot`, and those other packages add, such as `ballast book` in tools/cli):

- exit status `EXIT_OK` (0) done; `EXIT_PROBLEMS` (1) the command ran and found problems
  (accounts that failed, rows that do not pass their checks: each one reported);
  `EXIT_BAD_INPUT` (2) a wrong argument or an input file that cannot be used (argparse's usage
  errors exit 2 too); `EXIT_UNREACHABLE` (3) a service could not be reached or failed;
- every error goes to stderr as `ballast <area> <command>: error: <message>`, the prefix
  argparse itself uses for usage errors, one line per problem, never a traceback.

An area registers its sub-commands with `runs`; `ballast_engine.cli` dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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
