"""A generated book of any size as a book file set (docs/book-files.md), for `make bench-scale`.

    python bench/scale/make_book.py --accounts 100000 --out .state/bench/books [--seed 1]

Shaped as the issue asks: about 1,000 advisors' books of 100 accounts in households of one to
three; 10% three-sleeve UMAs, 10% direct-indexed accounts holding 300+ names, the rest SMAs of
20-40 positions; 2-4 lots per position. Written as a stream (no account is kept once its rows
are out), deterministic for a seed. Models are written to models.json beside the folder, for
the benchmark to publish. The "core" model is followed by at least half of the accounts (SMAs
and every UMA's first sleeve): the benchmark changes it. With `--children N` (make
bench-workflow) the SMAs that would follow core follow its N child models instead, in turn
(`core_child(i)`; the benchmark publishes them), holding the same positions: the same
random draws, so the book differs from the plain one only in those accounts' model_id.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

AS_OF = "2026-12-04"
SECTORS = (
    "Information Technology",
    "Health Care",
    "Financials",
    "Consumer Discretionary",
    "Communication Services",
    "Industrials",
    "Consumer Staples",
    "Energy",
    "Utilities",
    "Real Estate",
    "Materials",
)
ETFS = ("SCBND", "SCINTL", "SCSMALL", "SCEM", "SCTIPS", "SCREIT", "SCGOLD", "SCMUNI")


@dataclass(frozen=True)
class Model:
    model_id: str
    name: str
    symbols: tuple[str, ...]

    def targets(self) -> dict[str, str]:
        weight = 1 / len(self.symbols)
        weights = [round(weight, 6)] * len(self.symbols)
        weights[0] = round(1 - sum(weights[1:]), 6)
        return dict(zip(self.symbols, (f"{w:.6f}" for w in weights), strict=True))


def universe(rng: random.Random) -> dict[str, tuple[str, str, float]]:
    """symbol -> (asset class, sector, price): 520 stocks and a few ETFs."""
    out: dict[str, tuple[str, str, float]] = {}
    for i in range(520):
        out[f"S{i:03d}"] = ("US Equity", SECTORS[i % len(SECTORS)], round(rng.uniform(8, 600), 2))
    for symbol in ETFS:
        asset = "Fixed Income" if symbol in ("SCBND", "SCTIPS", "SCMUNI") else "Intl Equity"
        out[symbol] = (asset, "Funds", round(rng.uniform(20, 120), 2))
    return out


def models() -> list[Model]:
    stocks = [f"S{i:03d}" for i in range(520)]
    return [
        Model("core", "Scale Core 40", tuple(stocks[:40])),
        Model("growth", "Scale Growth 30", tuple(stocks[40:70])),
        Model("dividend", "Scale Dividend 25", tuple(stocks[70:95])),
        Model("balanced", "Scale Balanced ETF", ETFS),
        Model("index", "Scale Direct Index 320", tuple(stocks[100:420])),
    ]


def core_child(index: int) -> str:
    """The id of core's child model number `index` (from 0), as `--children` books name it."""
    return f"core-c{index + 1:04d}"


def changed_core() -> Model:
    """The model change the benchmark makes: two names of core swapped for two others."""
    core = models()[0]
    return Model(core.model_id, core.name, (*core.symbols[2:], "S430", "S431"))


UMA_SLEEVES = (("core", "core", "0.5"), ("income", "dividend", "0.2"), ("etf", "balanced", "0.3"))


def write(folder: Path, accounts: int, seed: int, children: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    securities = universe(rng)
    by_id = {m.model_id: m for m in models()}
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        name: (folder / name).open("w", buffering=1 << 20)
        for name in (
            "securities.csv",
            "prices.csv",
            "households.csv",
            "accounts.csv",
            "sleeves.csv",
            "cash.csv",
            "positions.csv",
            "lots.csv",
            "restrictions.csv",
        )
    }
    files["securities.csv"].write("symbol,name,asset_class,sector,fractional_eligible\n")
    files["prices.csv"].write("symbol,price\n")
    for symbol, (asset, sector, price) in securities.items():
        files["securities.csv"].write(f"{symbol},{symbol} Corp,{asset},{sector},true\n")
        files["prices.csv"].write(f"{symbol},{price:.2f}\n")
    files["households.csv"].write("household_id,name,tenant\n")
    files["accounts.csv"].write(
        "account_id,household_id,name,tenant,account_type,model_id,auto_approve,relief_method,"
        "harvest\n"
    )
    files["sleeves.csv"].write("account_id,sleeve_id,model_id,weight,band_kind,band_width\n")
    files["cash.csv"].write("account_id,amount\n")
    files["positions.csv"].write("account_id,symbol,quantity\n")
    files["lots.csv"].write("account_id,symbol,lot_id,quantity,acquired_on,cost_basis,sleeve_id\n")
    files["restrictions.csv"].write("account_id,kind,scope,value,source,reason\n")
    counts = {"accounts": 0, "households": 0, "umas": 0, "positions": 0, "lots": 0}
    core_followers = 0
    household = 0
    while counts["accounts"] < accounts:
        household += 1
        hh = f"HH-{household:06d}"
        advisor = household // 50
        files["households.csv"].write(f"{hh},Family {household},demo\n")
        counts["households"] += 1
        for _ in range(min(rng.choice((1, 1, 2, 2, 3)), accounts - counts["accounts"])):
            counts["accounts"] += 1
            account_id = f"A{counts['accounts']:07d}"
            kind = rng.random()
            account_type = "ira" if rng.random() < 0.25 else "taxable"
            value = min(max(rng.lognormvariate(12.6, 0.7), 40_000), 3_000_000)
            if kind < 0.10:  # a UMA of three sleeves
                counts["umas"] += 1
                sleeves = [(s, by_id[m], float(w)) for s, m, w in UMA_SLEEVES]
                model_id = ""
                for sleeve_id, model_key, weight in UMA_SLEEVES:
                    files["sleeves.csv"].write(
                        f"{account_id},{sleeve_id},{model_key},{weight},absolute,0.05\n"
                    )
            elif kind < 0.20:  # a direct index of 320 names
                value = max(value, 250_000)
                sleeves = [("", by_id["index"], 1.0)]
                model_id = "index"
            else:
                model = by_id[
                    rng.choices(
                        ("core", "growth", "dividend", "balanced"), (0.62, 0.14, 0.14, 0.10)
                    )[0]
                ]
                sleeves = [("", model, 1.0)]
                model_id = model.model_id
                if children and model_id == "core":
                    model_id = core_child(core_followers % children)
                    core_followers += 1
            relief = rng.choice(("fifo", "hifo", "mintax"))
            harvest = "true" if account_type == "taxable" and rng.random() < 0.3 else "false"
            files["accounts.csv"].write(
                f"{account_id},{hh},Account {counts['accounts']} (advisor {advisor}),demo,"
                f"{account_type},{model_id},true,{relief},{harvest}\n"
            )
            if rng.random() < 0.05:
                files["restrictions.csv"].write(
                    f"{account_id},do_not_buy,sector,Energy,client,client excludes energy\n"
                )
            cash = value * rng.uniform(0.002, 0.03)
            files["cash.csv"].write(f"{account_id},{cash:.2f}\n")
            for sleeve_id, model, weight in sleeves:
                names = list(model.symbols)
                if len(names) > 8 and model.model_id != "index":
                    drop = rng.randint(0, max(0, len(names) - 20))
                    names = names[: len(names) - drop] if len(names) - drop >= 20 else names
                for symbol in names:
                    price = securities[symbol][2]
                    dollars = value * weight / len(model.symbols) * rng.uniform(0.9, 1.1)
                    shares = int(dollars / price)
                    if shares < 2:
                        continue
                    counts["positions"] += 1
                    files["positions.csv"].write(f"{account_id},{symbol},{shares}\n")
                    pieces = min(shares, rng.randint(2, 4))
                    size = shares // pieces
                    for n in range(pieces):
                        quantity = size if n < pieces - 1 else shares - size * (pieces - 1)
                        year = rng.randint(2021, 2026)
                        month = rng.randint(1, 10 if year == 2026 else 12)
                        basis = quantity * price * rng.uniform(0.6, 1.3)
                        counts["lots"] += 1
                        files["lots.csv"].write(
                            f"{account_id},{symbol},{symbol}-{n + 1},{quantity},"
                            f"{year}-{month:02d}-{rng.randint(1, 28):02d},{basis:.2f},"
                            f"{sleeve_id}\n"
                        )
    for f in files.values():
        f.close()
    return counts


def book_name(accounts: int, seed: int, children: int = 0) -> str:
    """The folder a book of this size, seed and number of core's children is written to."""
    return f"{accounts}-{seed}" + (f"-children{children}" if children else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(".state/bench/books"))
    parser.add_argument(
        "--children", type=int, default=0, help="core's SMAs follow this many child models"
    )
    args = parser.parse_args()
    root = args.out / book_name(args.accounts, args.seed, args.children)
    folder = root / AS_OF
    started = time.monotonic()
    counts = write(folder, args.accounts, args.seed, args.children)
    (root / "models.json").write_text(
        json.dumps({m.model_id: {"name": m.name, "targets": m.targets()} for m in models()})
    )
    print(
        json.dumps(
            {"folder": str(folder), **counts, "seconds": round(time.monotonic() - started, 1)}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
