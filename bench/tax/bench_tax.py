"""Benchmark of the pure tax engine; writes JSON.

    uv run python bench/tax/bench_tax.py [--out bench/results/tax.json] [--accounts 10000]

Scenarios (all in memory, no I/O, seeded):

1. ``direct_index_year``: a 500-name direct-indexed account over one year of weekdays:
   initial funding, monthly deposits, monthly tax-loss harvesting with replacements and
   swap-backs after the wash window, the engine honouring buy/sell wash-sale blocks. Then
   the year's trades are replayed through ``replay`` (the Form 8949 path).
2. ``daily_fills``: one day's fill volume of ``--accounts`` such accounts (fills per account
   per day taken from scenario 1), in households of two, applied fill by fill to a ledger
   seeded with open lots: fills per second.
3. ``household_wash_check``: a household of four 500-name accounts (~6,000 lots): time of
   the before-the-fact checks (buy blocks, sell blocks at prices) and of applying one loss
   sale (after-the-fact matching across the household).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from ballast_engine.tax import (
    Fill,
    HarvestPolicy,
    InsufficientQuantityError,
    LedgerAccount,
    Side,
    TaxLedger,
    TaxRates,
    propose_harvests,
    replay,
)

D = Decimal
CENT = D("0.01")
SHARE = D("0.001")
RATES = TaxRates(short_term=D("0.37"), long_term=D("0.20"))
YEAR = 2025


def weekdays(year: int) -> list[date]:
    day, out = date(year, 1, 1), []
    while day.year == year:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


def price_paths(names: list[str], days: int, rng: random.Random) -> list[dict[str, Decimal]]:
    """Daily prices: each name and its replacement "<name>R" share a market and a name factor."""
    level = {n: rng.uniform(20, 400) for n in names}
    repl = {n: level[n] * rng.uniform(0.5, 2.0) for n in names}
    out = []
    for _ in range(days):
        market = rng.gauss(0.0003, 0.01)
        snap: dict[str, Decimal] = {}
        for n in names:
            own = rng.gauss(0, 0.018)
            level[n] *= math.exp(market + own)
            repl[n] *= math.exp(market + 0.8 * own + rng.gauss(0, 0.008))
            snap[n] = D(str(round(level[n], 2)))
            snap[n + "R"] = D(str(round(repl[n], 2)))
        out.append(snap)
    return out


class Run:
    """Trade ids and the trade log of one simulated account."""

    def __init__(self, ledger: TaxLedger, account: str) -> None:
        self.ledger, self.account, self.n = ledger, account, 0
        self.trades: list[Fill] = []

    def trade(
        self,
        on: date,
        symbol: str,
        side: Side,
        qty: Decimal,
        price: Decimal,
        lots: tuple[str, ...] = (),
    ) -> None:
        self.n += 1
        t = Fill(
            f"{self.account}-{self.n}", self.account, on, symbol, side, qty, price, lot_ids=lots
        )
        self.ledger.apply(t)
        self.trades.append(t)


def direct_index_year(n_names: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    names = [f"S{i:03d}" for i in range(n_names)]
    days = weekdays(YEAR)
    prices = price_paths(names, len(days), rng)
    ledger = TaxLedger([LedgerAccount("DI", "H1")])
    run = Run(ledger, "DI")
    policy = HarvestPolicy(
        min_loss_percent=D(5),
        min_loss_dollars=D(25),
        share_quantum=SHARE,
        schedule=((10, D(8), D(50)),),
    )
    per_name = D(2_000_000) / n_names
    swaps: list[tuple[date, str, str]] = []  # (swap back on, replacement, original)
    harvests = 0
    saved = D(0)
    engine_time = 0.0
    t0 = time.perf_counter()
    for i, (day, px) in enumerate(zip(days, prices, strict=True)):
        if i == 0:
            for n in names:
                run.trade(day, n, Side.BUY, (per_name / px[n]).quantize(SHARE), px[n])
            continue
        new_month = day.month != days[i - 1].month
        # swap back replacements whose wash window is over
        due = [s for s in swaps if s[0] <= day]
        for s in due:
            swaps.remove(s)
            _, repl, orig = s
            qty = ledger.position("DI", repl)
            if qty <= 0:
                continue
            blocked = {b for blk in ledger.buy_blocks("DI", day) for b in blk.symbols}
            sellable = {b.lot_id for b in ledger.sell_blocks("DI", day, px)}
            if orig in blocked or any(x.lot_id in sellable for x in ledger.lots("DI", repl)):
                continue
            run.trade(day, repl, Side.SELL, qty, px[repl])
            run.trade(day, orig, Side.BUY, (qty * px[repl] / px[orig]).quantize(SHARE), px[orig])
        if not new_month:
            continue
        # monthly harvest
        h0 = time.perf_counter()
        lots = ledger.lots("DI")
        plan = propose_harvests(
            "DI",
            lots,
            px,
            day,
            policy,
            RATES,
            replacements={n: [n + "R"] for n in names},
            buy_blocked=[s for b in ledger.buy_blocks("DI", day) for s in b.symbols],
            sell_blocked={b.lot_id for b in ledger.sell_blocks("DI", day, px)},
        )
        engine_time += time.perf_counter() - h0
        for p in plan.proposals:
            run.trade(
                day,
                p.sell_symbol,
                Side.SELL,
                p.quantity,
                px[p.sell_symbol],
                tuple(lot_id for lot_id, _ in p.lots),
            )
            if p.buy_quantity > 0:
                run.trade(day, p.buy_symbol, Side.BUY, p.buy_quantity, px[p.buy_symbol])
            if p.swap_back_on is not None:
                swaps.append((p.swap_back_on, p.buy_symbol, p.sell_symbol))
            harvests += 1
            saved += p.tax_saved
        # monthly deposit after the harvest: $2,500 into each of up to 100 names that hold
        # no loss lot (buying a loser would block harvesting it), skipping wash-sale blocks
        blocked = {b for blk in ledger.buy_blocks("DI", day) for b in blk.symbols}
        losers = {x.symbol for x in ledger.lots("DI") if x.quantity * px[x.symbol] < x.cost_basis}
        eligible = [n for n in names if n not in blocked and n not in losers]
        for n in rng.sample(eligible, min(100, len(eligible))):
            run.trade(day, n, Side.BUY, (D(2500) / px[n]).quantize(SHARE), px[n])
    simulated = time.perf_counter() - t0
    lots_held = len(ledger.lots("DI"))
    lots_opened = sum(1 for t in run.trades if t.side is Side.BUY)
    t1, c1 = time.perf_counter(), time.process_time()
    replayed = replay(run.trades, [LedgerAccount("DI", "H1")])
    replay_s, replay_cpu = time.perf_counter() - t1, time.process_time() - c1
    assert [d.gain_loss for d in replayed.disposals] == [d.gain_loss for d in ledger.disposals]
    return {
        "names": n_names,
        "trading_days": len(days),
        "fills": len(run.trades),
        "lots_opened": lots_opened,
        "open_lots_at_year_end": lots_held,
        "harvests": harvests,
        "estimated_tax_saved": str(saved),
        "realized": {k: str(v) for k, v in vars_of(ledger.realized()).items()},
        "wash_sales_created": sum(1 for d in ledger.disposals if d.code == "W"),
        "simulation_seconds": round(simulated, 3),
        "harvest_proposal_seconds_total": round(engine_time, 3),
        "harvest_proposal_ms_per_month": round(engine_time / 11 * 1000, 2),
        "replay_seconds": round(replay_s, 3),
        "replay_cpu_seconds": round(replay_cpu, 3),
        "replay_fills_per_second": round(len(run.trades) / replay_s),
        "replay_fills_per_cpu_second": round(len(run.trades) / replay_cpu),
        "fills_per_account_day": len(run.trades) / len(days),
    }


def vars_of(summary: object) -> dict[str, object]:
    return {
        "short_term": summary.short_term,  # type: ignore[attr-defined]
        "long_term": summary.long_term,  # type: ignore[attr-defined]
        "disallowed": summary.disallowed,  # type: ignore[attr-defined]
    }


def daily_fills(n_accounts: int, fills_per_account: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    accounts = [LedgerAccount(f"A{i:05d}", f"H{i // 2:05d}") for i in range(n_accounts)]
    symbols = [f"S{i:03d}" for i in range(500)]
    day = date(YEAR, 6, 2)
    held: dict[str, list[str]] = {}
    n = 0
    t0 = time.perf_counter()
    # each account holds 20 names with ~3 lots each (as a 1,500-lot, 500-name account does)
    seed_trades = []
    for acct in accounts:
        held[acct.account_id] = rng.sample(symbols, 20)
        for sym in held[acct.account_id]:
            for k in range(3):
                n += 1
                acquired = day - timedelta(days=rng.randint(40, 700) + k)
                qty, price = D(rng.randint(5, 60)), D(rng.randint(2000, 30000)) / 100
                seed_trades.append(
                    Fill(f"s{n}", acct.account_id, acquired, sym, Side.BUY, qty, price)
                )
    ledger = replay(seed_trades, accounts)
    setup = time.perf_counter() - t0
    fills = []
    for acct in accounts:
        for _ in range(fills_per_account):
            n += 1
            sym = rng.choice(held[acct.account_id])
            price = D(rng.randint(2000, 30000)) / 100
            if rng.random() < 0.5 and ledger.position(acct.account_id, sym) > 1:
                fills.append(Fill(f"f{n}", acct.account_id, day, sym, Side.SELL, D(1), price))
            else:
                fills.append(Fill(f"f{n}", acct.account_id, day, sym, Side.BUY, D(2), price))
    t1, c1 = time.perf_counter(), time.process_time()
    rejected = 0
    for f in fills:
        try:
            ledger.apply(f)
        except InsufficientQuantityError:  # a sell of a share already sold that day; rare
            rejected += 1
    elapsed, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {
        "accounts": n_accounts,
        "households": n_accounts // 2,
        "open_lots_before": len(seed_trades),
        "fills": len(fills),
        "fills_per_account": fills_per_account,
        "setup_seconds": round(setup, 3),
        "apply_seconds": round(elapsed, 3),
        "apply_cpu_seconds": round(cpu, 3),
        "fills_per_second": round(len(fills) / elapsed),
        "fills_per_cpu_second": round(len(fills) / cpu),
        "rejected_fills": rejected,
        "wash_sales": sum(1 for d in ledger.disposals if d.code == "W"),
    }


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU milliseconds of ``fn`` (CPU time: the machine may be shared)."""
    samples = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        samples.append(time.process_time() - t)
    return statistics.median(samples) * 1000


def household_wash_check(seed: int, repeat: int) -> dict[str, object]:
    rng = random.Random(seed)
    symbols = [f"S{i:03d}" for i in range(500)]
    accounts = [LedgerAccount(f"HH-{k}", "HH") for k in range(4)]
    day = date(YEAR, 9, 2)
    trades = []
    n = 0
    for acct in accounts:
        for sym in symbols:
            for _ in range(3):
                n += 1
                trades.append(
                    Fill(
                        f"t{n}",
                        acct.account_id,
                        day - timedelta(days=rng.randint(1, 500)),
                        sym,
                        Side.BUY,
                        D(rng.randint(1, 40)),
                        D(rng.randint(5000, 15000)) / 100,
                    )
                )
    ledger = replay(trades, accounts)
    prices = {s: D(100) for s in symbols}
    acct = accounts[0].account_id
    buy_ms = timed(lambda: ledger.buy_blocks(acct, day), repeat)
    sell_ms = timed(lambda: ledger.sell_blocks(acct, day, prices), repeat)
    sells = iter(range(10**6))

    def loss_sale() -> None:
        i = next(sells)
        sym = symbols[i % 500]
        ledger.apply(Fill(f"x{i}", acct, day, sym, Side.SELL, D("0.01"), D(1)))

    sale_ms = timed(loss_sale, repeat)
    return {
        "accounts": len(accounts),
        "open_lots": len(ledger.lots()),
        "buy_blocks_cpu_ms": round(buy_ms, 3),
        "sell_blocks_cpu_ms": round(sell_ms, 3),
        "loss_sale_with_household_match_cpu_ms": round(sale_ms, 3),
        "recent_loss_windows_after": len(ledger.loss_windows("HH", day)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/tax.json"))
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--names", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--seed", type=int, default=20250101)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print("direct-index year ...", file=sys.stderr)
    year = direct_index_year(args.names, args.seed)
    per_day = max(1, math.ceil(float(year["fills_per_account_day"])))  # type: ignore[arg-type]
    print(f"daily fills of {args.accounts} accounts ({per_day} each) ...", file=sys.stderr)
    fills = daily_fills(args.accounts, per_day, args.seed)
    print("household wash check ...", file=sys.stderr)
    check = household_wash_check(args.seed, args.repeat)
    result = {
        "benchmark": "tax",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seed": args.seed,
        "direct_index_year": year,
        "daily_fills": fills,
        "household_wash_check": check,
        "total_seconds": round(time.perf_counter() - started, 2),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpus": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
