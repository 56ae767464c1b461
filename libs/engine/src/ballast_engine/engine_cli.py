"""`ballast engine ...`: replay a rebalance from a scenario file, scan a book for drift.

    ballast engine rebalance SCENARIO.json [--format json|table]
    ballast engine harvest SCENARIO.json [--format json|table] [--on YYYY-MM-DD]
    ballast engine drift BOOK.json [--format json|table] [--all]

Exit status (the convention of `ballast_engine.commands`): 0 done; 1 a book where some accounts
failed (the others are still processed and printed, each failure one error line on stderr);
2 the file (or its only account) is invalid, one error line naming
account/sleeve/security/field.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ballast_engine.commands import EXIT_OK, EXIT_PROBLEMS, CommandError, error, runs
from ballast_engine.drift import scan_book
from ballast_engine.errors import EngineInputError
from ballast_engine.harvesting import harvest, harvest_book
from ballast_engine.model import Book, BookResult, RebalanceResult
from ballast_engine.rebalance import rebalance, rebalance_book
from ballast_engine.scenario import load


def register(areas: argparse._SubParsersAction) -> None:
    engine = areas.add_parser("engine", help="rebalance and drift from scenario files")
    cmds = engine.add_subparsers(dest="engine_cmd", metavar="COMMAND", required=True)

    rb = cmds.add_parser(
        "rebalance",
        help="propose the trades of a scenario (or of every account of a book)",
        description="Replay a rebalance: read a scenario (or book) file, print proposed trades.",
    )
    rb.add_argument("scenario", metavar="SCENARIO.json")
    rb.add_argument("--format", choices=("json", "table"), default="json")
    runs(rb, _run_rebalance)

    hv = cmds.add_parser(
        "harvest",
        help="tax-loss harvest a scenario (or every account of a book)",
        description="Replay a tax-loss harvest: lots past the thresholds are sold and a "
        "replacement that is not substantially identical is bought (needs the account's tax "
        "settings).",
    )
    hv.add_argument("scenario", metavar="SCENARIO.json")
    hv.add_argument("--format", choices=("json", "table"), default="json")
    hv.add_argument("--on", metavar="YYYY-MM-DD", help="trade date (default: tax.as_of)")
    runs(hv, _run_rebalance, harvest=True)

    dr = cmds.add_parser(
        "drift",
        help="scan a book (or a scenario) for accounts out of tolerance",
        description="Vectorized drift scan: which accounts are out of tolerance, where, how much.",
    )
    dr.add_argument("book", metavar="BOOK.json")
    dr.add_argument("--format", choices=("json", "table"), default="json")
    dr.add_argument("--all", action="store_true", help="list accounts inside tolerance too")
    runs(dr, _run_drift)


def _load(path: str) -> Any:
    try:
        return load(path)
    except FileNotFoundError:
        raise EngineInputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise EngineInputError(f"is a directory, not a file: {path}") from None


def _run_rebalance(args: argparse.Namespace) -> int:
    harvesting = getattr(args, "harvest", False)
    on = getattr(args, "on", None)
    try:
        data = _load(args.scenario)
        if isinstance(data, Book):
            book_res = harvest_book(data, on=on) if harvesting else rebalance_book(data)
            results = list(book_res.results)
            for f in book_res.failures:
                error(args, f.error)
        else:
            results = [harvest(data, on=on) if harvesting else rebalance(data)]
            book_res = None
    except EngineInputError as exc:
        raise CommandError(exc.one_line()) from None
    if args.format == "json":
        payload: Any = (
            book_res.to_dict() if isinstance(book_res, BookResult) else results[0].to_dict()
        )
        print(json.dumps(payload, indent=2))
    else:
        for r in results:
            print(_table(r))
    if book_res is not None and book_res.failures:
        return EXIT_PROBLEMS
    return EXIT_OK


def _table(r: RebalanceResult) -> str:
    lines = [
        f"Account {r.account_id} — {r.request.kind.value}"
        + (f" {r.request.amount:,.2f}" if r.request.amount else "")
    ]
    s = r.summary
    lines.append(
        f"  value ${s.account_value:,}  trades {s.trade_count} (buy ${s.buy_value:,}, sell "
        f"${s.sell_value:,})  turnover {s.turnover:.2%}  max drift {s.max_drift_before:.2%}"
        f" -> {s.max_drift_after:.2%}  cash ${s.cash_before:,} -> ${s.cash_after:,}"
    )
    if r.cash_movements:
        lines.append("  Cash movements:")
        for m in r.cash_movements:
            lines.append(f"    {m.explanation}")
    if r.trades:
        lines.append(
            f"  {'sleeve':<12} {'side':<4} {'quantity':>12} {'symbol':<8} {'value':>14}  reason"
        )
        for t in r.trades:
            lines.append(
                f"  {t.sleeve_id:<12} {t.side.value:<4} {t.quantity!s:>12} {t.symbol:<8} "
                f"{'$' + format(t.estimated_value, ','):>14}  {t.reason.value}"
            )
        if any(t.lots for t in r.trades):
            lines.append("  Lots relieved:")
            for t in r.trades:
                for lt in t.lots:
                    lines.append(
                        f"    {t.symbol:<8} {lt.lot_id:<14} {lt.quantity!s:>10} sh  acquired "
                        f"{lt.acquired}  {lt.term:<5}  gain ${lt.gain:>12,}  tax ${lt.tax:>10,}"
                    )
        lines.append("  Why:")
        for t in r.trades:
            lines.append(f"    - {t.explanation}")
    else:
        lines.append("  No trades.")
    for n in r.notices:
        lines.append(f"  note [{n.code}]: {n.message}")
    if r.tax is not None:
        tx = r.tax
        line = (
            f"  Tax ({tx.account_type}, {tx.as_of}): short-term gain ${tx.short_term_gain:,}, "
            f"long-term gain ${tx.long_term_gain:,}, estimated tax ${tx.estimated_tax:,}"
        )
        if tx.tax_saved:
            line += f", harvested tax saved ${tx.tax_saved:,}"
        if tx.budget_limit is not None:
            line += (
                f"; gain budget ${tx.budget_limit:,} ({'hard' if tx.budget_hard else 'warning'}"
                f"), left ${tx.budget_remaining_before:,} -> ${tx.budget_remaining_after:,}"
            )
        lines.append(line)
    return "\n".join(lines)


def _run_drift(args: argparse.Namespace) -> int:
    try:
        data = _load(args.book)
        if not isinstance(data, Book):
            data = Book(data.reference, (data.account,), data.request)
        scan = scan_book(data)
    except EngineInputError as exc:
        raise CommandError(exc.one_line()) from None
    for f in scan.failures:
        error(args, f.error)
    recs = scan.records(only_out=not args.all)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "accounts_scanned": len(scan.account_ids),
                    "out_of_tolerance": int(scan.out_of_tolerance.sum()),
                    "accounts": recs,
                    "failures": [f.to_dict() for f in scan.failures],
                },
                indent=2,
            )
        )
    else:
        print(
            f"{int(scan.out_of_tolerance.sum())} of {len(scan.account_ids)} accounts out of "
            "tolerance"
        )
        for rec in recs:
            levels = (
                ", ".join(f"{lv} {rec['max_breach'][lv]:.2%} outside" for lv in rec["levels"])
                or "inside tolerance"
            )
            worst = f" (worst: {rec['worst_security']})" if "worst_security" in rec else ""
            print(f"  {rec['account_id']}: {levels}{worst}")
    return EXIT_PROBLEMS if scan.failures else EXIT_OK
