"""reporting-svc's tests feed its handlers real envelopes built from the event contracts:
builders for the events it consumes, and `deliver`, which hands envelopes to its
subscriptions through the consumer scaffold (the shared test kit, ballast_common.testing)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from ballast_common import testing
from ballast_common.contracts import events as ev
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import envelope, example
from reporting_svc.handlers import SUBSCRIPTIONS


async def deliver(db: Database, *envelopes: Envelope) -> None:
    """Hand envelopes to reporting-svc's handlers in one unit of work, consecutive ones of a
    topic as one batch (without the inbox: a second delivery reaches the handler again)."""
    await testing.deliver(db, SUBSCRIPTIONS, *envelopes, source="reporting-svc")


async def deliver_batch(db: Database, envelopes: list[Envelope]) -> None:
    """Hand envelopes of one topic to their handler at once, as a consumer batch does."""
    types = sorted({e.type for e in envelopes})
    if len(types) != 1:
        raise ValueError(f"a batch handler takes events of one type, not {types}")
    await deliver(db, *envelopes)


T0 = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


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
