"""reporting-svc's rules: fold events into read models, and build the reports."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    AccountChangedV1,
    DriftDetectedV1,
    FillsReceivedV1,
    HoldingsReconciledV1,
    HoldingsReconciledV2,
    ModelChangedV1,
    OrderRejectedV1,
    PositionV2,
    ProposalRejectedV1,
    SecuritiesChangedV1,
    TradesApprovedV1,
    TradesProposedV1,
    TradeV1,
)
from ballast_common.errors import NotFound, PermanentMessageError
from ballast_common.uow import UnitOfWork
from ballast_engine.tax.model import Term, term_of
from sqlmodel.ext.asyncio.session import AsyncSession

from reporting_svc import repository as repo
from reporting_svc.schemas import (
    AccountOverview,
    AccountPage,
    AccountSummary,
    HoldingLine,
    Holdings,
    LastMeasured,
    LotLine,
    Lots,
    ModelOut,
    RunAccount,
    RunProgress,
    SleeveOut,
    Summary,
    TradeOut,
)

WEIGHT_PLACES = Decimal("0.00000001")
CENTS = Decimal("0.01")

# --- events -> read models ------------------------------------------------------------------


async def apply_securities(uow: UnitOfWork, env: Envelope, p: SecuritiesChangedV1) -> None:
    latest = {s.symbol: s for s in p.securities}  # the last mention of a symbol wins
    await repo.upsert_securities(
        uow.session,
        [
            {
                "symbol": s.symbol,
                "name": s.name,
                "asset_class": s.asset_class,
                "sector": s.sector,
                "price": s.price,
                "changed_at": env.time,
            }
            for s in latest.values()
        ],
    )


async def apply_model(uow: UnitOfWork, env: Envelope, p: ModelChangedV1) -> None:
    symbols = [t.symbol for t in p.targets]
    if len(set(symbols)) != len(symbols):
        raise PermanentMessageError(f"model {p.model_id} v{p.version} lists a security twice")
    await repo.upsert_model(
        uow.session,
        {
            "model_id": p.model_id,
            "name": p.name,
            "version": p.version,
            "changed_by": p.changed_by,
            "changed_at": env.time,
        },
        [(t.symbol, t.weight) for t in p.targets],
    )


async def apply_account(uow: UnitOfWork, env: Envelope, p: AccountChangedV1) -> None:
    await repo.upsert_account(
        uow.session,
        {
            "account_id": p.account_id,
            "household_id": p.household_id,
            "name": p.name,
            "account_type": p.account_type,
            "model_id": p.model_id,
            "status": p.status,
            "auto_approve": p.auto_approve,
            "tenant": env.tenant,
            "changed_at": env.time,
        },
        [
            {
                "account_id": p.account_id,
                "sleeve_id": sleeve.sleeve_id,
                "model_id": sleeve.model_id,
                "weight": sleeve.weight,
            }
            for sleeve in (p.strategy.sleeves if p.strategy else [])
        ],
    )


async def apply_holdings(
    uow: UnitOfWork, env: Envelope, p: HoldingsReconciledV1 | HoldingsReconciledV2
) -> bool:
    """Replace the account's holdings (and, from v2, its lots) with the snapshot unless a newer
    one is stored. Its fill ids reached the book of record either way. True if applied."""
    symbols = [pos.symbol for pos in p.positions]
    if len(set(symbols)) != len(symbols):
        raise PermanentMessageError(f"holdings of {p.account_id} list a security twice")
    lots = [
        {
            "account_id": p.account_id,
            "lot_id": lot.lot_id,
            "symbol": pos.symbol,
            "quantity": lot.quantity,
            "acquired": lot.acquired,
            "cost_basis": lot.cost_basis,
            "wash_adjustment": lot.wash_adjustment,
            "sleeve_id": lot.sleeve_id,
        }
        for pos in p.positions
        if isinstance(pos, PositionV2)
        for lot in pos.lots
    ]
    if len({lot["lot_id"] for lot in lots}) != len(lots):
        raise PermanentMessageError(f"holdings of {p.account_id} list a lot id twice")
    applied = await repo.replace_holdings(
        uow.session,
        {
            "account_id": p.account_id,
            "as_of": p.as_of,
            "cash": p.cash,
            "cause": p.cause,
            "fill_ids": list(p.fill_ids),
            "event_id": env.id,
            "event_time": env.time,
        },
        [
            {
                "account_id": p.account_id,
                "symbol": pos.symbol,
                "quantity": pos.quantity,
                "cost_basis": pos.cost_basis,
            }
            for pos in p.positions
        ],
        lots,
    )
    await repo.record_reconciled_fills(uow.session, p.account_id, p.fill_ids, env.time)
    return applied


async def apply_drift(uow: UnitOfWork, env: Envelope, p: DriftDetectedV1) -> None:
    await repo.upsert_run(uow.session, p.run_id, p.model_id, p.model_version, env.time)
    measured = {
        "account_id": p.account_id,
        "total_value": p.total_value,
        "max_abs_drift": p.max_abs_drift,
        "tolerance": p.tolerance,
        "out_of_tolerance": p.out_of_tolerance,
        "measured_at": env.time,
    }
    await repo.upsert_drift(
        uow.session,
        {"run_id": p.run_id, **measured},
        {
            "run_id": p.run_id,
            "model_id": p.model_id,
            "model_version": p.model_version,
            **measured,
        },
    )


def _trade_row(
    trade: TradeV1, proposal_id: uuid.UUID, account_id: str, env: Envelope, *, approved: bool
) -> dict[str, Any]:
    return {
        "trade_id": trade.trade_id,
        "proposal_id": proposal_id,
        "account_id": account_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "quantity": trade.quantity,
        "estimated_price": trade.estimated_price,
        "estimated_value": trade.estimated_value,
        "reason": trade.reason,
        "explanation": trade.explanation,
        "sleeve_id": trade.sleeve_id,
        "lot_ids": list(trade.lot_ids) or None,
        "estimated_tax": trade.estimated_tax,
        "proposed_at": None if approved else env.time,
        "approved_at": env.time if approved else None,
        "status": "approved" if approved else "proposed",
        "filled_quantity": Decimal(0),
        "updated_at": env.time,
    }


def _check_trade_ids(trades: list[TradeV1], what: str) -> None:
    ids = [t.trade_id for t in trades]
    if len(set(ids)) != len(ids):
        raise PermanentMessageError(f"{what} lists a trade id twice")


async def apply_proposed(uow: UnitOfWork, env: Envelope, p: TradesProposedV1) -> None:
    _check_trade_ids(p.trades, f"proposal {p.proposal_id}")
    await repo.upsert_run(uow.session, p.run_id, p.model_id, p.model_version, env.time)
    await repo.upsert_proposed(
        uow.session,
        {
            "proposal_id": p.proposal_id,
            "account_id": p.account_id,
            "run_id": p.run_id,
            "model_id": p.model_id,
            "model_version": p.model_version,
            "cash_before": p.cash_before,
            "cash_after_estimated": p.cash_after_estimated,
            "proposed_at": env.time,
        },
    )
    rows = [_trade_row(t, p.proposal_id, p.account_id, env, approved=False) for t in p.trades]
    await repo.upsert_trade_details(uow.session, rows)
    await repo.refresh_trades(uow.session, [t.trade_id for t in p.trades])


async def apply_approved(uow: UnitOfWork, env: Envelope, p: TradesApprovedV1) -> None:
    _check_trade_ids(p.trades, f"approval of {p.proposal_id}")
    await repo.upsert_approved(uow.session, p.proposal_id, p.account_id, p.approved_by, env.time)
    rows = [_trade_row(t, p.proposal_id, p.account_id, env, approved=True) for t in p.trades]
    await repo.upsert_trade_details(uow.session, rows)
    await repo.refresh_trades(uow.session, [t.trade_id for t in p.trades])


async def apply_fill(uow: UnitOfWork, env: Envelope, p: FillsReceivedV1) -> bool:
    """Remember the fill and recompute the trade's filled quantity; False for a known fill."""
    await repo.ensure_proposal(uow.session, p.proposal_id, p.account_id)
    await repo.ensure_trade(
        uow.session,
        {
            "trade_id": p.trade_id,
            "proposal_id": p.proposal_id,
            "account_id": p.account_id,
            "symbol": p.symbol,
            "side": p.side,
            "status": "partially_filled",
            "filled_quantity": Decimal(0),
            "updated_at": env.time,
        },
    )
    new = await repo.insert_fill(
        uow.session,
        {
            "fill_id": p.fill_id,
            "trade_id": p.trade_id,
            "proposal_id": p.proposal_id,
            "account_id": p.account_id,
            "symbol": p.symbol,
            "side": p.side,
            "quantity": p.quantity,
            "price": p.price,
            "executed_at": p.executed_at,
        },
    )
    await repo.refresh_trades(uow.session, [p.trade_id])
    return new


async def apply_rejected(uow: UnitOfWork, env: Envelope, p: OrderRejectedV1) -> None:
    await repo.ensure_proposal(uow.session, p.proposal_id, p.account_id)
    await repo.ensure_trade(
        uow.session,
        {
            "trade_id": p.trade_id,
            "proposal_id": p.proposal_id,
            "account_id": p.account_id,
            "symbol": p.symbol,
            "side": p.side,
            "quantity": p.quantity,
            "rejected_reason": p.reason,
            "rejected_at": env.time,
            "status": "rejected",
            "filled_quantity": Decimal(0),
            "updated_at": env.time,
        },
    )
    await repo.refresh_trades(uow.session, [p.trade_id])


async def apply_declined(uow: UnitOfWork, env: Envelope, p: ProposalRejectedV1) -> None:
    await repo.decline_proposal(
        uow.session, p.proposal_id, p.account_id, p.rejected_by, p.reason, env.time
    )
    await repo.refresh_proposal_trades(uow.session, p.proposal_id)


# --- reports --------------------------------------------------------------------------------


def _overview(row: dict[str, Any]) -> dict[str, Any]:
    last = None
    if row["last_run_id"] is not None:
        last = LastMeasured(
            run_id=row["last_run_id"],
            max_abs_drift=row["measured_drift"],
            out_of_tolerance=row["measured_out_of_tolerance"],
            measured_at=row["measured_at"],
        )
    return {
        **{k: row[k] for k in AccountOverview.model_fields if k in row},
        "unpriced_positions": int(row["unpriced"]),
        "last_measured": last,
    }


async def list_accounts(
    session: AsyncSession,
    default_tolerance: Decimal,
    *,
    limit: int,
    offset: int,
    model_id: str | None,
    out_of_tolerance: bool | None,
    status: str | None,
    search: str | None,
    sort: repo.SortKey,
    descending: bool,
) -> AccountPage:
    total, rows = await repo.account_overviews(
        session,
        default_tolerance=default_tolerance,
        limit=limit,
        offset=offset,
        model_id=model_id,
        out_of_tolerance=out_of_tolerance,
        status=status,
        search=search,
        sort=sort,
        descending=descending,
    )
    return AccountPage(
        total=total,
        limit=limit,
        offset=offset,
        items=[AccountOverview(**_overview(r)) for r in rows],
    )


async def account_summary(
    session: AsyncSession, account_id: str, default_tolerance: Decimal
) -> AccountSummary:
    _, rows = await repo.account_overviews(
        session, default_tolerance=default_tolerance, limit=1, offset=0, account_id=account_id
    )
    if not rows:
        raise NotFound(f"no account {account_id}")
    account = await repo.get_account(session, account_id)
    snapshot = await repo.get_holdings(session, account_id)
    return AccountSummary(
        **_overview(rows[0]),
        tenant=account.tenant if account else None,
        trades_by_status=await repo.trade_status_counts(session, account_id),
        sleeves=[
            SleeveOut(sleeve_id=s.sleeve_id, model_id=s.model_id, weight=s.weight)
            for s in await repo.sleeves_of(session, account_id)
        ],
        fills_reflected=list(snapshot.fill_ids) if snapshot else [],
    )


async def holdings(session: AsyncSession, account_id: str) -> Holdings:
    """Each held or targeted security with price, value, weight, target and difference,
    and cash as a line of its own. Weights are of the market value (cash included)."""
    if not await repo.account_known(session, account_id):
        raise NotFound(f"no account {account_id}")
    account = await repo.get_account(session, account_id)
    snapshot = await repo.get_holdings(session, account_id)
    model_id = account.model_id if account else None
    model = await repo.get_model(session, model_id) if model_id else None
    lines = await repo.holding_lines(session, account_id)
    cash = snapshot.cash if snapshot else Decimal(0)
    values = [
        line["quantity"] * line["price"] if line["price"] is not None else None for line in lines
    ]
    total = cash + sum((v for v in values if v is not None), Decimal(0))

    def weight(value: Decimal | None) -> Decimal | None:
        if value is None or total <= 0:
            return None
        return (value / total).quantize(WEIGHT_PLACES)

    out: list[HoldingLine] = []
    for line, value in zip(lines, values, strict=True):
        w = weight(value)
        target = line["target_weight"]
        out.append(
            HoldingLine(
                kind="security",
                symbol=line["symbol"],
                name=line["name"],
                sector=line["sector"],
                asset_class=line["asset_class"],
                quantity=line["quantity"],
                price=line["price"],
                cost_basis=line["cost_basis"],
                market_value=value.quantize(CENTS) if value is not None else None,
                weight=w,
                target_weight=target,
                difference=(w - target) if w is not None else None,
            )
        )
    cash_weight = weight(cash)
    out.append(
        HoldingLine(
            kind="cash",
            symbol="CASH",
            name="Cash",
            sector=None,
            asset_class="Cash",
            quantity=None,
            price=None,
            cost_basis=None,
            market_value=cash,
            weight=cash_weight,
            target_weight=Decimal(0),
            difference=cash_weight,
        )
    )
    diffs = [abs(h.difference) for h in out if h.kind == "security" and h.difference is not None]
    return Holdings(
        account_id=account_id,
        model_id=account.model_id if account else None,
        model_version=model.version if model else None,
        as_of=snapshot.as_of if snapshot else None,
        market_value=total.quantize(CENTS),
        cash=cash,
        max_drift=max(diffs) if diffs else None,
        lines=out,
    )


async def lots(session: AsyncSession, account_id: str, on: date) -> Lots:
    """Open tax lots with unrealized gain and term on `on`, split short/long-term."""
    if not await repo.account_known(session, account_id):
        raise NotFound(f"no account {account_id}")
    out: list[LotLine] = []
    totals: dict[Term, Decimal] = {"short": Decimal(0), "long": Decimal(0)}
    unpriced = 0
    for row in await repo.lots_of(session, account_id):
        term = term_of(row["acquired"], on)
        price = row["price"]
        value = (row["quantity"] * price).quantize(CENTS) if price is not None else None
        gain = (value - row["cost_basis"]).quantize(CENTS) if value is not None else None
        if gain is None:
            unpriced += 1
        else:
            totals[term] += gain
        out.append(LotLine(**row, term=term, market_value=value, unrealized_gain=gain))
    return Lots(
        account_id=account_id,
        on=on,
        lots=out,
        unrealized_short_term=totals["short"].quantize(CENTS),
        unrealized_long_term=totals["long"].quantize(CENTS),
        unpriced_lots=unpriced,
    )


async def trades(session: AsyncSession, account_id: str, limit: int, offset: int) -> list[TradeOut]:
    if not await repo.account_known(session, account_id):
        raise NotFound(f"no account {account_id}")
    rows = await repo.trades_of(session, account_id, limit, offset)
    return [TradeOut(**{k: r[k] for k in TradeOut.model_fields}) for r in rows]


def _progress(row: dict[str, Any]) -> RunProgress:
    trades_ = int(row["trades"])
    filled, rejected = int(row["filled"]), int(row["rejected"])
    finished = filled + rejected + int(row["declined"])
    fills, reflected = int(row["fills"]), int(row["fills_reflected"])
    done = finished == trades_ and reflected == fills
    work = trades_ + fills
    return RunProgress(
        run_id=row["run_id"],
        model_id=row["model_id"],
        model_version=row["model_version"],
        accounts_measured=row["accounts_measured"],
        accounts_out_of_tolerance=row["accounts_out_of_tolerance"],
        proposals=row["proposals"],
        proposals_approved=row["proposals_approved"],
        trades=trades_,
        trades_filled=filled,
        trades_partially_filled=row["partially_filled"],
        trades_rejected=rejected,
        trades_declined=row["declined"],
        estimated_tax=row["estimated_tax"],
        trades_open=int(row["approved"]) + int(row["proposed"]),
        trades_awaiting_approval=row["proposed"],
        fills=fills,
        fills_reflected=reflected,
        complete=done,
        progress=1.0 if work == 0 else (finished + reflected) / work,
        first_event_at=row["first_event_at"],
        last_event_at=row["last_event_at"],
        last_reconciled_at=row["last_reconciled_at"],
    )


async def run(session: AsyncSession, run_id: uuid.UUID) -> RunProgress:
    row = await repo.run_progress(session, run_id)
    if row is None:
        raise NotFound(f"no rebalance run {run_id}")
    return _progress(row)


async def runs(
    session: AsyncSession,
    *,
    model_id: str | None,
    model_version: int | None,
    limit: int,
    offset: int,
) -> list[RunProgress]:
    rows = await repo.list_runs(
        session, model_id=model_id, model_version=model_version, limit=limit, offset=offset
    )
    return [_progress(r) for r in rows]


async def summary(session: AsyncSession, default_tolerance: Decimal) -> Summary:
    counts = await repo.summary_counts(session, default_tolerance)
    by_status = await repo.trade_status_counts(session)
    return Summary(
        accounts=counts["accounts"],
        models=counts["models"],
        securities=counts["securities"],
        accounts_out_of_tolerance=counts["out_of_tolerance"],
        runs=counts["runs"],
        proposals=counts["proposals"],
        trades=sum(by_status.values()),
        trades_by_status=by_status,
        fills=counts["fills"],
        fills_reflected=counts["fills_reflected"],
        total_market_value=counts["market_value"],
    )


async def run_accounts(
    session: AsyncSession, run_id: uuid.UUID, limit: int, offset: int
) -> list[RunAccount]:
    if await repo.run_progress(session, run_id) is None:
        raise NotFound(f"no rebalance run {run_id}")
    return [
        RunAccount(
            account_id=r["account_id"],
            name=r["name"],
            total_value=r["total_value"],
            max_abs_drift=r["max_abs_drift"],
            out_of_tolerance=r["out_of_tolerance"],
            trades=r["trades"],
            trades_filled=r["filled"],
            trades_rejected=r["rejected"],
            trades_declined=r["declined"],
            trades_open=r["open"],
            fills=r["fills"],
            fills_reflected=r["fills_reflected"],
        )
        for r in await repo.run_accounts(session, run_id, limit, offset)
    ]


async def models(session: AsyncSession) -> list[ModelOut]:
    return [ModelOut(**r) for r in await repo.list_models(session)]
