"""The simulator's own store: a SQLite file (WAL) holding its orders, their planned
executions and the execution sequence, so a kill -9 of the process forgets nothing.

All SQL of the simulator is here. Decimals are stored as text (exact); due times as
microseconds since the epoch (UTC). A planned execution gets its sequence number when it is
released; the next number is always one more than the highest given, inside the releasing
transaction, so the sequence stays gap-free across restarts. ``:memory:`` gives a store that
lives as long as the process (unit tests only).

WAL with ``synchronous=NORMAL``: a commit is in the WAL before it returns, so it survives a
crash of the process (not necessarily a power cut of the machine, which a simulator need not).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
# 2: the custodial book (accounts, closes, lots, allocations, reliefs); 3: orders taken over
# FIX (orders.channel, planned_executions.cancel_id, fix_reported) and wash sales
# (accounts.account_type, wash_adjustments, open_losses)
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    reference_price TEXT NOT NULL,
    received_at_us INTEGER NOT NULL,
    times_submitted INTEGER NOT NULL DEFAULT 1,
    -- submissions marked as a possible resend (FIX PossResend), the first one included
    possible_resends INTEGER NOT NULL DEFAULT 0,
    channel TEXT NOT NULL DEFAULT 'http'  -- how it came: 'http' or 'fix'
);
CREATE TABLE IF NOT EXISTS planned_executions (
    id INTEGER PRIMARY KEY,  -- planning order: breaks ties of due time
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    piece INTEGER NOT NULL,
    due_us INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('fill', 'reject')),
    quantity TEXT NOT NULL,
    price TEXT,
    reason TEXT,
    seq INTEGER UNIQUE,  -- NULL until released
    cancel_id TEXT,  -- a cancel's reject: the OrderCancelRequest's ClOrdID
    UNIQUE (client_order_id, piece)
);
CREATE INDEX IF NOT EXISTS planned_not_released
    ON planned_executions (due_us, id) WHERE seq IS NULL;
CREATE TABLE IF NOT EXISTS book_loads (
    load_id TEXT PRIMARY KEY,  -- the as-of date and a digest of the files
    folder TEXT NOT NULL,
    as_of TEXT NOT NULL,
    accounts INTEGER NOT NULL,
    lots INTEGER NOT NULL,
    loaded_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    opening_cash_cents INTEGER NOT NULL,  -- as of the book's date
    account_type TEXT NOT NULL DEFAULT 'taxable'  -- taxable or ira (no wash sales)
);
CREATE TABLE IF NOT EXISTS closes (
    symbol TEXT PRIMARY KEY,
    price TEXT NOT NULL  -- the book's close
);
-- Every lot ever opened, as opened: what is left of it is this less its reliefs.
CREATE TABLE IF NOT EXISTS lots (
    seq INTEGER PRIMARY KEY,  -- opening order: breaks FIFO ties of acquisition date
    account_id TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    quantity_e8 INTEGER NOT NULL,  -- units of 1e-8 share
    basis_e4 INTEGER NOT NULL,  -- units of 1e-4 dollar
    acquired_on TEXT NOT NULL,
    opened_on TEXT NOT NULL,  -- the business date it entered the book
    fill_id TEXT,  -- the allocation that opened it (NULL: loaded with the book)
    UNIQUE (account_id, lot_id)
);
CREATE INDEX IF NOT EXISTS lots_by_position ON lots (account_id, symbol);
CREATE TABLE IF NOT EXISTS allocations (
    fill_id TEXT PRIMARY KEY,
    client_order_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    price TEXT NOT NULL,
    executed_at_us INTEGER NOT NULL,
    trade_date TEXT NOT NULL,
    lot_ids TEXT NOT NULL,  -- JSON list: the lots a sell named, in order
    outcome TEXT NOT NULL CHECK (outcome IN ('booked', 'refused')),
    reason TEXT,
    cash_cents INTEGER NOT NULL,  -- cash moved: negative for a buy
    received_at_us INTEGER NOT NULL,
    times_received INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS allocations_booked_by_day
    ON allocations (trade_date, executed_at_us) WHERE outcome = 'booked';
CREATE TABLE IF NOT EXISTS reliefs (
    fill_id TEXT NOT NULL REFERENCES allocations (fill_id),
    position INTEGER NOT NULL,  -- the order the lots were relieved in
    account_id TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    quantity_e8 INTEGER NOT NULL,
    basis_e4 INTEGER NOT NULL,
    proceeds_cents INTEGER NOT NULL,
    trade_date TEXT NOT NULL,
    PRIMARY KEY (fill_id, position),
    FOREIGN KEY (account_id, lot_id) REFERENCES lots (account_id, lot_id)
);
CREATE INDEX IF NOT EXISTS reliefs_by_lot ON reliefs (account_id, lot_id, trade_date);
-- A loss a wash sale disallowed, added to the basis of the replacement lot that absorbed it
-- (`quantity_e8` of its shares), by the allocation that matched them (the sell, or the buy).
CREATE TABLE IF NOT EXISTS wash_adjustments (
    fill_id TEXT NOT NULL REFERENCES allocations (fill_id),
    position INTEGER NOT NULL,
    account_id TEXT NOT NULL,
    lot_id TEXT NOT NULL,
    quantity_e8 INTEGER NOT NULL,
    basis_e4 INTEGER NOT NULL,
    trade_date TEXT NOT NULL,
    PRIMARY KEY (fill_id, position),
    FOREIGN KEY (account_id, lot_id) REFERENCES lots (account_id, lot_id)
);
CREATE INDEX IF NOT EXISTS wash_adjustments_by_lot
    ON wash_adjustments (account_id, lot_id, trade_date);
-- Loss shares of a sale not matched to a replacement yet: a buy within 30 days may be one.
CREATE TABLE IF NOT EXISTS open_losses (
    id INTEGER PRIMARY KEY,  -- matching order among losses of one day
    fill_id TEXT NOT NULL REFERENCES allocations (fill_id),
    position INTEGER NOT NULL,  -- the relief's
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    lot_id TEXT NOT NULL,  -- the lot sold (its own purchase never replaces it)
    sold_on TEXT NOT NULL,
    held_days INTEGER NOT NULL,  -- the sold shares' holding period, tacked onto a replacement's
    quantity_e8 INTEGER NOT NULL,  -- shares left to match
    loss_e4 INTEGER NOT NULL,  -- loss left to disallow
    UNIQUE (fill_id, position)
);
CREATE INDEX IF NOT EXISTS open_losses_by_position
    ON open_losses (account_id, symbol, sold_on) WHERE quantity_e8 > 0;
-- The last execution sequence number reported over the FIX session (ExecutionReports).
CREATE TABLE IF NOT EXISTS fix_reported (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL
);
"""
# What a file of an older version lacks (its tables exist; CREATE ... IF NOT EXISTS adds the
# new tables, not new columns).
_UPGRADES = {
    3: (
        "ALTER TABLE orders ADD COLUMN channel TEXT NOT NULL DEFAULT 'http'",
        "ALTER TABLE planned_executions ADD COLUMN cancel_id TEXT",
        "ALTER TABLE accounts ADD COLUMN account_type TEXT NOT NULL DEFAULT 'taxable'",
    ),
}

# Every planned execution due by :now gets the next sequence numbers after :last, by due
# time then planning order.
_RELEASE_DUE = """
UPDATE planned_executions SET seq = :last + due.n
FROM (
    SELECT id, row_number() OVER (ORDER BY due_us, id) AS n
    FROM planned_executions
    WHERE seq IS NULL AND due_us <= :now
) AS due
WHERE planned_executions.id = due.id
"""

_EXECUTION_COLUMNS = """
    p.seq, p.client_order_id, p.piece, p.kind, p.quantity, p.price, p.reason, p.due_us,
    p.cancel_id, o.account_id, o.symbol, o.side
"""


def to_us(moment: datetime) -> int:
    """A timezone-aware datetime as whole microseconds since the epoch."""
    return (moment - EPOCH) // MICROSECOND


def from_us(us: int) -> datetime:
    return EPOCH + us * MICROSECOND


@dataclass(frozen=True)
class StoredOrder:
    """An order row: its terms and how often it was submitted."""

    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    reference_price: Decimal
    received_at: datetime
    times_submitted: int
    possible_resends: int
    channel: str = "http"


@dataclass(frozen=True)
class PlannedExecution:
    """A fill or reject planned at acceptance, released once ``due`` has passed."""

    client_order_id: str
    piece: int
    due: datetime
    kind: str
    quantity: Decimal
    price: Decimal | None
    reason: str | None
    cancel_id: str | None = None


@dataclass(frozen=True)
class ReleasedExecution:
    """A planned execution with its sequence number, and its order's terms."""

    seq: int
    client_order_id: str
    piece: int
    kind: str
    quantity: Decimal
    price: Decimal | None
    reason: str | None
    executed_at: datetime
    account_id: str
    symbol: str
    side: str
    cancel_id: str | None = None


@dataclass(frozen=True)
class FixReport:
    """A released execution of an order taken over FIX, with what its ExecutionReport says
    of the order: its quantity and the fills released up to this one."""

    execution: ReleasedExecution
    order_quantity: Decimal
    filled: Decimal  # released fills of the order up to and including this execution
    filled_value: Decimal  # their quantity x price


class BookStore:
    """The SQLite file of one simulator. Not thread-safe: use it from one event loop.

    The file is opened on first use, so building the app touches no disk.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._connection: sqlite3.Connection | None = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open()
        return self._connection

    def _open(self) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; `transaction()` says where they are.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.close()
            raise RuntimeError(
                f"custodian-sim store {self.path} has schema version {version}, newer than "
                f"this simulator's {SCHEMA_VERSION}"
            )
        with self._transaction(db):
            if version:
                for upgrade in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _UPGRADES.get(upgrade, ()):
                        db.execute(statement)
            _run_script(db, _SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return db

    def close(self) -> None:
        """Close the file (the next use opens it again)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @staticmethod
    @contextmanager
    def _transaction(db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (taken at once, so its reads see what it will change)."""
        with self._transaction(self._db):
            yield

    # -- orders -------------------------------------------------------------------------------

    def orders_by_id(self, client_order_ids: Sequence[str]) -> dict[str, StoredOrder]:
        """The stored orders among these ids."""
        if not client_order_ids:
            return {}
        rows = self._db.execute(
            "SELECT * FROM orders WHERE client_order_id IN (SELECT value FROM json_each(?))",
            (_json_list(client_order_ids),),
        )
        return {row["client_order_id"]: _order(row) for row in rows}

    def insert_orders(
        self, orders: Sequence[StoredOrder], planned: Sequence[PlannedExecution]
    ) -> None:
        """Store new orders and their planned executions (inside a transaction)."""
        self._db.executemany(
            "INSERT INTO orders (client_order_id, account_id, symbol, side, quantity, "
            "reference_price, received_at_us, times_submitted, possible_resends, channel) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    o.client_order_id,
                    o.account_id,
                    o.symbol,
                    o.side,
                    _text(o.quantity),
                    _text(o.reference_price),
                    to_us(o.received_at),
                    o.times_submitted,
                    o.possible_resends,
                    o.channel,
                )
                for o in orders
            ],
        )
        self._insert_planned(planned)

    def _insert_planned(self, planned: Sequence[PlannedExecution]) -> None:
        self._db.executemany(
            "INSERT INTO planned_executions (client_order_id, piece, due_us, kind, quantity, "
            "price, reason, cancel_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    p.client_order_id,
                    p.piece,
                    to_us(p.due),
                    p.kind,
                    _text(p.quantity),
                    None if p.price is None else _text(p.price),
                    p.reason,
                    p.cancel_id,
                )
                for p in planned
            ],
        )

    def unreleased_pieces(self, client_order_id: str) -> list[PlannedExecution]:
        """An order's planned executions not released yet, in piece order."""
        rows = self._db.execute(
            "SELECT * FROM planned_executions WHERE client_order_id = ? AND seq IS NULL "
            "ORDER BY piece",
            (client_order_id,),
        )
        return [
            PlannedExecution(
                client_order_id=row["client_order_id"],
                piece=row["piece"],
                due=from_us(row["due_us"]),
                kind=row["kind"],
                quantity=Decimal(row["quantity"]),
                price=None if row["price"] is None else Decimal(row["price"]),
                reason=row["reason"],
                cancel_id=row["cancel_id"],
            )
            for row in rows
        ]

    def replace_unreleased(self, client_order_id: str, planned: PlannedExecution) -> None:
        """Drop an order's unreleased executions and plan `planned` instead (inside a
        transaction): a cancel of the rest."""
        self._db.execute(
            "DELETE FROM planned_executions WHERE client_order_id = ? AND seq IS NULL",
            (client_order_id,),
        )
        self._insert_planned([planned])

    def count_resubmissions(self, resubmitted: Sequence[tuple[str, bool]]) -> None:
        """Count each (client order id, marked as a possible resend) submitted again."""
        self._db.executemany(
            "UPDATE orders SET times_submitted = times_submitted + 1, "
            "possible_resends = possible_resends + ? WHERE client_order_id = ?",
            [(int(flag), coid) for coid, flag in resubmitted],
        )

    # -- executions ---------------------------------------------------------------------------

    def release_due(self, now: datetime) -> int:
        """Give the next sequence numbers to every planned execution due by ``now``, in one
        transaction (none if nothing is due)."""
        db = self._db
        due_us = to_us(now)
        if not db.execute(
            "SELECT 1 FROM planned_executions WHERE seq IS NULL AND due_us <= ? LIMIT 1",
            (due_us,),
        ).fetchone():
            return 0
        with self.transaction():
            last = db.execute("SELECT coalesce(max(seq), 0) FROM planned_executions").fetchone()
            cursor = db.execute(_RELEASE_DUE, {"last": last[0], "now": due_us})
        return max(cursor.rowcount, 0)

    def executions_after(self, after: int, limit: int) -> list[ReleasedExecution]:
        """Released executions with ``seq > after``, in sequence, at most ``limit``."""
        rows = self._db.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM planned_executions p "
            "JOIN orders o USING (client_order_id) WHERE p.seq > ? ORDER BY p.seq LIMIT ?",
            (after, limit),
        )
        return [_released(row) for row in rows]

    def order_with_executions(
        self, client_order_id: str
    ) -> tuple[StoredOrder, list[ReleasedExecution]] | None:
        """One order and its released executions, in sequence (None if unknown)."""
        row = self._db.execute(
            "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        if row is None:
            return None
        released = self._db.execute(
            f"SELECT {_EXECUTION_COLUMNS} FROM planned_executions p "
            "JOIN orders o USING (client_order_id) "
            "WHERE p.client_order_id = ? AND p.seq IS NOT NULL ORDER BY p.seq",
            (client_order_id,),
        )
        return _order(row), [_released(r) for r in released]

    def next_due(self) -> datetime | None:
        """When the next planned execution falls due (None: nothing planned)."""
        row = self._db.execute(
            "SELECT min(due_us) FROM planned_executions WHERE seq IS NULL"
        ).fetchone()
        return None if row[0] is None else from_us(row[0])

    def fix_reports_after(self, after: int, limit: int) -> list[FixReport]:
        """Released executions of orders taken over FIX with ``seq > after``, in sequence,
        at most ``limit``, each with its order's quantity and fills up to it."""
        rows = self._db.execute(
            f"SELECT {_EXECUTION_COLUMNS}, o.quantity AS order_quantity, "
            "(SELECT group_concat(f.quantity || ' ' || f.price, ',') FROM planned_executions f "
            " WHERE f.client_order_id = p.client_order_id AND f.kind = 'fill' "
            " AND f.seq IS NOT NULL AND f.seq <= p.seq) AS fills "
            "FROM planned_executions p JOIN orders o USING (client_order_id) "
            "WHERE p.seq > ? AND o.channel = 'fix' ORDER BY p.seq LIMIT ?",
            (after, limit),
        )
        reports = []
        for row in rows:
            filled = value = Decimal(0)
            for fill in (row["fills"] or "").split(","):
                if fill:
                    quantity, price = (Decimal(part) for part in fill.split(" "))
                    filled += quantity
                    value += quantity * price
            reports.append(FixReport(_released(row), Decimal(row["order_quantity"]), filled, value))
        return reports

    def fix_reported_seq(self) -> int:
        """The last execution sequence number reported over FIX (0: none yet)."""
        row = self._db.execute("SELECT last_seq FROM fix_reported WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def set_fix_reported_seq(self, seq: int) -> None:
        """Remember that every FIX order's execution up to ``seq`` was reported."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO fix_reported (id, last_seq) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
                (seq,),
            )

    def stats(self) -> dict[str, Any]:
        """Counts of orders, submissions and executions, and the last sequence number."""
        db = self._db
        orders = db.execute(
            "SELECT count(*), coalesce(sum(times_submitted - 1), 0), "
            "coalesce(sum(possible_resends), 0) FROM orders"
        ).fetchone()
        executions = db.execute(
            "SELECT count(*) FILTER (WHERE seq IS NOT NULL AND kind = 'fill'), "
            "count(*) FILTER (WHERE seq IS NOT NULL AND kind = 'reject'), "
            "count(*) FILTER (WHERE seq IS NULL), coalesce(max(seq), 0) "
            "FROM planned_executions"
        ).fetchone()
        by_times = db.execute(
            "SELECT times_submitted, count(*) FROM orders "
            "GROUP BY times_submitted ORDER BY times_submitted"
        )
        return {
            "orders_received": orders[0],
            "duplicate_submissions": orders[1],
            "possible_resends": orders[2],
            "fills": executions[0],
            "rejects": executions[1],
            "pending_executions": executions[2],
            "last_seq": executions[3],
            "orders_by_times_submitted": {str(t): n for t, n in by_times},
        }

    def reset(self) -> None:
        """Forget every order, execution and the custodial book; the sequence starts again
        at 1."""
        with self.transaction():
            for table in (
                "fix_reported",
                "wash_adjustments",
                "open_losses",
                "planned_executions",
                "orders",
                "reliefs",
                "allocations",
                "lots",
                "closes",
                "accounts",
                "book_loads",
            ):
                self._db.execute(f"DELETE FROM {table}")

    # -- the custodial book: loading a book file set ------------------------------------------

    def loaded_book(self) -> BookLoad | None:
        """The book file set loaded into this store (None: none yet)."""
        row = self._db.execute("SELECT * FROM book_loads ORDER BY loaded_at_us LIMIT 1").fetchone()
        if row is None:
            return None
        return BookLoad(
            load_id=row["load_id"],
            folder=row["folder"],
            as_of=date.fromisoformat(row["as_of"]),
            accounts=row["accounts"],
            lots=row["lots"],
            loaded_at=from_us(row["loaded_at_us"]),
        )

    def start_staging(self) -> None:
        """Empty staging tables for a book file set (temporary: this connection's only)."""
        _run_script(self._db, _STAGING)

    def stage(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Stage rows (values in the staging table's column order, after `line`)."""
        if not rows:
            return
        columns = _STAGED[table]
        marks = ", ".join("?" * len(columns))
        self._db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def staged_problems(self, limit: int) -> list[tuple[str, int, str, str]]:
        """What the staged files get wrong across rows and files, as (file, line, column,
        message), at most `limit` of each kind."""
        db = self._db
        _run_script(db, _STAGING_INDEXES)
        problems: list[tuple[str, int, str, str]] = []
        for file, table, key, column in _UNIQUE_KEYS:
            keys = ", ".join(key)
            rows = db.execute(
                f"SELECT line, first FROM (SELECT line, min(line) OVER (PARTITION BY {keys}) "
                f"AS first FROM {table}) WHERE line > first ORDER BY line LIMIT ?",
                (limit,),
            )
            problems += [(file, r[0], column, f"the same {keys} as line {r[1]}") for r in rows]
        for file, column, query, message in _CROSS_CHECKS:
            for row in db.execute(query + " ORDER BY 1 LIMIT ?", (limit,)):
                problems.append((file, row[0], column, message.format(*row[1:])))
        for row in db.execute(_LOTS_DO_NOT_ADD_UP + " LIMIT ?", (limit,)):
            line, account, symbol, quantity, total = row
            problems.append(
                (
                    "positions.csv",
                    line,
                    "quantity",
                    f"quantity is {_from_e8(quantity)} but the lots of {account} {symbol} in "
                    f"lots.csv add up to {_from_e8(total)}",
                )
            )
        return problems

    def apply_staged(self, load_id: str, folder: str, as_of: date, now: datetime) -> BookLoad:
        """Make the staged book the store's (inside the caller's transaction)."""
        db = self._db
        day = as_of.isoformat()
        accounts = db.execute(
            "INSERT INTO accounts (account_id, opening_cash_cents, account_type) "
            "SELECT a.account_id, sum(c.cents), a.account_type FROM stage_accounts a "
            "JOIN stage_cash c USING (account_id) GROUP BY a.account_id"
        ).rowcount
        db.execute("INSERT INTO closes (symbol, price) SELECT symbol, price FROM stage_prices")
        lots = db.execute(
            "INSERT INTO lots (account_id, lot_id, symbol, quantity_e8, basis_e4, acquired_on, "
            "opened_on, fill_id) SELECT account_id, lot_id, symbol, quantity_e8, basis_e4, "
            "acquired_on, ?, NULL FROM stage_lots ORDER BY line",
            (day,),
        ).rowcount
        db.execute(
            "INSERT INTO book_loads (load_id, folder, as_of, accounts, lots, loaded_at_us) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (load_id, folder, day, accounts, lots, to_us(now)),
        )
        return BookLoad(load_id, folder, as_of, accounts, lots, now)

    # -- the custodial book: allocations ------------------------------------------------------

    def allocations_by_fill(self, fill_ids: Sequence[str]) -> dict[str, StoredAllocation]:
        """The allocations already received among these fill ids."""
        if not fill_ids:
            return {}
        rows = self._db.execute(
            "SELECT * FROM allocations WHERE fill_id IN (SELECT value FROM json_each(?))",
            (_json_list(fill_ids),),
        )
        return {row["fill_id"]: _allocation(row) for row in rows}

    def count_allocations_received_again(self, fill_ids: Sequence[str]) -> None:
        """Count each allocation received again (a resend, recognised by its fill id)."""
        self._db.executemany(
            "UPDATE allocations SET times_received = times_received + 1 WHERE fill_id = ?",
            [(f,) for f in fill_ids],
        )

    def known_accounts(self, account_ids: Sequence[str]) -> dict[str, str]:
        """The accounts among these that the book holds, and their type (taxable, ira)."""
        rows = self._db.execute(
            "SELECT account_id, account_type FROM accounts "
            "WHERE account_id IN (SELECT value FROM json_each(?))",
            (_json_list(sorted(set(account_ids))),),
        )
        return {r[0]: r[1] for r in rows}

    def open_losses(self, positions: Sequence[tuple[str, str]], since: date) -> list[OpenLoss]:
        """The loss shares not matched yet of these (account, symbol) positions, sold on or
        after `since`, in matching order (sale date, then booking order)."""
        rows = self._db.execute(
            "WITH w AS (SELECT json_extract(value, '$[0]') AS account_id, "
            "json_extract(value, '$[1]') AS symbol FROM json_each(:positions)) "
            "SELECT o.* FROM w JOIN open_losses o ON o.account_id = w.account_id "
            "AND o.symbol = w.symbol AND o.quantity_e8 > 0 AND o.sold_on >= :since "
            "ORDER BY o.sold_on, o.id",
            {"positions": json.dumps(sorted(set(positions))), "since": since.isoformat()},
        )
        return [
            OpenLoss(
                fill_id=row["fill_id"],
                position=row["position"],
                account_id=row["account_id"],
                symbol=row["symbol"],
                lot_id=row["lot_id"],
                sold_on=date.fromisoformat(row["sold_on"]),
                held_days=row["held_days"],
                quantity=_from_units(row["quantity_e8"], 8),
                loss=_from_units(row["loss_e4"], 4),
            )
            for row in rows
        ]

    def lots_for_booking(
        self, positions: Sequence[tuple[str, str]], lots: Sequence[tuple[str, str]]
    ) -> list[HeldLot]:
        """The lots of these (account, symbol) positions and these (account, lot id) lots,
        with what is left of each now (closed ones too), in opening order."""
        rows = self._db.execute(
            _LOTS_FOR_BOOKING,
            {
                "positions": json.dumps(sorted(set(positions))),
                "lots": json.dumps(sorted(set(lots))),
            },
        )
        return [_held(row, _from_units(row["absorbed_e8"], 8)) for row in rows]

    def last_lot_seq(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM lots").fetchone()[0])

    def insert_bookings(
        self,
        allocations: Sequence[StoredAllocation],
        lots: Sequence[NewLot],
        reliefs: Sequence[Relief],
        now: datetime,
        washes: Sequence[WashAdjustment] = (),
        losses: Sequence[OpenLoss] = (),
    ) -> None:
        """Store received allocations (booked or refused), the lots they opened, the
        reliefs of the lots they sold, the wash-sale adjustments they made and their losses
        not matched yet, new or changed (inside a transaction)."""
        received = to_us(now)
        self._db.executemany(
            "INSERT INTO allocations (fill_id, client_order_id, account_id, symbol, side, "
            "quantity, price, executed_at_us, trade_date, lot_ids, outcome, reason, cash_cents, "
            "received_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    a.fill_id,
                    a.client_order_id,
                    a.account_id,
                    a.symbol,
                    a.side,
                    _text(a.quantity),
                    _text(a.price),
                    to_us(a.executed_at),
                    a.executed_at.astimezone(UTC).date().isoformat(),
                    _json_list(a.lot_ids),
                    a.outcome,
                    a.reason,
                    _to_units(a.cash, 2),
                    received,
                )
                for a in allocations
            ],
        )
        self._db.executemany(
            "INSERT INTO lots (account_id, lot_id, symbol, quantity_e8, basis_e4, acquired_on, "
            "opened_on, fill_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    lot.account_id,
                    lot.lot_id,
                    lot.symbol,
                    _to_units(lot.quantity, 8),
                    _to_units(lot.basis, 4),
                    lot.acquired_on.isoformat(),
                    lot.acquired_on.isoformat(),
                    lot.fill_id,
                )
                for lot in lots
            ],
        )
        self._db.executemany(
            "INSERT INTO reliefs (fill_id, position, account_id, lot_id, quantity_e8, basis_e4, "
            "proceeds_cents, trade_date) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    r.fill_id,
                    r.position,
                    r.account_id,
                    r.lot_id,
                    _to_units(r.quantity, 8),
                    _to_units(r.basis, 4),
                    _to_units(r.proceeds, 2),
                    r.trade_date.isoformat(),
                )
                for r in reliefs
            ],
        )
        self._db.executemany(
            "INSERT INTO wash_adjustments (fill_id, position, account_id, lot_id, quantity_e8, "
            "basis_e4, trade_date) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    w.fill_id,
                    w.position,
                    w.account_id,
                    w.lot_id,
                    _to_units(w.quantity, 8),
                    _to_units(w.basis, 4),
                    w.trade_date.isoformat(),
                )
                for w in washes
            ],
        )
        self._db.executemany(
            "INSERT INTO open_losses (fill_id, position, account_id, symbol, lot_id, sold_on, "
            "held_days, quantity_e8, loss_e4) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (fill_id, position) DO UPDATE SET quantity_e8 = excluded.quantity_e8, "
            "loss_e4 = excluded.loss_e4",
            [
                (
                    o.fill_id,
                    o.position,
                    o.account_id,
                    o.symbol,
                    o.lot_id,
                    o.sold_on.isoformat(),
                    o.held_days,
                    _to_units(o.quantity, 8),
                    _to_units(o.loss, 4),
                )
                for o in losses
            ],
        )

    # -- the custodial book as of a business date (the daily files) --------------------------

    def closes_as_of(self, day: date) -> Iterator[tuple[str, Decimal]]:
        """Each symbol held or traded by `day` and its close: the last booked price on or
        before `day`, else the book's."""
        rows = self._db.execute(_CLOSES_AS_OF, {"day": day.isoformat()})
        for symbol, price in rows:
            yield symbol, Decimal(price)

    def cash_as_of(self, day: date) -> Iterator[tuple[str, Decimal]]:
        """Each account's cash at the close of `day`, by account id."""
        rows = self._db.execute(
            "SELECT a.account_id, a.opening_cash_cents + coalesce(m.cents, 0) FROM accounts a "
            "LEFT JOIN (SELECT account_id, sum(cash_cents) AS cents FROM allocations "
            "WHERE outcome = 'booked' AND trade_date <= :day GROUP BY account_id) m "
            "USING (account_id) ORDER BY a.account_id",
            {"day": day.isoformat()},
        )
        for account, cents in rows:
            yield account, _from_units(cents, 2)

    def lots_as_of(self, day: date) -> Iterator[HeldLot]:
        """Every lot open at the close of `day` with what was left of it, by account,
        symbol and opening order."""
        rows = self._db.execute(_LOTS_AS_OF, {"day": day.isoformat()})
        for row in rows:
            yield _held(row)

    def transactions_on(self, day: date) -> Iterator[BookedTransaction]:
        """The allocations booked with trade date `day`, a row per lot each opened or
        relieved, in execution order."""
        rows = self._db.execute(
            "SELECT a.fill_id, a.client_order_id, a.account_id, a.symbol, a.side, a.quantity, "
            "a.price, a.cash_cents, r.lot_id AS relieved_lot, r.quantity_e8, r.proceeds_cents "
            "FROM allocations a LEFT JOIN reliefs r USING (fill_id) "
            "WHERE a.outcome = 'booked' AND a.trade_date = ? "
            "ORDER BY a.executed_at_us, a.fill_id, r.position",
            (day.isoformat(),),
        )
        for row in rows:
            sell = row["relieved_lot"] is not None
            yield BookedTransaction(
                fill_id=row["fill_id"],
                client_order_id=row["client_order_id"],
                account_id=row["account_id"],
                symbol=row["symbol"],
                side=row["side"],
                quantity=_from_units(row["quantity_e8"], 8) if sell else Decimal(row["quantity"]),
                price=Decimal(row["price"]),
                amount=_from_units(row["proceeds_cents"] if sell else -row["cash_cents"], 2),
                relieved_lot=row["relieved_lot"],
            )

    def custody_stats(self) -> dict[str, Any]:
        """Counts of the custodial book: accounts, lots open, allocations by outcome."""
        db = self._db
        allocations = db.execute(
            "SELECT count(*) FILTER (WHERE outcome = 'booked'), "
            "count(*) FILTER (WHERE outcome = 'refused'), "
            "coalesce(sum(times_received - 1), 0) FROM allocations"
        ).fetchone()
        return {
            "accounts": db.execute("SELECT count(*) FROM accounts").fetchone()[0],
            "allocations_booked": allocations[0],
            "allocations_refused": allocations[1],
            "allocations_received_again": allocations[2],
        }


@dataclass(frozen=True)
class BookLoad:
    """The book file set a store was seeded with."""

    load_id: str
    folder: str
    as_of: date
    accounts: int
    lots: int
    loaded_at: datetime


@dataclass(frozen=True)
class HeldLot:
    """A lot and what is left of it (quantity and basis)."""

    seq: int
    account_id: str
    lot_id: str
    symbol: str
    acquired_on: date
    quantity: Decimal
    basis: Decimal
    absorbed: Decimal = Decimal(0)  # shares that absorbed a wash-sale loss (replacements)


@dataclass(frozen=True)
class StoredAllocation:
    """An allocation as received, with what became of it (booked or refused, and why)."""

    fill_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    executed_at: datetime
    lot_ids: tuple[str, ...]
    outcome: str
    reason: str | None
    cash: Decimal  # moved: negative for a buy


@dataclass(frozen=True)
class NewLot:
    """A lot a buy opens."""

    account_id: str
    lot_id: str
    symbol: str
    quantity: Decimal
    basis: Decimal
    acquired_on: date
    fill_id: str


@dataclass(frozen=True)
class Relief:
    """Shares a sell took from one lot, their basis and their part of the proceeds."""

    fill_id: str
    position: int
    account_id: str
    lot_id: str
    quantity: Decimal
    basis: Decimal
    proceeds: Decimal
    trade_date: date


@dataclass(frozen=True)
class WashAdjustment:
    """A disallowed loss added to the basis of the replacement lot whose shares absorbed it."""

    fill_id: str
    position: int
    account_id: str
    lot_id: str
    quantity: Decimal
    basis: Decimal
    trade_date: date


@dataclass
class OpenLoss:
    """Loss shares of one relief not matched to a replacement yet (what is left of them)."""

    fill_id: str
    position: int
    account_id: str
    symbol: str
    lot_id: str
    sold_on: date
    held_days: int
    quantity: Decimal
    loss: Decimal


@dataclass(frozen=True)
class BookedTransaction:
    """One row of a day's transactions: a buy, or one lot a sell relieved."""

    fill_id: str
    client_order_id: str
    account_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    amount: Decimal  # cash moved, not negative (its direction is the side's)
    relieved_lot: str | None


_STAGED: dict[str, tuple[str, ...]] = {
    "stage_accounts": ("line", "account_id", "account_type"),
    "stage_cash": ("line", "account_id", "sleeve_id", "cents"),
    "stage_prices": ("line", "symbol", "price"),
    "stage_positions": ("line", "account_id", "symbol", "quantity_e8"),
    "stage_lots": (
        "line",
        "account_id",
        "symbol",
        "lot_id",
        "quantity_e8",
        "basis_e4",
        "acquired_on",
    ),
}
_STAGING = "".join(
    f"DROP TABLE IF EXISTS temp.{table}; CREATE TEMP TABLE {table} ({', '.join(columns)});"
    for table, columns in _STAGED.items()
)
_STAGING_INDEXES = """
CREATE INDEX temp.stage_accounts_id ON stage_accounts (account_id);
CREATE INDEX temp.stage_cash_account ON stage_cash (account_id);
CREATE INDEX temp.stage_prices_symbol ON stage_prices (symbol);
CREATE INDEX temp.stage_positions_key ON stage_positions (account_id, symbol);
CREATE INDEX temp.stage_lots_position ON stage_lots (account_id, symbol);
CREATE INDEX temp.stage_lots_key ON stage_lots (account_id, lot_id)
"""
# (file, staging table, the columns no two rows may share, the column a repeat is named at)
_UNIQUE_KEYS = (
    ("accounts.csv", "stage_accounts", ("account_id",), "account_id"),
    ("cash.csv", "stage_cash", ("account_id", "sleeve_id"), "account_id"),
    ("prices.csv", "stage_prices", ("symbol",), "symbol"),
    ("positions.csv", "stage_positions", ("account_id", "symbol"), "symbol"),
    ("lots.csv", "stage_lots", ("account_id", "lot_id"), "lot_id"),
)
# (file, column, query giving (line, values of the message...), message)
_CROSS_CHECKS = (
    (
        "accounts.csv",
        "account_id",
        "SELECT a.line, a.account_id FROM stage_accounts a WHERE NOT EXISTS "
        "(SELECT 1 FROM stage_cash c WHERE c.account_id = a.account_id)",
        "{} has no row in cash.csv (every account has one)",
    ),
    (
        "cash.csv",
        "account_id",
        "SELECT c.line, c.account_id FROM stage_cash c WHERE NOT EXISTS "
        "(SELECT 1 FROM stage_accounts a WHERE a.account_id = c.account_id)",
        "{} is not an account of accounts.csv",
    ),
    (
        "positions.csv",
        "account_id",
        "SELECT p.line, p.account_id FROM stage_positions p WHERE NOT EXISTS "
        "(SELECT 1 FROM stage_accounts a WHERE a.account_id = p.account_id)",
        "{} is not an account of accounts.csv",
    ),
    (
        "positions.csv",
        "symbol",
        "SELECT p.line, p.symbol FROM stage_positions p WHERE NOT EXISTS "
        "(SELECT 1 FROM stage_prices s WHERE s.symbol = p.symbol)",
        "{} has no price in prices.csv",
    ),
    (
        "lots.csv",
        "symbol",
        "SELECT l.line, l.account_id, l.symbol FROM stage_lots l WHERE NOT EXISTS "
        "(SELECT 1 FROM stage_positions p WHERE p.account_id = l.account_id "
        "AND p.symbol = l.symbol)",
        "{} holds no {} in positions.csv",
    ),
)
_LOTS_DO_NOT_ADD_UP = """
SELECT p.line, p.account_id, p.symbol, p.quantity_e8, coalesce(s.quantity_e8, 0)
FROM stage_positions p
LEFT JOIN (SELECT account_id, symbol, sum(quantity_e8) AS quantity_e8 FROM stage_lots
           GROUP BY account_id, symbol) s USING (account_id, symbol)
WHERE coalesce(s.quantity_e8, 0) != p.quantity_e8
ORDER BY p.line
"""
_CLOSES_AS_OF = """
WITH traded AS (
    SELECT symbol, price, row_number() OVER (
        PARTITION BY symbol ORDER BY executed_at_us DESC, fill_id DESC) AS n
    FROM allocations WHERE outcome = 'booked' AND trade_date <= :day
)
SELECT c.symbol, coalesce(t.price, c.price) FROM closes c
LEFT JOIN traded t ON t.symbol = c.symbol AND t.n = 1
UNION ALL
SELECT symbol, price FROM traded t
WHERE n = 1 AND NOT EXISTS (SELECT 1 FROM closes c WHERE c.symbol = t.symbol)
ORDER BY 1
"""
_LOTS_FOR_BOOKING = """
WITH positions AS (
    SELECT json_extract(value, '$[0]') AS account_id, json_extract(value, '$[1]') AS symbol
    FROM json_each(:positions)
), named AS (
    SELECT json_extract(value, '$[0]') AS account_id, json_extract(value, '$[1]') AS lot_id
    FROM json_each(:lots)
), picked AS (
    SELECT l.* FROM positions w JOIN lots l
        ON l.account_id = w.account_id AND l.symbol = w.symbol
    UNION
    SELECT l.* FROM named w JOIN lots l ON l.account_id = w.account_id AND l.lot_id = w.lot_id
)
SELECT p.seq, p.account_id, p.lot_id, p.symbol, p.acquired_on,
       p.quantity_e8 - coalesce(r.quantity_e8, 0) AS quantity_e8,
       p.basis_e4 + coalesce(w.basis_e4, 0) - coalesce(r.basis_e4, 0) AS basis_e4,
       coalesce(w.quantity_e8, 0) AS absorbed_e8
FROM picked p
LEFT JOIN (SELECT r.account_id, r.lot_id, sum(r.quantity_e8) AS quantity_e8,
                  sum(r.basis_e4) AS basis_e4
           FROM picked q JOIN reliefs r ON r.account_id = q.account_id AND r.lot_id = q.lot_id
           GROUP BY r.account_id, r.lot_id) r
    ON r.account_id = p.account_id AND r.lot_id = p.lot_id
LEFT JOIN (SELECT w.account_id, w.lot_id, sum(w.quantity_e8) AS quantity_e8,
                  sum(w.basis_e4) AS basis_e4
           FROM picked q JOIN wash_adjustments w
             ON w.account_id = q.account_id AND w.lot_id = q.lot_id
           GROUP BY w.account_id, w.lot_id) w
    ON w.account_id = p.account_id AND w.lot_id = p.lot_id
ORDER BY p.seq
"""
_LOTS_AS_OF = """
SELECT l.seq, l.account_id, l.lot_id, l.symbol, l.acquired_on,
       l.quantity_e8 - coalesce(r.quantity_e8, 0) AS quantity_e8,
       l.basis_e4 + coalesce(w.basis_e4, 0) - coalesce(r.basis_e4, 0) AS basis_e4
FROM lots l
LEFT JOIN (SELECT account_id, lot_id, sum(quantity_e8) AS quantity_e8,
                  sum(basis_e4) AS basis_e4
           FROM reliefs WHERE trade_date <= :day GROUP BY account_id, lot_id) r
    USING (account_id, lot_id)
LEFT JOIN (SELECT account_id, lot_id, sum(basis_e4) AS basis_e4
           FROM wash_adjustments WHERE trade_date <= :day GROUP BY account_id, lot_id) w
    USING (account_id, lot_id)
WHERE l.opened_on <= :day AND l.quantity_e8 - coalesce(r.quantity_e8, 0) > 0
ORDER BY l.account_id, l.symbol, l.seq
"""


def _to_units(value: Decimal, places: int) -> int:
    """An exact decimal as an integer of 10^-places (ValueError if it has more places)."""
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more than {places} decimal places")
    return int(scaled)


def _from_units(units: int, places: int) -> Decimal:
    return Decimal(units).scaleb(-places)


def _from_e8(units: int) -> str:
    return format(_from_units(units, 8).normalize(), "f")


def _held(row: sqlite3.Row, absorbed: Decimal = Decimal(0)) -> HeldLot:
    return HeldLot(
        seq=row["seq"],
        account_id=row["account_id"],
        lot_id=row["lot_id"],
        symbol=row["symbol"],
        acquired_on=date.fromisoformat(row["acquired_on"]),
        quantity=_from_units(row["quantity_e8"], 8),
        basis=_from_units(row["basis_e4"], 4),
        absorbed=absorbed,
    )


def _allocation(row: sqlite3.Row) -> StoredAllocation:
    return StoredAllocation(
        fill_id=row["fill_id"],
        client_order_id=row["client_order_id"],
        account_id=row["account_id"],
        symbol=row["symbol"],
        side=row["side"],
        quantity=Decimal(row["quantity"]),
        price=Decimal(row["price"]),
        executed_at=from_us(row["executed_at_us"]),
        lot_ids=tuple(json.loads(row["lot_ids"])),
        outcome=row["outcome"],
        reason=row["reason"],
        cash=_from_units(row["cash_cents"], 2),
    )


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL statements inside the caller's transaction (executescript
    would commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _json_list(values: Sequence[str] | tuple[str, ...]) -> str:
    return json.dumps(list(values))


def _text(value: Decimal) -> str:
    return format(value, "f")


def _order(row: sqlite3.Row) -> StoredOrder:
    return StoredOrder(
        client_order_id=row["client_order_id"],
        account_id=row["account_id"],
        symbol=row["symbol"],
        side=row["side"],
        quantity=Decimal(row["quantity"]),
        reference_price=Decimal(row["reference_price"]),
        received_at=from_us(row["received_at_us"]),
        times_submitted=row["times_submitted"],
        possible_resends=row["possible_resends"],
        channel=row["channel"],
    )


def _released(row: sqlite3.Row) -> ReleasedExecution:
    return ReleasedExecution(
        seq=row["seq"],
        client_order_id=row["client_order_id"],
        piece=row["piece"],
        kind=row["kind"],
        quantity=Decimal(row["quantity"]),
        price=None if row["price"] is None else Decimal(row["price"]),
        reason=row["reason"],
        executed_at=from_us(row["due_us"]),
        account_id=row["account_id"],
        symbol=row["symbol"],
        side=row["side"],
        cancel_id=row["cancel_id"],
    )
