"""Envelopes built from the event contracts, and a sample book fed through the handlers.

For tests and for working on the dashboard without the other five services:
`python -m reporting_svc.sample --database-url postgresql://.../ballast_reporting_dev`
loads securities, two models, accounts, opening holdings and a rebalance run with
approvals, fills (some partial), a reject and reconciled holdings.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from ballast_common.consumer import Delivery
from ballast_common.contracts import events as ev
from ballast_common.contracts.envelope import Envelope, decode_envelope
from ballast_common.contracts.registry import contract_for, contract_of_payload
from ballast_common.db import Database
from ballast_common.testing import migrated_database
from ballast_common.uow import UnitOfWork
from pydantic import BaseModel

from reporting_svc import repository as repo
from reporting_svc.handlers import SUBSCRIPTIONS

SUBSCRIBED = {s.event_type: s for s in SUBSCRIPTIONS}


def envelope(
    payload: BaseModel, *, key: str, time: datetime | None = None, tenant: str = "demo"
) -> Envelope:
    """A real envelope around a contract payload, as a producer's outbox would write it."""
    contract = contract_of_payload(payload)
    return Envelope(
        type=contract.type,
        version=contract.version,
        time=time or datetime.now(UTC),
        tenant=tenant,
        key=key,
        source="sample",
        payload=payload.model_dump(mode="json"),
    )


async def deliver(db: Database, env: Envelope) -> None:
    """Decode the envelope's bytes as a consumer would and run the handler in its own
    unit of work (without the inbox: a second delivery reaches the handler again)."""
    await deliver_batch(db, [env])


async def deliver_batch(db: Database, envelopes: list[Envelope]) -> None:
    """Hand envelopes of one type to their handler at once, as a consumer batch does."""
    decoded = [decode_envelope(env.to_bytes()) for env in envelopes]
    types = {env.type for env, _ in decoded}
    if len(types) != 1:
        raise ValueError(f"a batch handler takes events of one type, not {sorted(types)}")
    async with UnitOfWork(db.sessions(), "reporting-svc") as uow:
        await SUBSCRIBED[types.pop()].deliver(uow, [Delivery(e, p) for e, p in decoded])


# --- events for tests and benchmarks -----------------------------------------------------

T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def example(event_type: str, **changes: Any) -> Any:
    """The contract's example payload with some fields changed, validated by the contract."""
    contract = contract_for(event_type, 1)
    assert contract is not None
    return contract.payload.model_validate({**contract.example, **changes})


def trade(symbol: str, side: str, qty: str, price: str, **extra: Any) -> ev.TradeV1:
    base = example("trades-proposed").trades[0].model_dump()
    return ev.TradeV1.model_validate(
        {
            **base,
            "trade_id": uuid.uuid4(),
            "symbol": symbol,
            "side": side,
            "quantity": qty,
            "estimated_price": price,
            "estimated_value": str(Decimal(qty) * Decimal(price)),
            "explanation": f"{side.capitalize()} {qty} {symbol} to bring it to its target.",
            **extra,
        }
    )


def new_account() -> str:
    return f"ACC-{uuid.uuid4().hex[:10]}"


def new_model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


async def setup_book(db: Database, account: str, model: str) -> None:
    """Prices for ZZA/ZZB/ZZC, a 50/50 model of ZZA and ZZB, an account following it, and
    opening holdings: 100 ZZA @ 10, 0 ZZB, 1000 cash."""
    await deliver(
        db,
        envelope(
            ev.SecuritiesChangedV1(
                securities=[
                    ev.SecurityV1(
                        symbol=s, name=f"{s} Corp", asset_class="US Equity", sector="Tech",
                        price=Decimal(p),
                    )
                    for s, p in (("ZZA", "10"), ("ZZB", "20"), ("ZZC", "5"))
                ]
            ),
            key="security-master",
            time=at(0),
        ),
    )  # fmt: skip
    await deliver(
        db,
        envelope(
            example(
                "model-changed",
                model_id=model,
                version=1,
                targets=[{"symbol": "ZZA", "weight": "0.5"}, {"symbol": "ZZB", "weight": "0.5"}],
            ),
            key=model,
            time=at(1),
        ),
    )
    await deliver(
        db,
        envelope(
            example("account-changed", account_id=account, model_id=model),
            key=account,
            time=at(2),
        ),
    )
    await deliver(db, holdings(account, at(3), "1000", {"ZZA": "100"}, cause="opening-balance"))


def holdings(
    account: str,
    time: datetime,
    cash: str,
    positions: dict[str, str],
    *,
    fill_ids: list[str] | None = None,
    cause: str = "fills",
    as_of: date = date(2026, 11, 20),
) -> Any:
    payload = example(
        "holdings-reconciled",
        account_id=account,
        as_of=as_of.isoformat(),
        cash=cash,
        positions=[
            {"symbol": s, "quantity": q, "cost_basis": str(Decimal(q) * 9)}
            for s, q in positions.items()
        ],
        cause=cause,
        fill_ids=fill_ids or [],
    )
    return envelope(payload, key=account, time=time)


def fill(account: str, t: ev.TradeV1, proposal: uuid.UUID, fill_id: str, qty: str, price: str,
         time: datetime) -> Any:  # fmt: skip
    payload = example(
        "fills-received",
        fill_id=fill_id,
        trade_id=str(t.trade_id),
        proposal_id=str(proposal),
        account_id=account,
        symbol=t.symbol,
        side=t.side,
        quantity=qty,
        price=price,
    )
    return envelope(payload, key=account, time=time)


def proposed(account: str, model: str, run: uuid.UUID, proposal: uuid.UUID,
             trades: list[ev.TradeV1], time: datetime) -> Any:  # fmt: skip
    payload = ev.TradesProposedV1(
        proposal_id=proposal,
        run_id=run,
        account_id=account,
        model_id=model,
        model_version=1,
        trades=trades,
        cash_before=Decimal("1000"),
        cash_after_estimated=Decimal("0"),
    )
    return envelope(payload, key=account, time=time)


def approved(account: str, proposal: uuid.UUID, trades: list[ev.TradeV1], time: datetime) -> Any:
    payload = ev.TradesApprovedV1(
        proposal_id=proposal, account_id=account, approved_by="policy:auto-approve", trades=trades
    )
    return envelope(payload, key=account, time=time)


def drift(
    account: str,
    model: str,
    run: uuid.UUID,
    time: datetime,
    out: bool = True,
    max_abs_drift: str = "0.019",
) -> Any:
    """The engine's verdict on an account, as rebalance-svc publishes it."""
    payload = example(
        "drift-detected",
        run_id=str(run),
        account_id=account,
        model_id=model,
        model_version=1,
        out_of_tolerance=out,
        max_abs_drift=max_abs_drift,
    )
    return envelope(payload, key=account, time=time)


def chunk_done(
    run: uuid.UUID,
    time: datetime,
    *,
    chunk: int = 0,
    chunks: int = 1,
    proposals: int = 1,
    trades: int = 1,
    status: str = "completed",
    kind: str = "rebalance",
    trigger: str = "model-change",
    model: str = "*",
    accounts: int = 1,
    error: str | None = None,
) -> Any:
    """rebalance-svc's report of one chunk of a run."""
    payload = ev.RebalanceChunkCompletedV1(
        run_id=run,
        chunk=chunk,
        chunks=chunks,
        kind=kind,
        trigger=trigger,
        model_id=model,
        model_version=1 if model != "*" else 0,
        status=status,
        accounts=accounts,
        accounts_evaluated=accounts if status == "completed" else 0,
        accounts_out_of_tolerance=accounts if status == "completed" else 0,
        accounts_skipped=0 if status == "completed" else accounts,
        proposals=proposals,
        trades=trades,
        error=error,
    )
    return envelope(payload, key=str(run), time=time)


def declined(account: str, proposal: uuid.UUID, time: datetime) -> Any:
    payload = ev.ProposalRejectedV1(
        proposal_id=proposal, account_id=account, rejected_by="advisor@demo", reason="wait"
    )
    return envelope(payload, key=account, time=time)


# --- a sample book --------------------------------------------------------------------------

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
    parser = argparse.ArgumentParser(prog="python -m reporting_svc.sample")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--accounts", type=int, default=40)
    args = parser.parse_args()
    asyncio.run(_main(args.database_url, args.accounts))
