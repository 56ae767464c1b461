"""A small, realistic sample book fed through reporting-svc's handlers: securities, two
models, accounts, opening holdings and a rebalance run with approvals, fills (some partial),
a reject and reconciled holdings.

Tests use `load_sample`; to work on the dashboard without the other five services:
`.venv/bin/python services/reporting-svc/tests/sample_book.py --database-url
postgresql://.../ballast_reporting_dev`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from ballast_common.contracts import events as ev
from ballast_common.db import Database
from ballast_common.testing import envelope, migrated_database
from reporting_events import deliver
from reporting_svc import repository as repo

SECURITIES = [
    ("AAPL", "Apple Inc", "US Equity", "Information Technology", "228.40"),
    ("MSFT", "Microsoft Corp", "US Equity", "Information Technology", "415.20"),
    ("NVDA", "NVIDIA Corp", "US Equity", "Information Technology", "141.95"),
    ("AMZN", "Amazon.com Inc", "US Equity", "Consumer Discretionary", "197.12"),
    ("JPM", "JPMorgan Chase & Co", "US Equity", "Financials", "238.50"),
    ("JNJ", "Johnson & Johnson", "US Equity", "Health Care", "152.31"),
    ("XOM", "Exxon Mobil Corp", "US Equity", "Energy", "118.04"),
    ("PG", "Procter & Gamble Co", "US Equity", "Consumer Staples", "171.66"),
    ("VEA", "Vanguard FTSE Developed Markets ETF", "Intl Equity", "Diversified", "49.87"),
    ("VWO", "Vanguard FTSE Emerging Markets ETF", "Intl Equity", "Diversified", "44.12"),
    ("BND", "Vanguard Total Bond Market ETF", "Fixed Income", "Bonds", "72.35"),
    ("TIP", "iShares TIPS Bond ETF", "Fixed Income", "Bonds", "108.90"),
]

MODELS = {
    "us-large-core": (
        "US Large Cap Core",
        {"AAPL": "0.20", "MSFT": "0.20", "NVDA": "0.10", "AMZN": "0.15", "JPM": "0.10",
         "JNJ": "0.10", "XOM": "0.05", "PG": "0.10"},
    ),
    "balanced-60-40": (
        "Balanced 60/40",
        {"AAPL": "0.10", "MSFT": "0.10", "AMZN": "0.05", "VEA": "0.20", "VWO": "0.15",
         "BND": "0.30", "TIP": "0.10"},
    ),
}  # fmt: skip

FIRST = ["Jordan", "Avery", "Morgan", "Riley", "Casey", "Quinn", "Harper", "Rowan", "Emerson"]
LAST = ["Lee", "Patel", "Garcia", "Okafor", "Nguyen", "Schmidt", "Rossi", "Kowalski", "Haddad"]


def _price(symbol: str) -> Decimal:
    return next(Decimal(p) for s, _, _, _, p in SECURITIES if s == symbol)


async def load_sample(db: Database, accounts: int = 40, seed: int = 7) -> dict[str, Any]:
    """Feed a small, realistic book through the handlers; returns the ids it used."""
    rng = random.Random(seed)
    t = datetime.now(UTC) - timedelta(hours=2)

    def tick() -> datetime:
        nonlocal t
        t += timedelta(milliseconds=rng.randint(5, 40))
        return t

    await deliver(
        db,
        envelope(
            ev.SecuritiesChangedV1(
                securities=[
                    ev.SecurityV1(symbol=s, name=n, asset_class=a, sector=sec, price=Decimal(p))
                    for s, n, a, sec, p in SECURITIES
                ]
            ),
            key="security-master",
            time=tick(),
        ),
    )
    for model_id, (name, weights) in MODELS.items():
        await deliver(
            db,
            envelope(
                ev.ModelChangedV1(
                    model_id=model_id,
                    name=name,
                    version=1,
                    changed_by="pm@demo",
                    targets=[
                        ev.ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()
                    ],
                ),
                key=model_id,
                time=tick(),
            ),
        )
    account_ids = []
    for i in range(accounts):
        account_id = f"ACC-{100001 + i}"
        account_ids.append(account_id)
        model_id = "us-large-core" if i % 3 else "balanced-60-40"
        status = "suspended" if i % 17 == 5 else "active"
        await deliver(
            db,
            envelope(
                ev.AccountChangedV1(
                    account_id=account_id,
                    household_id=f"HH-{5000 + i // 2}",
                    name=f"{rng.choice(FIRST)} {rng.choice(LAST)} "
                    + rng.choice(["Trust", "IRA", "Joint", "Individual"]),
                    account_type="ira" if i % 4 == 1 else "taxable",
                    model_id=model_id,
                    status=status,
                    auto_approve=i % 5 != 0,
                ),
                key=account_id,
                time=tick(),
            ),
        )
        # Opening holdings near the model's weights, with some drift.
        size = Decimal(rng.randint(60, 900) * 1000)
        positions = []
        invested = Decimal(0)
        for symbol, weight in MODELS[model_id][1].items():
            tilt = Decimal(str(rng.uniform(0.7, 1.3)))
            qty = (size * Decimal(weight) * tilt / _price(symbol)).quantize(Decimal(1), ROUND_DOWN)
            positions.append(ev.PositionV1(symbol=symbol, quantity=qty, cost_basis=qty * 90))
            invested += qty * _price(symbol)
        await deliver(
            db,
            envelope(
                ev.HoldingsReconciledV1(
                    account_id=account_id,
                    as_of=date.today(),
                    cash=max(size - invested, Decimal(0)) + Decimal("1250.00"),
                    positions=positions,
                    cause="opening-balance",
                ),
                key=account_id,
                time=tick(),
            ),
        )
    run_id = await _sample_run(db, rng, tick, account_ids)
    return {"accounts": account_ids, "run_id": run_id}


async def _sample_run(db: Database, rng: random.Random, tick: Any, account_ids: list[str]) -> str:
    """A model change of us-large-core: drift, proposals, approvals, fills, holdings."""
    weights = {"AAPL": "0.18", "MSFT": "0.22", "NVDA": "0.12", "AMZN": "0.13", "JPM": "0.10",
               "JNJ": "0.10", "XOM": "0.05", "PG": "0.10"}  # fmt: skip
    await deliver(
        db,
        envelope(
            ev.ModelChangedV1(
                model_id="us-large-core",
                name="US Large Cap Core",
                version=2,
                changed_by="pm@demo",
                targets=[ev.ModelTargetV1(symbol=s, weight=Decimal(w)) for s, w in weights.items()],
            ),
            key="us-large-core",
            time=tick(),
        ),
    )
    run_id = uuid.uuid4()
    fill_no = 0
    for n, account_id in enumerate(account_ids):
        async with db.sessions() as session:
            account = await repo.get_account(session, account_id)
            if account is None or account.model_id != "us-large-core":
                continue  # follows the other model
            held = {p.symbol: p for p in await repo.positions_of(session, account_id)}
            snapshot = await repo.get_holdings(session, account_id)
        assert snapshot is not None
        cash = snapshot.cash
        total = cash + sum((p.quantity * _price(s) for s, p in held.items()), Decimal(0))
        drifts = []
        trades = []
        for symbol, w in weights.items():
            value = held[symbol].quantity * _price(symbol) if symbol in held else Decimal(0)
            current = value / total
            drift = current - Decimal(w)
            drifts.append(
                ev.SecurityDriftV1(
                    symbol=symbol,
                    target_weight=Decimal(w),
                    current_weight=current.quantize(Decimal("0.000001")),
                    drift=drift.quantize(Decimal("0.000001")),
                )
            )
            qty = (abs(drift) * total / _price(symbol)).quantize(Decimal(1), ROUND_DOWN)
            if qty >= 1 and abs(drift) > Decimal("0.005"):
                side = "sell" if drift > 0 else "buy"
                pct_now, pct_target = current * 100, Decimal(w) * 100
                trades.append(
                    ev.TradeV1(
                        trade_id=uuid.uuid4(),
                        symbol=symbol,
                        side=side,
                        quantity=qty,
                        estimated_price=_price(symbol),
                        estimated_value=qty * _price(symbol),
                        reason="model-change",
                        explanation=f"{side.capitalize()} {qty} {symbol} to bring it from "
                        f"{pct_now:.1f}% to its {pct_target:.1f}% target in US Large Cap Core.",
                    )
                )
        max_drift = max(abs(d.drift) for d in drifts)
        await deliver(
            db,
            envelope(
                ev.DriftDetectedV1(
                    run_id=run_id,
                    account_id=account_id,
                    model_id="us-large-core",
                    model_version=2,
                    total_value=total.quantize(Decimal("0.01")),
                    max_abs_drift=max_drift,
                    tolerance=Decimal("0.01"),
                    out_of_tolerance=max_drift > Decimal("0.01"),
                    securities=drifts,
                ),
                key=account_id,
                time=tick(),
            ),
        )
        if not trades:
            continue
        proposal_id = uuid.uuid4()
        await deliver(
            db,
            envelope(
                ev.TradesProposedV1(
                    proposal_id=proposal_id,
                    run_id=run_id,
                    account_id=account_id,
                    model_id="us-large-core",
                    model_version=2,
                    trades=trades,
                    cash_before=cash,
                    cash_after_estimated=cash,
                ),
                key=account_id,
                time=tick(),
            ),
        )
        if n % 5 == 0:
            continue  # waits for a person to approve
        await deliver(
            db,
            envelope(
                ev.TradesApprovedV1(
                    proposal_id=proposal_id,
                    account_id=account_id,
                    approved_by="policy:auto-approve",
                    trades=trades,
                ),
                key=account_id,
                time=tick(),
            ),
        )
        if n % 7 == 3:
            continue  # orders still with the custodian
        fill_ids = []
        quantities = {s: p.quantity for s, p in held.items()}
        for i, trade in enumerate(trades):
            if n % 11 == 4 and i == 0:
                await deliver(
                    db,
                    envelope(
                        ev.OrderRejectedV1(
                            client_order_id=f"BAL-{trade.trade_id.hex[:16]}",
                            trade_id=trade.trade_id,
                            proposal_id=proposal_id,
                            account_id=account_id,
                            symbol=trade.symbol,
                            side=trade.side,
                            quantity=trade.quantity,
                            reason="security halted",
                        ),
                        key=account_id,
                        time=tick(),
                    ),
                )
                continue
            partial = n % 6 == 2 and i == 0 and trade.quantity > 1
            qty = (trade.quantity / 2).quantize(Decimal(1)) if partial else trade.quantity
            fill_no += 1
            fill_id = f"SIM-EX-{fill_no:06d}"
            fill_ids.append(fill_id)
            price = (trade.estimated_price * Decimal(str(rng.uniform(0.998, 1.002)))).quantize(
                Decimal("0.01")
            )
            await deliver(
                db,
                envelope(
                    ev.FillsReceivedV1(
                        fill_id=fill_id,
                        client_order_id=f"BAL-{trade.trade_id.hex[:16]}",
                        trade_id=trade.trade_id,
                        proposal_id=proposal_id,
                        account_id=account_id,
                        symbol=trade.symbol,
                        side=trade.side,
                        quantity=qty,
                        price=price,
                        executed_at=tick(),
                    ),
                    key=account_id,
                    time=tick(),
                ),
            )
            signed = qty if trade.side == "buy" else -qty
            quantities[trade.symbol] = quantities.get(trade.symbol, Decimal(0)) + signed
            cash -= signed * price
        if n % 9 == 7:
            continue  # fills not reconciled yet
        await deliver(
            db,
            envelope(
                ev.HoldingsReconciledV1(
                    account_id=account_id,
                    as_of=date.today(),
                    cash=cash,
                    positions=[
                        ev.PositionV1(symbol=s, quantity=q, cost_basis=q * 90)
                        for s, q in sorted(quantities.items())
                    ],
                    cause="fills",
                    fill_ids=fill_ids,
                ),
                key=account_id,
                time=tick(),
            ),
        )
    return str(run_id)


async def _main(url: str, accounts: int) -> None:
    from reporting_svc.main import spec

    db = await migrated_database(spec, url)
    try:
        loaded = await load_sample(db, accounts)
    finally:
        await db.dispose()
    print(f"loaded {len(loaded['accounts'])} accounts; run {loaded['run_id']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="sample_book.py")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--accounts", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(_main(args.database_url, args.accounts))
