"""`make demo`: start Ballast locally, load a realistic book, change a model, show the result.

python -m ballast_demo [--accounts 1000] [--port-base 8000] [--book managed|plain]
python -m ballast_demo --bench --out bench/results/flow.json   (what `make bench-flow` runs)

The managed book (the default) has UMAs, restrictions, equivalent holdings, tax settings and
multi-lot positions; the plain book is SMAs holding their model, one lot per position (the
book earlier benchmark figures were measured on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from statistics import median
from typing import Any

from ballast_cli.book import RichReporter, progress_columns
from ballast_common.auth import LocalIssuer, local_issuer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ballast_demo import direct_index as di
from ballast_demo.book import (
    EQUIVALENCE_SETS,
    MODELS,
    SECURITIES,
    SECURITY_LISTS,
    build_accounts,
    changed_core_model,
)
from ballast_demo.custodian_day import DayClosed, day_closed, day_rows
from ballast_demo.driver import OVERLAY_MANAGER, Ballast, DriverError, Urls, persona_token

console = Console()
DATABASE = "ballast_demo"
DIRECT_INDEX = "us-direct-index-300"
DIRECT_INDEX_NAMES = 300


def repo_root() -> Path:
    for folder in (Path.cwd(), *Path.cwd().parents):
        if (folder / "scripts" / "stack.py").exists():
            return folder
    raise SystemExit("demo: run me from the Ballast repository (scripts/stack.py not found)")


def run_script(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"demo: {' '.join(args)} failed:\n{result.stderr or result.stdout}")
    return result.stdout


def stack_env(root: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in run_script(root, "scripts/stack.py", "env").splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip("'\"")
    return env


def start_services(root: Path, port_base: int) -> tuple[Path, LocalIssuer]:
    """A fresh database and topic prefix for every demo run, the local token issuer, then the
    services (checking tokens against the issuer's keys)."""
    stack = stack_env(root)
    issuer = local_issuer(Path(stack["BALLAST_AUTH_KEYS"]))
    run_script(root, "scripts/services.py", "down", "--profile", "demo")
    run_script(root, "scripts/stack.py", "dropdb", DATABASE)
    run_script(root, "scripts/stack.py", "createdb", DATABASE)
    state = Path(stack.get("BALLAST_STATE_DIR", root / ".state")) / "demo"
    state.mkdir(parents=True, exist_ok=True)
    traces = state / "traces.jsonl"
    traces.unlink(missing_ok=True)
    base_url = stack["BALLAST_DATABASE_URL"].rsplit("/", 1)[0]
    env = dict(os.environ)
    env.update(
        {
            "BALLAST_DATABASE_URL": f"{base_url}/{DATABASE}",
            "BALLAST_KAFKA_BOOTSTRAP_SERVERS": stack.get("BALLAST_KAFKA_BOOTSTRAP_SERVERS")
            or stack["BALLAST_KAFKA_BOOTSTRAP"],
            "BALLAST_TOPIC_PREFIX": f"demo{datetime.now(UTC):%Y%m%d%H%M%S}.",
            "BALLAST_TRACE_FILE": str(traces),
            "BALLAST_LOG_LEVEL": "WARNING",
            "BALLAST_AUTH_JWKS": str(issuer.jwks_path),
        }
    )
    with console.status("Starting the six services and the custodian simulator..."):
        run_script(
            root,
            "scripts/services.py",
            "up",
            "--profile",
            "demo",
            "--port-base",
            str(port_base),
            env=env,
        )
    return traces, issuer


async def drive(
    urls: Urls,
    issuer: LocalIssuer,
    accounts_wanted: int,
    seed: int,
    managed: bool,
    book_root: Path,
    direct_indexed: int,
) -> dict[str, Any]:
    accounts = build_accounts(accounts_wanted, seed, instructions=managed)
    index = di.index_names(DIRECT_INDEX_NAMES, seed=seed)
    # every third direct-indexed client excludes one of the index's larger names
    excluded = sorted(index, key=lambda n: n.weight)[-30].symbol
    indexed = di.build_accounts(index, DIRECT_INDEX, direct_indexed, seed=seed, exclusion=excluded)
    ballast = Ballast(urls, issuer, say=lambda text: console.print(f"[yellow]{text}[/]"))
    load_columns = progress_columns()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    percent_columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as bar:
            step = bar.add_task("Security master", total=len(SECURITIES))
            bar.update(step, completed=await ballast.load_securities())
            if managed:
                sets = len(EQUIVALENCE_SETS) + len(SECURITY_LISTS)
                step = bar.add_task("Equivalence sets and lists", total=sets)
                bar.update(step, completed=await ballast.load_reference_sets())
            step = bar.add_task("Models", total=len(MODELS))
            for i, model in enumerate(MODELS, 1):
                await ballast.publish_model(model)
                bar.update(step, completed=i)
            if indexed:
                step = bar.add_task("Direct index (300 names, 4 factors)", total=2)
                await ballast.load_more_securities(di.security_rows(index))
                bar.update(step, completed=1)
                await ballast.publish_model_body(DIRECT_INDEX, di.model_body(index))
                bar.update(step, completed=2)
        book = accounts + indexed
        loaded = time.monotonic()
        with Progress(*load_columns, console=console) as bar:
            await ballast.load_book(
                book,
                book_root,
                reporter=RichReporter(bar),
                more_securities=di.securities(index) if indexed else None,
            )
        book_load_s = round(time.monotonic() - loaded, 3)
        console.print(
            f"Book of {len(book):,} accounts ({len(indexed)} direct-indexed) loaded from "
            f"{book_root} in {book_load_s:.1f} s (ballast book load)"
        )
        with Progress(*columns, console=console) as bar:
            step = bar.add_task("Rebalancer learning the book", total=len(book))
            await ballast.wait_until_known(
                len(book), len(SECURITIES), lambda n: bar.update(step, completed=n)
            )

        events_before = await ballast.events_processed()
        change = changed_core_model()
        following = sum(
            1
            for a in accounts
            if a.model_id == change.model_id or any(m == change.model_id for _, m, _ in a.sleeves)
        )
        umas = sum(1 for a in accounts if a.is_uma)
        console.print(
            f"\n[bold]Model change:[/] {change.name} replaces PFE and CSCO with AMD and NFLX "
            f"({following} accounts follow it{f', {umas} UMAs in the book' if umas else ''})"
        )
        started = time.monotonic()
        published = await ballast.publish_model(change)
        run = await ballast.wait_for_run(change.model_id, published["version"])
        with Progress(*percent_columns, console=console) as bar:
            step = bar.add_task(f"{run['trades']} trades filled and reconciled", total=100)

            def show(progress: dict[str, Any]) -> None:
                # reporting-svc's share of the run done: fills received and reflected in holdings
                bar.update(step, completed=round(100 * progress.get("progress", 0)))

            final = await ballast.wait_until_complete(run, show)
        elapsed = time.monotonic() - started
        events_after = await ballast.events_processed()
        gateway, custodian = await ballast.gateway_stats(), await ballast.custodian_stats()
        optimized = await reconstitute_index(ballast, index, percent_columns) if indexed else {}
        harvest: dict[str, Any] = {}
        if managed:
            harvest = await harvest_losses(ballast, percent_columns)
        day = await close_day(ballast, datetime.now(UTC).date())  # the trades' date
        return {
            "run": run,
            "progress": final,
            "elapsed_s": round(elapsed, 3),
            "events_processed": events_after - events_before,
            "gateway": gateway,
            "custodian": custodian,
            "accounts_following": following,
            "accounts_in_book": len(accounts),
            "book": "managed" if managed else "plain",
            "book_load_s": book_load_s,
            "harvest": harvest,
            "day": day,
            "umas": umas,
            "restricted": sum(1 for a in accounts if a.restrictions),
            "direct_index": optimized,
        }
    finally:
        await ballast.close()


async def reconstitute_index(
    ballast: Ballast, index: list[di.IndexName], columns: tuple[Any, ...]
) -> dict[str, Any]:
    """The direct index is reconstituted (its weights move): rebalance-svc runs the sleeves
    following it through the optimizer; their proposals carry the tracking error after."""
    console.print(
        f"\n[bold]Direct index change:[/] {DIRECT_INDEX} reconstituted (its 8 smallest names "
        "leave); its sleeves go through the optimizer"
    )
    started = time.monotonic()
    published = await ballast.publish_model_body(
        DIRECT_INDEX, di.model_body(di.reconstituted(index))
    )
    run = await ballast.wait_for_run(DIRECT_INDEX, published["version"])
    proposed_s = time.monotonic() - started
    final: dict[str, Any] = {}
    if run["proposals"]:
        with Progress(*columns, console=console) as bar:
            step = bar.add_task(f"{run['trades']} optimizer trades filled", total=100)
            final = await ballast.wait_until_complete(
                run, lambda p: bar.update(step, completed=round(100 * p.get("progress", 0)))
            )
    elapsed = time.monotonic() - started
    proposals = await ballast.proposals_of_run(run["run_id"])
    after = sorted(
        float(p["tracking_error_after_percent"])
        for p in proposals
        if p.get("tracking_error_after_percent") is not None
    )
    return {
        "run": run,
        "progress": final,
        "sleeves_optimized": len(after),
        "median_tracking_error_after_percent": median(after) if after else None,
        "proposed_s": round(proposed_s, 3),
        "elapsed_s": round(elapsed, 3),
    }


async def harvest_losses(ballast: Ballast, columns: tuple[Any, ...]) -> dict[str, Any]:
    """After the model change: harvest tax losses where accounts have harvesting on, and
    follow those trades to the book of record too."""
    console.print("\n[bold]Tax-loss harvest[/] over the accounts that have it on")
    # an account whose model-change trades rebalance-svc has not seen settle yet would be
    # skipped: wait until it has seen them all
    await ballast.wait_until_settled()
    run = await ballast.harvest()
    if not run["proposals"]:
        return {"run": run, "progress": {}}
    with Progress(*columns, console=console) as bar:
        step = bar.add_task(f"{run['trades']} harvest trades", total=100)
        final = await ballast.wait_until_complete(
            run,
            lambda p: bar.update(step, completed=round(100 * p.get("progress", 0))),
            measured=False,
        )
    return {"run": run, "progress": final}


async def close_day(ballast: Ballast, day: date) -> DayClosed:
    """The custodian's day: once every allocation is booked at the custodian, its files for
    the day, reconciled lot by lot with the book of record at taxlot-svc."""
    console.print(f"\n[bold]The custodian's day[/] {day.isoformat()}: files in, reconciled")
    with console.status("Custodian writing the day's files, taxlot-svc reconciling them..."):
        booking = await ballast.wait_until_booked()
        started = time.monotonic()
        folder = await ballast.custodian_files(day)
        outcome, first = await ballast.reconcile_custodian_day(folder, day)
    elapsed = time.monotonic() - started
    return day_closed(outcome, first, str(folder), elapsed, booking.get("refused", 0))


def _money(value: Any) -> str:
    return "—" if value is None else f"${float(value):,.2f}"


def show_summary(result: dict[str, Any], urls: Urls, traces: Path, dashboard_token: str) -> None:
    run, progress = result["run"], result["progress"]
    table = Table(title="Model change, end to end", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("Accounts in the book", result["accounts_in_book"]),
        ("  of which UMAs (three sleeves)", result["umas"]),
        ("  with client restrictions", result["restricted"]),
        ("Accounts following the changed model", result["accounts_following"]),
        ("Accounts rebalanced", run["accounts_evaluated"]),
        ("Accounts skipped", run["accounts_skipped"]),
        ("Trade proposals (auto-approved)", run["proposals"]),
        ("Trades", run["trades"]),
        ("Orders sent to the custodian", result["custodian"].get("orders_received")),
        ("Fills received", progress.get("fills")),
        ("Trades rejected by the custodian", progress.get("trades_rejected")),
        ("Elapsed: model change to last holdings reconciled", f"{result['elapsed_s']:.1f} s"),
        ("Events processed by the services", result["events_processed"]),
        ("Events per second", f"{result['events_processed'] / result['elapsed_s']:.0f}"),
        ("Estimated tax of the sells (negative: saved)", _money(progress.get("estimated_tax"))),
    ]
    harvest = result.get("harvest") or {}
    if harvest:
        h_run, h_progress = harvest["run"], harvest["progress"]
        rows += [
            ("Tax-loss harvest: accounts harvested", h_run["proposals"]),
            ("  harvest trades (sells and replacements)", h_run["trades"]),
            ("  estimated tax saved", _money(-float(h_progress.get("estimated_tax") or 0))),
        ]
    optimized = result.get("direct_index") or {}
    if optimized:
        te = optimized["median_tracking_error_after_percent"]
        rows += [
            ("Direct index change: accounts following it", optimized["run"]["accounts"]),
            ("  sleeves through the optimizer", optimized["sleeves_optimized"]),
            ("  median tracking error after", "—" if te is None else f"{te:.2f}% a year"),
            ("  optimizer trades", optimized["run"]["trades"]),
            ("  elapsed: change to proposals", f"{optimized['proposed_s']:.1f} s"),
            ("  elapsed: change to last holdings reconciled", f"{optimized['elapsed_s']:.1f} s"),
        ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    day: DayClosed = result["day"]
    closed = Table(title="The custodian's day", show_header=False, title_justify="left")
    closed.add_column(style="bold")
    closed.add_column(justify="right")
    for name, text in day_rows(day):
        closed.add_row(name, text)
    console.print(closed)
    if day.lot_breaks or day.accounts_held:
        console.print(
            f"[yellow]{day.lot_breaks:,} lot break(s); {day.accounts_held:,} account(s) held "
            f"from trading: GET {urls.taxlot}/breaks lists them[/]"
        )
    # The token rides in the fragment: the page keeps it and sends it; servers never see it.
    # Not wrapped: the address must survive a copy from the terminal.
    console.print(
        f"\n[bold]Dashboard:[/]  {urls.reporting}/#token={dashboard_token}", soft_wrap=True
    )
    console.print(
        "            (signed in as overlay@demo; `ballast auth token --tenant demo --role "
        "<role>` makes a token to sign in as anyone else)"
    )
    console.print(f"[bold]This run:[/]   {urls.reporting}/#/runs/{run['run_id']}", soft_wrap=True)
    console.print(
        "[bold]APIs:[/]       "
        + "  ".join(
            f"{name} {url}/docs"
            for name, url in (
                ("account", urls.account),
                ("model-hub", urls.model_hub),
                ("rebalance", urls.rebalance),
                ("taxlot", urls.taxlot),
                ("gateway", urls.gateway),
                ("reporting", urls.reporting),
            )
        )
    )
    console.print(
        f"[bold]Traces:[/]     {traces} (one JSON span a line; set BALLAST_OTLP_ENDPOINT "
        "to send them to a collector)"
    )
    console.print("The services keep running; `make down` stops them.")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="make demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--port-base", type=int, default=8000)
    parser.add_argument(
        "--book",
        choices=("managed", "plain"),
        default="managed",
        help="managed: UMAs, restrictions, tax settings, lots (default); plain: SMAs only",
    )
    parser.add_argument(
        "--direct-indexed",
        type=int,
        default=24,
        help="accounts following the 300-name direct index (0: none)",
    )
    parser.add_argument("--bench", action="store_true", help="write JSON results, stop after")
    parser.add_argument("--out", default="bench/results/flow.json")
    args = parser.parse_args()
    root = repo_root()
    traces, issuer = start_services(root, args.port_base)
    urls = Urls.on_port_base(args.port_base)
    try:
        book_root = traces.parent / "books" / args.book
        result = asyncio.run(
            drive(
                urls,
                issuer,
                args.accounts,
                args.seed,
                args.book == "managed",
                book_root,
                args.direct_indexed,
            )
        )
    except DriverError as exc:
        console.print(f"[red]demo: {exc}[/]")
        console.print("Service logs: .state/services/demo/*.log")
        return 1
    show_summary(result, urls, traces, persona_token(issuer, OVERLAY_MANAGER))
    if args.bench:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "benchmark": "flow",
                    "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "book": result["book"],
                    "accounts_in_book": result["accounts_in_book"],
                    "book_load_s": result["book_load_s"],
                    "accounts_rebalanced": result["run"]["accounts_evaluated"],
                    "trades": result["run"]["trades"],
                    "fills": result["progress"].get("fills"),
                    "model_change_to_last_holdings_reconciled_s": result["elapsed_s"],
                    "events_processed": result["events_processed"],
                    "events_per_second": round(result["events_processed"] / result["elapsed_s"], 1),
                    "custodian_day": result["day"].as_json(),
                },
                indent=2,
            )
            + "\n"
        )
        console.print(f"Results written to {out}")
        run_script(root, "scripts/services.py", "down", "--profile", "demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
