"""reporting-svc's rules: fold events into read models, and build the reports."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Hashable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ballast_common.consumer import Delivery
from ballast_common.contracts.envelope import Envelope
from ballast_common.contracts.events import (
    FillsReceivedV1,
    ModelChangedV1,
    RebalanceChunkCompletedV1,
    SecurityV1,
    TradeV1,
)
from ballast_common.errors import NotFound, PermanentMessageError
from ballast_common.pagination import Page
from ballast_common.uow import UnitOfWork
from ballast_engine.tax.model import Term, term_of
from sqlmodel.ext.asyncio.session import AsyncSession

from reporting_svc import repository as repo
from reporting_svc.schemas import (
    AccountOverview,
    AccountSummary,
    ChunkFailure,
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
from reporting_svc.views import HoldingsView

WEIGHT_PLACES = Decimal("0.00000001")
CENTS = Decimal("0.01")

# Consumer batches: every handler gets all new events of its topic in the batch and writes
# them with a few set-based statements. Within a batch the newest event for a key wins, as
# the stored rows' own "newer wins" conditions decide against what is stored.


def _newest(
    deliveries: Sequence[Delivery],
    key: Callable[[Delivery], Hashable],
    order: Callable[[Delivery], Any],
) -> list[Delivery]:
    """One delivery per key: the greatest by `order`, the later one on a tie."""
    chosen: dict[Hashable, Delivery] = {}
    for d in deliveries:
        k = key(d)
        if k not in chosen or order(d) >= order(chosen[k]):
            chosen[k] = d
    return list(chosen.values())


def _first(deliveries: Sequence[Delivery], key: Callable[[Delivery], Hashable]) -> list[Delivery]:
    """One delivery per key: the earliest by event time, the earlier one on a tie."""
    chosen: dict[Hashable, Delivery] = {}
    for d in deliveries:
        k = key(d)
        if k not in chosen or d.envelope.time < chosen[k].envelope.time:
            chosen[k] = d
    return list(chosen.values())


async def apply_securities(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Store security changes; revalue the holders of every security whose price changed."""
    latest: dict[str, tuple[datetime, SecurityV1]] = {}
    for d in deliveries:
        for security in d.payload.securities:  # the last mention of a symbol wins
            seen = latest.get(security.symbol)
            if seen is None or d.envelope.time >= seen[0]:
                latest[security.symbol] = (d.envelope.time, security)
    await repo.lock_prices(uow.session, exclusive=True)
    changed = await repo.upsert_securities(
        uow.session,
        [
            {
                "symbol": s.symbol,
                "name": s.name,
                "asset_class": s.asset_class,
                "sector": s.sector,
                "price": s.price,
                "changed_at": time,
            }
            for time, s in sorted(latest.values(), key=lambda item: item[1].symbol)
        ],
    )
    await repo.revalue_holders(uow.session, changed)


async def apply_models(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Store each model's newest version and its targets."""
    for d in deliveries:
        p: ModelChangedV1 = d.payload
        symbols = [t.symbol for t in p.targets]
        if len(set(symbols)) != len(symbols):
            raise PermanentMessageError(f"model {p.model_id} v{p.version} lists a security twice")
    newest = _newest(deliveries, lambda d: d.payload.model_id, lambda d: d.payload.version)
    written = set(
        await repo.upsert_models(
            uow.session,
            [
                {
                    "model_id": d.payload.model_id,
                    "tenant": d.envelope.tenant,
                    "name": d.payload.name,
                    "version": d.payload.version,
                    "changed_by": d.payload.changed_by,
                    "changed_at": d.envelope.time,
                }
                for d in newest
            ],
        )
    )
    await repo.replace_targets(
        uow.session,
        sorted(written),
        [
            {"model_id": d.payload.model_id, "symbol": t.symbol, "weight": t.weight}
            for d in newest
            if d.payload.model_id in written
            for t in d.payload.targets
        ],
    )


async def apply_accounts(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Store each account's newest change, its sleeves, and what the account list filters on."""
    newest = _newest(deliveries, lambda d: d.payload.account_id, lambda d: d.envelope.time)
    written = set(
        await repo.upsert_accounts(
            uow.session,
            [
                {
                    "account_id": d.payload.account_id,
                    "household_id": d.payload.household_id,
                    "name": d.payload.name,
                    "account_type": d.payload.account_type,
                    "model_id": d.payload.model_id,
                    "status": d.payload.status,
                    "auto_approve": d.payload.auto_approve,
                    "tenant": d.envelope.tenant,
                    "changed_at": d.envelope.time,
                }
                for d in newest
            ],
        )
    )
    if not written:
        return
    await repo.replace_sleeves(
        uow.session,
        sorted(written),
        [
            {
                "account_id": d.payload.account_id,
                "sleeve_id": sleeve.sleeve_id,
                "model_id": sleeve.model_id,
                "weight": sleeve.weight,
            }
            for d in newest
            if d.payload.account_id in written and d.payload.strategy is not None
            for sleeve in d.payload.strategy.sleeves
        ],
    )
    await repo.list_accounts_in_valuations(uow.session, sorted(written))


def _check_holdings(p: HoldingsView) -> None:
    symbols = [pos["symbol"] for pos in p.positions]
    if len(set(symbols)) != len(symbols):
        raise PermanentMessageError(f"holdings of {p.account_id} list a security twice")
    lot_ids = [lot["lot_id"] for pos in p.positions for lot in pos.get("lots", ())]
    if len(set(lot_ids)) != len(lot_ids):
        raise PermanentMessageError(f"holdings of {p.account_id} list a lot id twice")


def _position_columns(snapshots: Sequence[HoldingsView]) -> dict[str, list[Any]]:
    """The snapshots' positions, column by column (numbers as the decimal text they came as)."""
    columns: dict[str, list[Any]] = {
        "account_id": [],
        "symbol": [],
        "quantity": [],
        "cost_basis": [],
    }
    for p in snapshots:
        for pos in p.positions:
            columns["account_id"].append(p.account_id)
            columns["symbol"].append(pos["symbol"])
            columns["quantity"].append(pos["quantity"])
            columns["cost_basis"].append(pos["cost_basis"])
    return columns


def _lot_documents(snapshots: Sequence[HoldingsView]) -> list[str]:
    """Each snapshot's lots (v2) as one JSON array, numbers as the decimal text they travel
    as; a lot without a wash adjustment has 0."""
    return [
        json.dumps(
            [
                {
                    "lot_id": lot["lot_id"],
                    "symbol": pos["symbol"],
                    "quantity": lot["quantity"],
                    "acquired": lot["acquired"].isoformat(),
                    "cost_basis": lot["cost_basis"],
                    "wash_adjustment": lot.get("wash_adjustment", "0"),
                    "sleeve_id": lot.get("sleeve_id"),
                }
                for pos in p.positions
                for lot in pos.get("lots", ())
            ],
            separators=(",", ":"),
        )
        for p in snapshots
    ]


async def apply_holdings(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> list[str]:
    """Store each account's newest snapshot (positions, lots) and revalue it; returns those.
    Payloads are the subscription's view (``views.HoldingsView``)."""
    # Unless a newer snapshot is stored; every snapshot's fill ids reached the book either way.
    for d in deliveries:
        _check_holdings(d.payload)
    newest = _newest(
        deliveries, lambda d: d.payload.account_id, lambda d: (d.payload.as_of, d.envelope.time)
    )
    await repo.lock_prices(uow.session, exclusive=False)
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    applied = await repo.upsert_snapshots(
        uow.session,
        [
            {
                "account_id": d.payload.account_id,
                "as_of": d.payload.as_of,
                "cash": d.payload.cash,
                "cause": d.payload.cause,
                "fill_ids": list(d.payload.fill_ids),
                "event_id": d.envelope.id,
                "event_time": d.envelope.time,
            }
            for d in newest
        ],
    )
    replaced = set(applied)
    chosen = sorted(
        (d.payload for d in newest if d.payload.account_id in replaced),
        key=lambda p: p.account_id,
    )
    await repo.replace_positions_and_lots(
        uow.session, sorted(replaced), _position_columns(chosen), _lot_documents(chosen)
    )
    reflected: dict[str, tuple[datetime, str]] = {}
    for d in deliveries:
        for fill_id in d.payload.fill_ids:
            seen = reflected.get(fill_id)
            if seen is None or d.envelope.time < seen[0]:
                reflected[fill_id] = (d.envelope.time, d.payload.account_id)
    await repo.record_reconciled_fills(
        uow.session,
        [
            {"fill_id": fill_id, "account_id": account_id, "reconciled_at": time}
            for fill_id, (time, account_id) in sorted(reflected.items())
        ],
    )
    await repo.refresh_filled_trades(uow.session, list(reflected))
    await repo.revalue_accounts(uow.session, applied)
    return sorted(replaced)


def _run_rows(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """Each run of the batch with the first and last time its events name."""
    runs: dict[uuid.UUID, dict[str, Any]] = {}
    for d in deliveries:
        p = d.payload
        run = runs.setdefault(
            p.run_id,
            {
                "run_id": p.run_id,
                "tenant": d.envelope.tenant,
                "model_id": p.model_id,
                "model_version": p.model_version,
                "first_event_at": d.envelope.time,
                "last_event_at": d.envelope.time,
            },
        )
        run["first_event_at"] = min(run["first_event_at"], d.envelope.time)
        run["last_event_at"] = max(run["last_event_at"], d.envelope.time)
    return sorted(runs.values(), key=lambda r: r["run_id"])


async def apply_drift(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Record what runs measured, and each account's newest verdict from the engine."""
    measured = _newest(
        deliveries, lambda d: (d.payload.run_id, d.payload.account_id), lambda d: d.envelope.time
    )
    rows = [
        {
            "run_id": d.payload.run_id,
            "account_id": d.payload.account_id,
            "total_value": d.payload.total_value,
            "max_abs_drift": d.payload.max_abs_drift,
            "tolerance": d.payload.tolerance,
            "out_of_tolerance": d.payload.out_of_tolerance,
            "measured_at": d.envelope.time,
        }
        for d in measured
    ]
    await repo.upsert_run_drift(uow.session, rows)
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        seen = latest.get(row["account_id"])
        if seen is None or row["measured_at"] >= seen["measured_at"]:
            latest[row["account_id"]] = row
    await repo.record_verdicts(uow.session, list(latest.values()))
    # last: every batch of a run touches its row, so it is held only until the commit
    await repo.upsert_runs(uow.session, _run_rows(deliveries))


async def apply_chunks(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Record chunks of runs; a run's kind, trigger, model and totals come from them."""
    runs: dict[uuid.UUID, dict[str, Any]] = {}
    chunks: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
    for d in deliveries:
        p: RebalanceChunkCompletedV1 = d.payload
        run = runs.setdefault(
            p.run_id, {"first_event_at": d.envelope.time, "last_event_at": d.envelope.time}
        )
        run.update(
            run_id=p.run_id,
            tenant=d.envelope.tenant,
            model_id=p.model_id,
            model_version=p.model_version,
            kind=p.kind,
            trigger=p.trigger,
            chunks=p.chunks,
            first_event_at=min(run["first_event_at"], d.envelope.time),
            last_event_at=max(run["last_event_at"], d.envelope.time),
        )
        seen = chunks.get((p.run_id, p.chunk))
        if seen is not None and not (seen["status"] == "failed" and p.status == "completed"):
            continue  # the first report of a chunk stands, unless a failed one is redone
        chunks[(p.run_id, p.chunk)] = {
            "run_id": p.run_id,
            "chunk": p.chunk,
            "chunks": p.chunks,
            "status": p.status,
            "accounts": p.accounts,
            "accounts_evaluated": p.accounts_evaluated,
            "accounts_out_of_tolerance": p.accounts_out_of_tolerance,
            "accounts_skipped": p.accounts_skipped,
            "proposals": p.proposals,
            "trades": p.trades,
            "error": p.error,
            "reported_at": d.envelope.time,
        }
    await repo.record_chunks(
        uow.session,
        sorted(runs.values(), key=lambda r: r["run_id"]),
        sorted(chunks.values(), key=lambda c: (c["run_id"], c["chunk"])),
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
        "updated_at": env.time,
    }


def _check_trade_ids(trades: list[TradeV1], what: str) -> None:
    ids = [t.trade_id for t in trades]
    if len(set(ids)) != len(ids):
        raise PermanentMessageError(f"{what} lists a trade id twice")


def _trade_rows(deliveries: Sequence[Delivery], *, approved: bool) -> list[dict[str, Any]]:
    """The trades of the batch's proposals or approvals, each trade once (its latest)."""
    rows: dict[uuid.UUID, dict[str, Any]] = {}
    for d in deliveries:
        for t in d.payload.trades:
            rows[t.trade_id] = _trade_row(
                t, d.payload.proposal_id, d.payload.account_id, d.envelope, approved=approved
            )
    return sorted(rows.values(), key=lambda r: r["trade_id"])


async def apply_proposed(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Proposals with their run and trades."""
    for d in deliveries:
        _check_trade_ids(d.payload.trades, f"proposal {d.payload.proposal_id}")
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    newest = _newest(deliveries, lambda d: d.payload.proposal_id, lambda d: d.envelope.time)
    await repo.upsert_proposed(
        uow.session,
        sorted(
            (
                {
                    "proposal_id": p.proposal_id,
                    "account_id": p.account_id,
                    "run_id": p.run_id,
                    "model_id": p.model_id,
                    "model_version": p.model_version,
                    "cash_before": p.cash_before,
                    "cash_after_estimated": p.cash_after_estimated,
                    "proposed_at": d.envelope.time,
                }
                for d in newest
                for p in [d.payload]
            ),
            key=lambda r: r["proposal_id"],
        ),
    )
    rows = _trade_rows(deliveries, approved=False)
    await repo.refresh_trades(uow.session, await repo.upsert_trade_details(uow.session, rows))
    await repo.upsert_runs(uow.session, _run_rows(deliveries))  # last, as for drift


async def apply_approved(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Approvals of proposals and their trades (the first approval wins); trades a person
    removed before approving are declined."""
    for d in deliveries:
        _check_trade_ids(d.payload.trades, f"approval of {d.payload.proposal_id}")
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    first = _first(deliveries, lambda d: d.payload.proposal_id)
    await repo.approve_proposals(
        uow.session,
        sorted(
            (
                {
                    "proposal_id": d.payload.proposal_id,
                    "account_id": d.payload.account_id,
                    "by": d.payload.approved_by,
                    "at": d.envelope.time,
                }
                for d in first
            ),
            key=lambda r: r["proposal_id"],
        ),
    )
    rows = _trade_rows(deliveries, approved=True)
    await repo.refresh_trades(uow.session, await repo.upsert_trade_details(uow.session, rows))
    await repo.decline_trades_left_out(uow.session, [d.payload.proposal_id for d in first])


def _proposal_rows(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    ids = {(d.payload.proposal_id, d.payload.account_id) for d in deliveries}
    return [{"proposal_id": p, "account_id": a} for p, a in sorted(ids)]


async def apply_fills(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> int:
    """Remember fills and recompute their trades; returns how many fills were new."""
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    await repo.ensure_proposals(uow.session, _proposal_rows(deliveries))
    trades: dict[uuid.UUID, dict[str, Any]] = {}
    fills: dict[str, dict[str, Any]] = {}
    for d in deliveries:
        p: FillsReceivedV1 = d.payload
        trades.setdefault(
            p.trade_id,
            {
                "trade_id": p.trade_id,
                "proposal_id": p.proposal_id,
                "account_id": p.account_id,
                "symbol": p.symbol,
                "side": p.side,
                "quantity": None,
                "rejected_reason": None,
                "rejected_at": None,
                "status": "partially_filled",
                "updated_at": d.envelope.time,
            },
        )
        fills.setdefault(
            p.fill_id,
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
    await repo.ensure_trades(uow.session, [trades[t] for t in sorted(trades)])
    new = await repo.insert_fills(uow.session, [fills[f] for f in sorted(fills)])
    await repo.refresh_trades(uow.session, list(trades))
    return new


async def apply_rejected(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Orders the custodian rejected: their trades are rejected."""
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    await repo.ensure_proposals(uow.session, _proposal_rows(deliveries))
    first = _first(deliveries, lambda d: d.payload.trade_id)
    rows = [
        {
            "trade_id": p.trade_id,
            "proposal_id": p.proposal_id,
            "account_id": p.account_id,
            "symbol": p.symbol,
            "side": p.side,
            "quantity": p.quantity,
            "rejected_reason": p.reason,
            "rejected_at": d.envelope.time,
            "status": "rejected",
            "updated_at": d.envelope.time,
        }
        for d in first
        for p in [d.payload]
    ]
    rows.sort(key=lambda r: r["trade_id"])
    await repo.ensure_trades(uow.session, rows)
    await repo.refresh_trades(uow.session, [r["trade_id"] for r in rows])


async def apply_declined(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Proposals a person rejected: their trades never go out (the first decline wins)."""
    await repo.lock_accounts(uow.session, [d.payload.account_id for d in deliveries])
    first = _first(deliveries, lambda d: d.payload.proposal_id)
    rows = sorted(
        (
            {
                "proposal_id": d.payload.proposal_id,
                "account_id": d.payload.account_id,
                "by": d.payload.rejected_by,
                "at": d.envelope.time,
                "reason": d.payload.reason,
            }
            for d in first
        ),
        key=lambda r: r["proposal_id"],
    )
    await repo.decline_proposals(uow.session, rows)
    await repo.refresh_proposal_trades(uow.session, [r["proposal_id"] for r in rows])


def hold_states(deliveries: Sequence[Delivery]) -> list[dict[str, Any]]:
    """Each account's newest hold or release of the batch (by event time); a hold with the
    time its run of holds began, and whether that run reaches back past the batch."""
    by_account: dict[str, list[Delivery]] = {}
    for d in deliveries:
        by_account.setdefault(d.payload.account_id, []).append(d)
    states = []
    for account_id, events in by_account.items():
        events.sort(key=lambda d: d.envelope.time)
        newest = events[-1]
        since, continues = None, True
        for d in reversed(events):
            if not d.payload.held:
                continues = False
                break
            since = d.envelope.time
        states.append(
            {
                "account_id": account_id,
                "tenant": newest.envelope.tenant,
                "held": newest.payload.held,
                "reason": newest.payload.reason if newest.payload.held else None,
                "custodian": newest.payload.custodian,
                "business_date": newest.payload.business_date,
                "held_since": since,
                "changed_at": newest.envelope.time,
                "continues": continues,
            }
        )
    return states


async def apply_holds(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
    """Keep whether each account is held from trading, why and since when; an event older
    than the one stored changes nothing."""
    await repo.upsert_holds(uow.session, hold_states(deliveries))


# --- reports --------------------------------------------------------------------------------


def _overview(row: dict[str, Any], default_tolerance: Decimal) -> AccountOverview:
    """An account's stored valuation and the engine's latest drift verdict (none: within)."""
    last = None
    if row["drift_run_id"] is not None:
        last = LastMeasured(
            run_id=row["drift_run_id"],
            max_abs_drift=row["max_drift"],
            out_of_tolerance=row["out_of_tolerance"],
            measured_at=row["measured_at"],
        )
    fields = {k: row[k] for k in AccountOverview.model_fields if k in row}
    fields.update(
        tolerance=row["tolerance"] if row["tolerance"] is not None else default_tolerance,
        out_of_tolerance=bool(row["out_of_tolerance"]),
        positions=row["positions"] or 0,
        unpriced_positions=row["unpriced_positions"] or 0,
        last_measured=last,
        held=bool(row.get("held")),
    )
    return AccountOverview(**fields)


async def list_accounts(
    session: AsyncSession,
    tenant: str,
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
) -> Page[AccountOverview]:
    """A page of the tenant's accounts from their stored valuations, filtered and sorted."""
    total, rows = await repo.account_page(
        session,
        tenant,
        limit=limit,
        offset=offset,
        model_id=model_id,
        out_of_tolerance=out_of_tolerance,
        status=status,
        search=search,
        sort=sort,
        descending=descending,
    )
    items = [_overview(r, default_tolerance) for r in rows]
    return Page[AccountOverview].counted(items, limit, offset, total)


async def account_summary(
    session: AsyncSession, tenant: str, account_id: str, default_tolerance: Decimal
) -> AccountSummary:
    """One account's overview with its sleeves, trades by status and reflected fills."""
    row = await repo.account_overview(session, tenant, account_id)
    if row is None:
        raise NotFound(f"no account {account_id}")
    account = await repo.get_account(session, account_id)
    snapshot = await repo.get_holdings(session, account_id)
    return AccountSummary(
        **_overview(row, default_tolerance).model_dump(),
        tenant=account.tenant if account else None,
        trades_by_status=await repo.trade_status_counts(session, account_id),
        sleeves=[
            SleeveOut(sleeve_id=s.sleeve_id, model_id=s.model_id, weight=s.weight)
            for s in await repo.sleeves_of(session, account_id)
        ],
        fills_reflected=list(snapshot.fill_ids) if snapshot else [],
    )


async def holdings(session: AsyncSession, tenant: str, account_id: str) -> Holdings:
    """Each held or targeted security with price, value, weight, target and difference,
    and cash as a line of its own. Weights are of the market value (cash included)."""
    if not await repo.account_known(session, tenant, account_id):
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


async def lots(session: AsyncSession, tenant: str, account_id: str, on: date) -> Lots:
    """Open tax lots with unrealized gain and term on `on`, split short/long-term."""
    if not await repo.account_known(session, tenant, account_id):
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


async def trades(
    session: AsyncSession, tenant: str, account_id: str, limit: int, offset: int
) -> list[TradeOut]:
    """A page of the account's trades, newest first (404 unless the tenant's)."""
    if not await repo.account_known(session, tenant, account_id):
        raise NotFound(f"no account {account_id}")
    rows = await repo.trades_of(session, account_id, limit, offset)
    return [TradeOut(**{k: r[k] for k in TradeOut.model_fields}) for r in rows]


def _progress(row: dict[str, Any], failures: list[ChunkFailure]) -> RunProgress:
    """A run's progress from its chunks and tallies (see RunProgress.complete)."""
    trades_ = int(row["trades"])
    filled, rejected, declined = (
        int(row["trades_filled"]),
        int(row["trades_rejected"]),
        int(row["trades_declined"]),
    )
    finished = filled + rejected + declined
    fills, reflected = int(row["fills"]), int(row["fills_reflected"])
    chunks = row["chunks"]
    chunks_in = int(row["chunks_completed"]) + int(row["chunks_failed"])
    expected_trades = int(row["expected_trades"])
    expected_proposals = int(row["expected_proposals"])
    proposals = int(row["proposals"])
    chunked = chunks is not None and chunks_in >= chunks
    done = (
        chunked
        and proposals >= expected_proposals
        and trades_ >= expected_trades
        and finished == trades_
        and reflected == fills
    )
    # Work counted in trades and fills; before the chunks are in, the trades announced so far.
    planned = max(trades_, expected_trades)
    work = planned + fills
    progress = 1.0 if done else (0.0 if work == 0 else min((finished + reflected) / work, 0.99))
    taxed = int(row["taxed_trades"])
    return RunProgress(
        run_id=row["run_id"],
        model_id=row["model_id"],
        model_version=row["model_version"],
        kind=row["kind"],
        trigger=row["trigger"],
        chunks=chunks,
        chunks_completed=row["chunks_completed"],
        chunks_failed=row["chunks_failed"],
        failed_chunks=failures,
        accounts=row["accounts"],
        accounts_evaluated=row["accounts_evaluated"],
        accounts_skipped=row["accounts_skipped"],
        expected_proposals=expected_proposals,
        expected_trades=expected_trades,
        accounts_measured=row["accounts_measured"],
        accounts_out_of_tolerance=row["accounts_out_of_tolerance"],
        proposals=proposals,
        proposals_approved=row["proposals_approved"],
        trades=trades_,
        trades_filled=filled,
        trades_partially_filled=row["trades_partially_filled"],
        trades_rejected=rejected,
        trades_declined=declined,
        estimated_tax=row["estimated_tax"] if taxed else None,
        trades_open=int(row["trades_approved"]) + int(row["trades_proposed"]),
        trades_awaiting_approval=row["trades_proposed"],
        fills=fills,
        fills_reflected=reflected,
        complete=done,
        progress=progress,
        first_event_at=row["first_event_at"],
        last_event_at=row["last_event_at"],
        last_reconciled_at=row["last_reconciled_at"],
    )


async def _with_failures(session: AsyncSession, rows: list[dict[str, Any]]) -> list[RunProgress]:
    failures: dict[uuid.UUID, list[ChunkFailure]] = {}
    for f in await repo.failed_chunks(session, [r["run_id"] for r in rows]):
        failures.setdefault(f["run_id"], []).append(
            ChunkFailure(chunk=f["chunk"], accounts=f["accounts"], error=f["error"])
        )
    return [_progress(r, failures.get(r["run_id"], [])) for r in rows]


async def run(session: AsyncSession, tenant: str, run_id: uuid.UUID) -> RunProgress:
    """One run's progress (404 unless the tenant's)."""
    row = await repo.run_progress(session, tenant, run_id)
    if row is None:
        raise NotFound(f"no rebalance run {run_id}")
    return (await _with_failures(session, [row]))[0]


async def runs(
    session: AsyncSession,
    tenant: str,
    *,
    model_id: str | None,
    model_version: int | None,
    kind: str | None,
    limit: int,
    offset: int,
) -> list[RunProgress]:
    """A page of runs, newest first, with their progress."""
    rows = await repo.list_runs(
        session,
        tenant,
        model_id=model_id,
        model_version=model_version,
        kind=kind,
        limit=limit,
        offset=offset,
    )
    return await _with_failures(session, rows)


async def summary(session: AsyncSession, tenant: str) -> Summary:
    """The tenant's book in numbers, from counts of small tables and tallies."""
    counts = await repo.summary_counts(session, tenant)
    by_status = {
        status: int(counts[f"trades_{status}"])
        for status in ("proposed", "approved", "partially_filled", "filled", "rejected", "declined")
        if counts[f"trades_{status}"]
    }
    return Summary(
        accounts=counts["accounts"],
        models=counts["models"],
        securities=counts["securities"],
        accounts_out_of_tolerance=counts["accounts_out_of_tolerance"],
        accounts_measured=counts["accounts_measured"],
        runs=counts["runs"],
        proposals=counts["proposals"],
        trades=counts["trades"],
        trades_by_status=by_status,
        fills=counts["fills"],
        fills_reflected=counts["fills_reflected"],
        total_market_value=Decimal(counts["market_value"]).quantize(CENTS),
    )


async def run_accounts(
    session: AsyncSession, tenant: str, run_id: uuid.UUID, limit: int, offset: int
) -> list[RunAccount]:
    """A page of a run's accounts with what the run measured and how their trades stand."""
    if await repo.run_progress(session, tenant, run_id) is None:
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
        for r in await repo.run_accounts(session, tenant, run_id, limit, offset)
    ]


async def models(session: AsyncSession, tenant: str, limit: int, offset: int) -> list[ModelOut]:
    """A page of the tenant's models with their counts."""
    return [ModelOut(**r) for r in await repo.list_models(session, tenant, limit, offset)]
