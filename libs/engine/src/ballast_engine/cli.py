"""The `ballast` command line's parser: `ballast engine ...` and `ballast taxlot ...` (this
package), and areas other packages add (`ballast book ...`, in tools/cli).

Each area registers its own sub-commands; this module only dispatches.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

Register = Callable[[argparse._SubParsersAction], None]


def build_parser(extra: Sequence[Register] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ballast",
        description="Ballast from the command line: replay rebalances and tax-lot decisions "
        "from files, and load a book from files into the running services.",
    )
    areas = parser.add_subparsers(dest="area", metavar="AREA", required=True)
    from ballast_engine import engine_cli
    from ballast_engine.tax import cli as tax_cli

    engine_cli.register(areas)
    tax_cli.register(areas)
    for register in extra:
        register(areas)
    return parser


def main(argv: Sequence[str] | None = None, extra: Sequence[Register] = ()) -> None:
    # `ballast ... | head` ends quietly when head has read enough, as command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser(extra).parse_args(argv)
    # Each sub-command stores its handler in `run`; it returns the process exit code.
    sys.exit(args.run(args))
