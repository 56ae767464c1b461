"""`ballast taxlot ...`: replay a trades CSV and write Form 8949 rows or the open lots.

    ballast taxlot form8949 TRADES.csv [--method fifo|lifo|hifo|mintax] [--out FILE]
    ballast taxlot lots TRADES.csv [--method ...] [--out FILE]

Bad input (or an --out file that cannot be written) prints one error line naming the row
and field and exits with status 2 (the convention of `ballast_engine.commands`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ballast_engine.commands import EXIT_OK, CommandError, runs
from ballast_engine.tax.errors import TaxError
from ballast_engine.tax.ledger import TaxLedger, replay
from ballast_engine.tax.model import (
    DEFAULT_RELIEF_METHOD,
    RELIEF_METHOD_NAMES,
    EquivalenceSet,
    Identity,
    ReliefMethod,
)
from ballast_engine.tax.tradefile import form8949_csv, lots_csv, parse_trades


def register(areas: argparse._SubParsersAction) -> None:
    """Add the ``taxlot`` area and its sub-commands to the ``ballast`` parser."""
    taxlot = areas.add_parser(
        "taxlot",
        help="tax lots, gains and Form 8949 from trade files",
        description="Replay trades (wash sales across each household) and report.",
    )
    commands = taxlot.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, handler in (
        ("form8949", "realized gains as Form 8949 rows (code W for wash sales)", _form8949),
        ("lots", "open lots after the replay, wash-sale adjustments applied", _lots),
    ):
        cmd = commands.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("trades", metavar="TRADES.csv", type=Path)
        cmd.add_argument(
            "--method",
            choices=RELIEF_METHOD_NAMES,
            default=DEFAULT_RELIEF_METHOD.value,
            help=f"lot relief method for sells that name no lot (default {DEFAULT_RELIEF_METHOD})",
        )
        cmd.add_argument("--out", type=Path, help="write the CSV here instead of stdout")
        cmd.add_argument(
            "--identical",
            action="append",
            default=[],
            metavar="SYM,SYM,...",
            help="securities to treat as substantially identical (repeatable)",
        )
        runs(cmd, handler)


def _ledger(args: argparse.Namespace) -> TaxLedger:
    try:
        text = args.trades.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise TaxError(f"cannot read the file: {err.strerror or err}") from None
    parsed = parse_trades(text)
    sets = []
    for i, spec in enumerate(args.identical, start=1):
        members = tuple(s.strip() for s in spec.split(",") if s.strip())
        if len(members) < 2:
            raise TaxError(f"--identical {spec!r}: name at least two securities")
        sets.append(EquivalenceSet(f"identical-{i}", members, identical=True))
    try:
        identity = Identity.from_sets(sets)
    except ValueError as err:
        raise TaxError(f"--identical: {err}") from None
    return replay(
        parsed.trades, parsed.accounts, identity=identity, method=ReliefMethod(args.method)
    )


def _emit(args: argparse.Namespace, text: str) -> int:
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise CommandError(f"cannot write {args.out}: {err.strerror or err}") from None
    return EXIT_OK


def _run(args: argparse.Namespace, render: Callable[[TaxLedger], str]) -> int:
    try:
        ledger = _ledger(args)
    except TaxError as err:
        raise CommandError(f"{args.trades}: {err.describe()}") from None
    return _emit(args, render(ledger))


def _form8949(args: argparse.Namespace) -> int:
    return _run(args, form8949_csv)


def _lots(args: argparse.Namespace) -> int:
    return _run(args, lots_csv)
