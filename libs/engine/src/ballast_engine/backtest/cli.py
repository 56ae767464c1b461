"""`ballast backtest`: the tax-alpha backtest from the command line.

    ballast backtest [--years 10] [--seed 1] [--stocks 500] [--initial 1000000]
                     [--monthly 10000] [--credit immediate|carryforward]
                     [--strategies a,b,...] [--out FILE.json] [--plot FILE.png]
                     [--format table|json] [--no-progress]

Exit status: 0 done; 1 a strategy that must respect the wash-sale rule broke it (each
violation reported); 2 a wrong argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ballast_engine.backtest.market import MarketConfig
from ballast_engine.backtest.plot import PlotUnavailable, require_matplotlib, write_plot
from ballast_engine.backtest.report import table
from ballast_engine.backtest.runner import (
    STRATEGIES,
    BacktestConfig,
    BacktestResult,
    ProgressFn,
    run_backtest,
)
from ballast_engine.backtest.simulate import Deposits, TaxAssumptions, TaxCredit
from ballast_engine.commands import EXIT_OK, EXIT_PROBLEMS, CommandError, error, runs

# The unconstrained rule is the paper's counterfactual: its wash sales are expected.
MAY_WASH = frozenset({"loss_harvest"})


def register(areas: argparse._SubParsersAction) -> None:
    bt = areas.add_parser(
        "backtest",
        help="tax-alpha backtest of harvesting strategies on a seeded synthetic market",
        description="Simulate a seeded synthetic market (factor model, sectors, cap-weighted "
        "index, monthly deposits) and run buy-and-hold, the Chaudhuri-Burnham-Lo loss-harvest "
        "rule with and without the wash-sale rule, and Ballast's optimizer on the same path; "
        "report tax alpha, tracking error, turnover and wash-sale violations.",
    )
    bt.add_argument("--years", type=int, default=10, help="years simulated (default 10)")
    bt.add_argument("--seed", type=int, default=1, help="market seed (default 1)")
    bt.add_argument("--stocks", type=int, default=500, help="stocks in the index (default 500)")
    bt.add_argument("--initial", type=float, default=1_000_000.0, help="first investment")
    bt.add_argument("--monthly", type=float, default=10_000.0, help="monthly deposit")
    bt.add_argument(
        "--credit",
        choices=[c.value for c in TaxCredit],
        default=TaxCredit.IMMEDIATE.value,
        help="immediate: losses credited at the rate each month (the paper's); "
        "carryforward: yearly netting, losses carried forward",
    )
    bt.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help=f"comma-separated, from: {', '.join(STRATEGIES)}",
    )
    bt.add_argument("--out", metavar="FILE.json", help="write the JSON report here")
    bt.add_argument("--plot", metavar="FILE.png", help="write the PNG plot here (matplotlib)")
    bt.add_argument("--format", choices=("table", "json"), default="table")
    bt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    runs(bt, _run)


def config_from_args(args: argparse.Namespace) -> BacktestConfig:
    """A `BacktestConfig` from the arguments; a `CommandError` names the bad one."""
    if args.years < 1:
        raise CommandError(f"--years must be at least 1, got {args.years}")
    if args.stocks < 11:
        raise CommandError(f"--stocks must be at least 11 (one per sector), got {args.stocks}")
    if args.initial <= 0:
        raise CommandError(f"--initial must be positive, got {args.initial}")
    if args.monthly < 0:
        raise CommandError(f"--monthly must not be negative, got {args.monthly}")
    names = tuple(s.strip() for s in args.strategies.split(",") if s.strip())
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise CommandError(
            f"--strategies: unknown {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(STRATEGIES)}"
        )
    return BacktestConfig(
        market=MarketConfig(stocks=args.stocks, years=args.years, seed=args.seed),
        deposits=Deposits(initial=args.initial, monthly=args.monthly),
        taxes=TaxAssumptions(credit=TaxCredit(args.credit)),
        strategies=names,
    )


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.plot:
        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            raise CommandError(f"--plot: {exc}") from None
    with _progress(enabled=not args.no_progress) as progress:
        result = run_backtest(config, progress)
    report = result.to_dict()
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.plot:
        write_plot(result, Path(args.plot))
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(table(result))
    return _violations(args, result)


def _violations(args: argparse.Namespace, result: BacktestResult) -> int:
    status = EXIT_OK
    for r in result.results:
        if r.name in MAY_WASH or not r.wash.violations:
            continue
        status = EXIT_PROBLEMS
        error(args, f"strategy {r.name}: {r.wash.violations} wash-sale violations")
    for name, reason in result.skipped.items():
        print(f"note: strategy {name} skipped: {reason}", file=sys.stderr)
    return status


@contextmanager
def _progress(enabled: bool) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr per strategy (plain lines without rich)."""
    if not enabled:
        yield None
        return
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:
        yield _plain_progress()
        return
    bars: dict[str, object] = {}
    with Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("months"),
        console=Console(stderr=True),
        transient=False,
    ) as progress:

        def update(name: str, step: int, steps: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(name, total=steps)
            progress.update(bars[name], completed=step)  # type: ignore[arg-type]

        yield update


def _plain_progress() -> Callable[[str, int, int], None]:
    def update(name: str, step: int, steps: int) -> None:
        if step == steps or step % 12 == 0:
            print(f"{name}: {step}/{steps} months", file=sys.stderr)

    return update
