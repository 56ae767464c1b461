"""All of rebalance-svc's SQL."""

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from ballast_common.bulk import driver_connection, insert_columns
from pydantic_core import from_json
from sqlalchemy import ColumnElement, Table, and_, case, delete, func, or_, text, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc.tables import (
    Account,
    Cash,
    EquivalenceSet,
    FillMark,
    Holding,
    LossSale,
    Model,
    Run,
    RunChunk,
    Scenario,
    ScenarioReference,
    Security,
    SecurityList,
    Sleeve,
    TradingHold,
)
from rebalance_svc.tables import TradeInFlight as TradeInFlightRow

SCENARIOS: Table = Scenario.__table__  # type: ignore[attr-defined]
HOLDINGS: Table = Holding.__table__  # type: ignore[attr-defined]

ACCOUNT_FIELDS = (
    "tenant",
    "model_id",
    "status",
    "household_id",
    "account_type",
    "rebalance_settings",
    "restrictions",
    "tax_settings",
    "rebalance_range",
    "interior_pct",
)


async def upsert_securities(session: AsyncSession, rows: Sequence[dict[str, object]]) -> None:
    stmt = insert(Security).values(list(rows))
    stmt = stmt.on_conflict_do_update(
        index_elements=[Security.symbol],
        set_={
            c: stmt.excluded[c] for c in ("asset_class", "sector", "price", "fractional_eligible")
        },
    )
    await session.execute(stmt)


async def prices(session: AsyncSession) -> dict[str, Decimal]:
    result = await session.exec(select(col(Security.symbol), col(Security.price)))
    return dict(result.all())


async def get_model(session: AsyncSession, model_id: str) -> Model | None:
    return await session.get(Model, model_id)


async def save(session: AsyncSession, row: Model | Account | Run) -> None:
    session.add(row)
    await session.flush()


ROWS_PER_STATEMENT = 500  # of a multi-row VALUES (the driver takes 32,767 parameters)


async def upsert_accounts(session: AsyncSession, accounts: Sequence[Account]) -> None:
    """Insert or update the accounts (each at most once), a few hundred per statement."""
    for start in range(0, len(accounts), ROWS_PER_STATEMENT):
        page = accounts[start : start + ROWS_PER_STATEMENT]
        stmt = insert(Account).values([a.model_dump() for a in page])
        stmt = stmt.on_conflict_do_update(
            index_elements=[Account.account_id],
            set_={c: stmt.excluded[c] for c in ACCOUNT_FIELDS},
        )
        await session.execute(stmt)


async def replace_sleeves(
    session: AsyncSession, account_ids: Sequence[str], sleeves: Sequence[Sleeve]
) -> None:
    """The sleeves of these accounts become the given ones."""
    if not account_ids:
        return
    await session.execute(delete(Sleeve).where(col(Sleeve.account_id).in_(list(account_ids))))
    for start in range(0, len(sleeves), ROWS_PER_STATEMENT):
        page = sleeves[start : start + ROWS_PER_STATEMENT]
        await session.execute(insert(Sleeve).values([s.model_dump() for s in page]))


async def upsert_security_lists(session: AsyncSession, lists: dict[str, list[str]]) -> None:
    if not lists:
        return
    stmt = insert(SecurityList).values(
        [{"list_id": k, "symbols": v} for k, v in sorted(lists.items())]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[SecurityList.list_id], set_={"symbols": stmt.excluded.symbols}
    )
    await session.execute(stmt)


async def security_lists(session: AsyncSession) -> dict[str, list[str]]:
    result = await session.exec(select(SecurityList.list_id, SecurityList.symbols))
    return {list_id: list(symbols) for list_id, symbols in result}


async def upsert_equivalence_set(session: AsyncSession, row: EquivalenceSet) -> bool:
    """Store the set's version if it is newer than the stored one; False when it is not."""
    stmt = insert(EquivalenceSet).values(row.model_dump())
    upsert = stmt.on_conflict_do_update(
        index_elements=[EquivalenceSet.set_id],
        set_={
            c: stmt.excluded[c]
            for c in ("name", "members", "identical", "removed", "version", "changed_at")
        },
        where=col(EquivalenceSet.version) < stmt.excluded.version,
    ).returning(col(EquivalenceSet.set_id))
    return (await session.execute(upsert)).first() is not None


async def get_equivalence_set(session: AsyncSession, set_id: str) -> EquivalenceSet | None:
    return await session.get(EquivalenceSet, set_id)


async def live_equivalence_sets(session: AsyncSession) -> list[EquivalenceSet]:
    """Sets not removed, newest announcement first."""
    result = await session.exec(
        select(EquivalenceSet)
        .where(col(EquivalenceSet.removed).is_(False))
        .order_by(col(EquivalenceSet.changed_at).desc(), col(EquivalenceSet.set_id))
    )
    return list(result)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which of a tenant's accounts a run covers: those on a model (SMAs following it, UMAs
    with a sleeve on it), those named, those with tax-loss harvesting on, or (nothing more
    given) every one."""

    tenant: str
    model_id: str | None = None
    account_ids: Sequence[str] | None = None
    harvesting: bool = False

    def where(self) -> ColumnElement[bool]:
        return and_(col(Account.tenant) == self.tenant, self._accounts())

    def _accounts(self) -> ColumnElement[bool]:
        if self.model_id is not None:
            with_sleeve = select(Sleeve.account_id).where(Sleeve.model_id == self.model_id)
            return or_(
                col(Account.model_id) == self.model_id, col(Account.account_id).in_(with_sleeve)
            )
        if self.account_ids is not None:
            return col(Account.account_id).in_(list(self.account_ids))
        if self.harvesting:
            return Account.tax_settings["harvest"].as_boolean().is_(True)  # type: ignore[index]
        return true()


async def tenants_with_accounts(session: AsyncSession) -> list[str]:
    """Every tenant that has an account here, in order."""
    result = await session.exec(
        select(col(Account.tenant)).distinct().order_by(col(Account.tenant))
    )
    return list(result.all())


async def selected_chunks(
    session: AsyncSession, selection: Selection, size: int
) -> list[list[str]]:
    """The selected account ids in chunks of `size`, in id order, from one snapshot (ids
    only: 100,000 accounts are a few megabytes)."""
    numbered = (
        select(
            # integer division: rows 0..size-1 are chunk 0, and so on
            ((func.row_number().over(order_by=col(Account.account_id)) - 1) // size).label("chunk"),
            col(Account.account_id).label("account_id"),
        )
        .where(selection.where())
        .subquery()
    )
    result = await session.execute(
        select(func.array_agg(aggregate_order_by(numbered.c.account_id, numbered.c.account_id)))
        .group_by(numbered.c.chunk)
        .order_by(numbered.c.chunk)
    )
    return [list(ids) for (ids,) in result.all()]


async def existing_account_ids(
    session: AsyncSession, account_ids: Sequence[str], tenant: str
) -> set[str]:
    """Those of `account_ids` known here as `tenant`'s."""
    stmt = select(col(Account.account_id)).where(
        col(Account.account_id).in_(list(account_ids)), col(Account.tenant) == tenant
    )
    return set((await session.exec(stmt)).all())


async def accounts_by_ids(session: AsyncSession, account_ids: Sequence[str]) -> list[Account]:
    result = await session.exec(
        select(Account)
        .where(col(Account.account_id).in_(list(account_ids)))
        .order_by(col(Account.account_id))
    )
    return list(result)


async def claim_chunk(session: AsyncSession, run_id: str, chunk: int, accounts: int) -> bool:
    """Mark a chunk as taken in this transaction; False if it was processed before."""
    result = await session.execute(
        insert(RunChunk)
        .values(
            run_id=run_id,
            chunk=chunk,
            status="processing",
            accounts=accounts,
            skipped={},
            finished_at=func.now(),
        )
        .on_conflict_do_nothing()
        .returning(col(RunChunk.chunk))
    )
    return result.first() is not None


async def finish_chunk(session: AsyncSession, run_id: str, chunk: int, **outcome: Any) -> None:
    await session.execute(
        update(RunChunk)
        .where(col(RunChunk.run_id) == run_id, col(RunChunk.chunk) == chunk)
        .values(**outcome, finished_at=func.clock_timestamp())  # now(): when it began
    )


async def count_chunk_in_run(
    session: AsyncSession, run_id: str, counts: dict[str, int], *, failed: bool
) -> None:
    """Add a chunk's counts to its run; the run finishes with its last chunk."""
    run = Run.__table__.c  # type: ignore[attr-defined]
    await session.execute(
        update(Run)
        .where(col(Run.run_id) == run_id)
        .values(
            chunks_done=run.chunks_done + 1,
            chunks_failed=run.chunks_failed + int(failed),
            finished_at=case(
                (run.chunks_done + 1 >= run.chunks, func.clock_timestamp()),
                else_=run.finished_at,
            ),
            **{name: getattr(run, name) + value for name, value in counts.items()},
        )
    )


async def sleeves_of(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, list[Sleeve]]:
    result = await session.exec(
        select(Sleeve)
        .where(col(Sleeve.account_id).in_(account_ids))
        .order_by(col(Sleeve.account_id), col(Sleeve.position))
    )
    out: dict[str, list[Sleeve]] = defaultdict(list)
    for row in result:
        out[row.account_id].append(row)
    return out


async def models(session: AsyncSession, model_ids: Sequence[str]) -> dict[str, Model]:
    """The models of these ids, in id order (a run's stored reference lists them so)."""
    result = await session.exec(
        select(Model).where(col(Model.model_id).in_(model_ids)).order_by(col(Model.model_id))
    )
    return {m.model_id: m for m in result}


@dataclass(frozen=True)
class AccountBook:
    """An account's holdings as the book of record last sent them."""

    account_id: str
    cash: Decimal
    # symbol, quantity, lots (JSON text), the latest acquisition date of the lots
    positions: Sequence[tuple[str, Decimal, str, date | None]]
    household_id: str | None = None
    loss_sales: Sequence[dict[str, Any]] = ()
    realized: tuple[int, Decimal, Decimal] | None = None  # year, short-term, long-term
    sleeve_cash: Sequence[dict[str, Any]] | None = None  # a UMA's: sleeve_id, amount


async def replace_books(session: AsyncSession, books: Sequence[AccountBook]) -> None:
    """Replace the accounts' positions (with lots), cash, recent loss sales and gains realized
    this year: a few statements for the whole batch."""
    if not books:
        return
    ids = [b.account_id for b in books]
    await session.execute(delete(Holding).where(col(Holding.account_id).in_(ids)))
    held = [(b.account_id, *position) for b in books for position in b.positions]
    await insert_columns(
        session,
        HOLDINGS,
        {
            "account_id": [h[0] for h in held],
            "symbol": [h[1] for h in held],
            "quantity": [h[2] for h in held],
            "lots": [h[3] for h in held],
            "last_acquired": [h[4] for h in held],
        },
    )
    now = datetime.now(UTC)
    stmt = insert(Cash)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Cash.account_id],
        set_={
            c: stmt.excluded[c]
            for c in (
                "amount",
                "household_id",
                "updated_at",
                "realized_year",
                "realized_short_term",
                "realized_long_term",
                "sleeve_cash",
            )
        },
    )
    await session.execute(
        stmt,
        [
            {
                "account_id": b.account_id,
                "amount": b.cash,
                "household_id": b.household_id,
                "updated_at": now,
                "realized_year": b.realized[0] if b.realized else None,
                "realized_short_term": b.realized[1] if b.realized else None,
                "realized_long_term": b.realized[2] if b.realized else None,
                "sleeve_cash": list(b.sleeve_cash) if b.sleeve_cash else None,
            }
            for b in books
        ],
    )
    await session.execute(delete(LossSale).where(col(LossSale.account_id).in_(ids)))
    sales = [
        {"account_id": b.account_id, "seq": i, "household_id": b.household_id, **sale}
        for b in books
        for i, sale in enumerate(b.loss_sales)
    ]
    if sales:
        await session.execute(insert(LossSale), sales)


class HeldRow(NamedTuple):
    """One holding of the read model, as plain values (no ORM object per row: a chunk reads
    tens of thousands): its lots, or where they were not read, the shares they hold per
    sleeve they name."""

    symbol: str
    quantity: Decimal
    lots: list[dict[str, Any]]
    sleeve_shares: Sequence[tuple[str, Decimal]] = ()


async def sleeve_cash_of(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """The cash per sleeve the book of record sent for these accounts (those it sent none
    for are absent)."""
    if not account_ids:
        return {}
    rows = await session.execute(
        select(col(Cash.account_id), col(Cash.sleeve_cash)).where(
            col(Cash.account_id).in_(account_ids), col(Cash.sleeve_cash).is_not(None)
        )
    )
    return {account_id: parts for account_id, parts in rows if parts}


async def books_of(
    session: AsyncSession,
    account_ids: Sequence[str],
    *,
    lots: bool = True,
    sleeve_shares_of: Sequence[str] = (),
) -> tuple[dict[str, Decimal], dict[str, list[HeldRow]]]:
    """Cash and holdings (with lots, unless not wanted; then, for the UMAs in
    `sleeve_shares_of`, the shares their lots hold per sleeve) of the given accounts;
    accounts never reconciled have no cash row."""
    ids = list(account_ids)
    connection = await _reading(session)
    cash_rows = await connection.fetch(
        "SELECT account_id, amount FROM cash WHERE account_id = ANY($1::text[])", ids
    )
    holdings: dict[str, list[HeldRow]] = defaultdict(list)
    if lots:
        # lots as text, parsed by the JSON reader of the contracts (pydantic's): a chunk's
        # holdings carry tens of thousands of lots, twice as fast as the driver's json codec
        rows = await connection.fetch(
            "SELECT account_id, symbol, quantity, lots::text FROM holdings "
            "WHERE account_id = ANY($1::text[]) ORDER BY account_id, symbol",
            ids,
        )
        for row in rows:
            holdings[row[0]].append(HeldRow(row[1], row[2], from_json(row[3])))
    else:
        rows = await connection.fetch(_HOLDINGS_WITH_SLEEVE_SHARES, ids, list(sleeve_shares_of))
        for account_id, symbol, quantity, sleeves, shares in rows:
            split = list(zip(sleeves, shares, strict=True)) if sleeves else []
            holdings[account_id].append(HeldRow(symbol, quantity, [], split))
    return {a: amount for a, amount in cash_rows}, holdings


# The lots of the UMAs ($2) are read only as far as splitting a position into sleeves needs:
# the shares of the lots naming each sleeve, summed exactly (numeric).
_HOLDINGS_WITH_SLEEVE_SHARES = (
    "SELECT h.account_id, h.symbol, h.quantity, s.sleeves, s.shares FROM holdings h "
    "LEFT JOIN LATERAL ("
    "SELECT array_agg(sleeve_id ORDER BY sleeve_id) AS sleeves, "
    "array_agg(shares ORDER BY sleeve_id) AS shares FROM ("
    "SELECT lot->>'sleeve_id' AS sleeve_id, sum((lot->>'quantity')::numeric) AS shares "
    "FROM jsonb_array_elements(CASE WHEN h.account_id = ANY($2::text[]) THEN h.lots "
    "ELSE '[]'::jsonb END) AS lot "
    "WHERE lot->>'sleeve_id' IS NOT NULL GROUP BY 1) named"
    ") s ON true WHERE h.account_id = ANY($1::text[]) ORDER BY h.account_id, h.symbol"
)


async def _reading(session: AsyncSession) -> Any:
    """The driver's connection for a read of many rows (no ORM row per row), after the
    session's pending changes are written."""
    await session.flush()
    return await driver_connection(session)


async def realized_of(
    session: AsyncSession, account_ids: Sequence[str]
) -> dict[str, tuple[int, Decimal, Decimal]]:
    """Gains realized so far in the year the book of record last reported, per account."""
    result = await session.exec(
        select(
            col(Cash.account_id),
            col(Cash.realized_year),
            col(Cash.realized_short_term),
            col(Cash.realized_long_term),
        ).where(col(Cash.account_id).in_(account_ids), col(Cash.realized_year).is_not(None))
    )
    return {a: (y, st or Decimal(0), lt or Decimal(0)) for a, y, st, lt in result.all() if y}


async def household_lots(
    session: AsyncSession, household_ids: Sequence[str], since: date
) -> list[tuple[str, str, str, list[dict[str, Any]]]]:
    """(household, account, symbol, lots) of positions in these households with lots bought
    on or after `since` (only those lots: recent purchases are what the wash-sale rule asks)."""
    if not household_ids:
        return []
    connection = await _reading(session)
    rows = await connection.fetch(
        "SELECT c.household_id, h.account_id, h.symbol, jsonb_agg(l.lot)::text FROM holdings h "
        "JOIN cash c ON c.account_id = h.account_id "
        "CROSS JOIN LATERAL jsonb_array_elements(h.lots) AS l(lot) "
        "WHERE c.household_id = ANY($1::text[]) AND h.last_acquired >= $2 "
        "AND (l.lot->>'acquired')::date >= $2 "
        "GROUP BY c.household_id, h.account_id, h.symbol "
        "ORDER BY h.account_id, h.symbol",
        list(household_ids),
        since,
    )
    return [(h or "", a, s, from_json(lots)) for h, a, s, lots in rows]


async def households_of(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, str]:
    """The household of each account as holdings-reconciled v2 last said."""
    result = await session.exec(
        select(col(Cash.account_id), col(Cash.household_id)).where(
            col(Cash.account_id).in_(account_ids), col(Cash.household_id).is_not(None)
        )
    )
    return {a: h for a, h in result.all() if h is not None}


class LossSaleRow(NamedTuple):
    account_id: str
    household_id: str | None
    symbol: str
    sold_on: date
    quantity: Decimal
    loss_per_share: Decimal


async def loss_sales_of(
    session: AsyncSession, account_ids: Sequence[str], household_ids: Sequence[str]
) -> list[LossSaleRow]:
    """Recent loss sales reported for these accounts or any account of these households."""
    result = await session.execute(
        text(
            "SELECT account_id, household_id, symbol, sold_on, quantity, loss_per_share "
            "FROM loss_sales WHERE account_id = ANY(:accounts) OR household_id = ANY(:households) "
            "ORDER BY account_id, seq"
        ),
        {"accounts": list(account_ids), "households": list(household_ids)},
    )
    return [LossSaleRow._make(r) for r in result]


async def lock_run_id(session: AsyncSession, run_id: str) -> None:
    """Hold the run's id for this transaction: two replicas starting the same run wait on it."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": run_id})


# --- trades in flight ------------------------------------------------------------------------


class TradeInFlight(NamedTuple):
    trade_id: str  # uuid text
    account_id: str
    proposal_id: str  # uuid text
    run_id: str  # uuid text
    quantity: Decimal


async def add_trades_in_flight(session: AsyncSession, trades: Sequence[TradeInFlight]) -> None:
    """The trades just proposed, in one statement (a trade already there is kept)."""
    if not trades:
        return
    connection = await driver_connection(session)
    await connection.execute(_ADD_TRADES_IN_FLIGHT, *map(list, zip(*trades, strict=True)))


# one statement, each column one array (none settled yet, proposed now)
_ADD_TRADES_IN_FLIGHT = (
    "INSERT INTO trades_in_flight (trade_id, account_id, proposal_id, run_id, quantity, "
    "settled_quantity, proposed_at) SELECT t.*, 0, now() FROM unnest($1::uuid[], $2::text[], "
    "$3::uuid[], $4::uuid[], $5::numeric[]) AS t ON CONFLICT DO NOTHING"
)


async def trades_in_flight(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, int]:
    """How many unsettled trades each of these accounts has."""
    result = await session.exec(
        select(col(TradeInFlightRow.account_id), func.count())
        .where(col(TradeInFlightRow.account_id).in_(list(account_ids)))
        .group_by(col(TradeInFlightRow.account_id))
    )
    return dict(result.all())


async def set_trading_holds(
    session: AsyncSession,
    held: Sequence[tuple[str, str, str | None, date | None]],
    released: Sequence[str],
) -> None:
    """Hold these accounts (account, reason, custodian, business date) and release those."""
    if released:
        await session.exec(
            delete(TradingHold).where(col(TradingHold.account_id).in_(list(released)))
        )
    if held:
        table = TradingHold.__table__  # type: ignore[attr-defined]
        names = ("account_id", "reason", "custodian", "business_date")
        columns: dict[str, list[Any]] = {n: [row[i] for row in held] for i, n in enumerate(names)}
        columns["held_at"] = [datetime.now(UTC)] * len(held)
        await insert_columns(
            session,
            table,
            columns,
            on_conflict="(account_id) DO UPDATE SET reason = excluded.reason,"
            " custodian = excluded.custodian, business_date = excluded.business_date,"
            " held_at = now()",
        )


async def trading_holds(session: AsyncSession, account_ids: Sequence[str]) -> dict[str, str]:
    """Why each of these accounts is held from trading (those held only)."""
    result = await session.exec(
        select(col(TradingHold.account_id), col(TradingHold.reason)).where(
            col(TradingHold.account_id).in_(list(account_ids))
        )
    )
    return dict(result.all())


async def mark_fills_received(
    session: AsyncSession, fills: Sequence[tuple[str, uuid.UUID, str, Decimal]]
) -> None:
    """Fills (id, trade, account, quantity) of our trades; settles those already reflected."""
    mine = [f for f in fills if f[1] is not None]
    if not mine:
        return
    stmt = insert(FillMark)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[FillMark.fill_id],
            set_={"trade_id": stmt.excluded.trade_id, "quantity": stmt.excluded.quantity,
                  "received": True},
        ),
        [
            {"fill_id": f, "trade_id": t, "quantity": q, "received": True, "reconciled": False}
            for f, t, _, q in mine
        ],
    )  # fmt: skip
    await _settle_marked_fills(session, [f for f, _, _, _ in mine])


async def mark_fills_reconciled(session: AsyncSession, fill_ids: Sequence[str]) -> None:
    """Fills the book of record reflected; settles those already received."""
    stmt = insert(FillMark)
    await session.execute(
        stmt.on_conflict_do_update(index_elements=[FillMark.fill_id], set_={"reconciled": True}),
        [
            {
                "fill_id": f,
                "trade_id": None,
                "quantity": None,
                "received": False,
                "reconciled": True,
            }
            for f in dict.fromkeys(fill_ids)
        ],
    )
    await _settle_marked_fills(session, fill_ids)


async def _settle_marked_fills(session: AsyncSession, fill_ids: Sequence[str]) -> None:
    """These fills, once both received and reflected, add to their trade's settled quantity;
    a trade settled in full is no longer in flight. Only the rows of these fills and their
    trades are read (by key): the tables hold every fill and trade still in flight."""
    settled = await session.execute(
        text(
            "WITH done AS (DELETE FROM fill_marks WHERE fill_id = ANY(CAST(:fills AS text[])) "
            "AND received AND reconciled RETURNING trade_id, quantity), "
            "by_trade AS (SELECT trade_id, sum(quantity) AS q FROM done GROUP BY trade_id) "
            "UPDATE trades_in_flight t SET settled_quantity = t.settled_quantity + b.q "
            "FROM by_trade b WHERE t.trade_id = b.trade_id "
            "RETURNING t.trade_id, t.settled_quantity >= t.quantity"
        ),
        {"fills": list(dict.fromkeys(fill_ids))},
    )
    await _forget_settled(session, [trade for trade, full in settled if full])


async def settle_rejected(
    session: AsyncSession, rejected: Sequence[tuple[uuid.UUID, Decimal]]
) -> None:
    """(trade, quantity) the custodian rejected: settled, it will not be traded."""
    if not rejected:
        return
    settled = await session.execute(
        text(
            "UPDATE trades_in_flight t SET settled_quantity = t.settled_quantity + r.q FROM "
            "(SELECT unnest(CAST(:trades AS uuid[])) AS trade_id, "
            "unnest(CAST(:quantities AS numeric[])) AS q) r WHERE t.trade_id = r.trade_id "
            "RETURNING t.trade_id, t.settled_quantity >= t.quantity"
        ),
        {"trades": [t for t, _ in rejected], "quantities": [q for _, q in rejected]},
    )
    await _forget_settled(session, [trade for trade, full in settled if full])


async def align_in_flight(
    session: AsyncSession,
    proposal_ids: Sequence[uuid.UUID],
    approved: Sequence[tuple[uuid.UUID, Decimal]],
) -> None:
    """The approved (trade, quantity) of these proposals: their other trades leave flight,
    and a changed quantity replaces the proposed one (settled at once if fills reached it)."""
    if not proposal_ids:
        return
    trade_ids = [t for t, _ in approved]
    await session.execute(
        text(
            "DELETE FROM trades_in_flight WHERE proposal_id = ANY(CAST(:proposals AS uuid[]))"
            " AND trade_id <> ALL(CAST(:trades AS uuid[]))"
        ),
        {"proposals": list(proposal_ids), "trades": trade_ids},
    )
    settled = await session.execute(
        text(
            "UPDATE trades_in_flight t SET quantity = a.q FROM "
            "(SELECT unnest(CAST(:trades AS uuid[])) AS trade_id, "
            "unnest(CAST(:quantities AS numeric[])) AS q) a "
            "WHERE t.trade_id = a.trade_id AND t.quantity <> a.q "
            "RETURNING t.trade_id, t.settled_quantity >= t.quantity"
        ),
        {"trades": trade_ids, "quantities": [q for _, q in approved]},
    )
    await _forget_settled(session, [trade for trade, full in settled if full])


async def drop_proposals(session: AsyncSession, proposal_ids: Sequence[uuid.UUID]) -> None:
    await session.execute(
        delete(TradeInFlightRow).where(col(TradeInFlightRow.proposal_id).in_(list(proposal_ids)))
    )


async def _forget_settled(session: AsyncSession, trade_ids: Sequence[uuid.UUID]) -> None:
    """Trades settled in full are no longer in flight."""
    if trade_ids:
        await session.execute(
            delete(TradeInFlightRow).where(col(TradeInFlightRow.trade_id).in_(list(trade_ids)))
        )


async def get_run(session: AsyncSession, run_id: str, *, tenant: str | None) -> Run | None:
    """The run (None also when a `tenant` is given and the run is not that tenant's)."""
    run = await session.get(Run, run_id)
    if run is None or (tenant is not None and run.tenant != tenant):
        return None
    return run


async def list_runs(
    session: AsyncSession,
    model_id: str | None,
    model_version: int | None,
    limit: int,
    offset: int = 0,
    *,
    tenant: str | None,
) -> list[Run]:
    """Runs (of `tenant` only, when given), newest first."""
    stmt = select(Run)
    if tenant is not None:
        stmt = stmt.where(Run.tenant == tenant)
    if model_id:
        stmt = stmt.where(Run.model_id == model_id)
    if model_version is not None:
        stmt = stmt.where(Run.model_version == model_version)
    stmt = stmt.order_by(col(Run.started_at).desc(), col(Run.run_id).desc())
    return list(await session.exec(stmt.limit(limit).offset(offset)))


async def run_skipped(session: AsyncSession, run_id: str, limit: int) -> dict[str, str]:
    """Why accounts of a run were not rebalanced (at most `limit` of them)."""
    rows = await session.execute(
        text(
            "SELECT s.key, s.value FROM run_chunks c, jsonb_each_text(c.skipped) s "
            "WHERE c.run_id = :run ORDER BY s.key LIMIT :limit"
        ),
        {"run": run_id, "limit": limit},
    )
    return dict(rows.all())


async def read_model_counts(session: AsyncSession, tenant: str) -> dict[str, int]:
    """Rows of the read model: the tenant's (accounts and what hangs off them, models, runs)
    and the platform's reference data (securities, security lists, equivalence sets)."""

    async def count(table: type, *where: Any) -> int:
        stmt = select(func.count()).select_from(table).where(*where)
        return int((await session.exec(stmt)).one())

    def of_tenant(account_id: Any) -> Any:
        return account_id.in_(select(Account.account_id).where(Account.tenant == tenant))

    return {
        "securities": await count(Security),
        "models": await count(Model, Model.tenant == tenant),
        "accounts": await count(Account, Account.tenant == tenant),
        "accounts_with_holdings": await count(Cash, of_tenant(col(Cash.account_id))),
        "uma_sleeves": await count(Sleeve, of_tenant(col(Sleeve.account_id))),
        "security_lists": await count(SecurityList),
        "equivalence_sets": int(
            (
                await session.exec(
                    select(func.count())
                    .select_from(EquivalenceSet)
                    .where(col(EquivalenceSet.removed).is_(False))
                )
            ).one()
        ),
        "runs": await count(Run, Run.tenant == tenant),
        "trades_in_flight": await count(
            TradeInFlightRow, of_tenant(col(TradeInFlightRow.account_id))
        ),
    }


async def all_securities(session: AsyncSession) -> list[Security]:
    return list(await session.exec(select(Security)))


async def add_scenarios(
    session: AsyncSession,
    run_id: str,
    chunk: int,
    reference: dict[str, Any],
    scenarios: dict[str, str],
) -> None:
    """A chunk's scenarios: its reference once, each account's own part (JSON text)."""
    if not scenarios:
        return
    await session.execute(
        insert(ScenarioReference)
        .values(run_id=run_id, chunk=chunk, reference=reference)
        .on_conflict_do_nothing()
    )
    await insert_columns(
        session,
        SCENARIOS,
        {
            "run_id": [run_id] * len(scenarios),
            "account_id": list(scenarios),
            "chunk": [chunk] * len(scenarios),
            "scenario": list(scenarios.values()),
        },
    )


async def get_scenario(
    session: AsyncSession, run_id: str, account_id: str, *, tenant: str | None
) -> dict[str, Any] | None:
    """An account's whole scenario of a run (its part and its chunk's reference); None also
    when a `tenant` is given and the account is not that tenant's."""
    stmt = select(Scenario).where(Scenario.run_id == run_id, Scenario.account_id == account_id)
    if tenant is not None:
        of_tenant = select(Account.account_id).where(
            Account.account_id == account_id, Account.tenant == tenant
        )
        stmt = stmt.where(of_tenant.exists())
    row = (await session.exec(stmt)).first()
    if row is None:
        return None
    if row.chunk is None:
        return row.scenario
    reference = await session.get(ScenarioReference, (run_id, row.chunk))
    return {**row.scenario, **(reference.reference if reference else {})}
