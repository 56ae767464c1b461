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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
SCHEMA_VERSION = 1

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
    possible_resends INTEGER NOT NULL DEFAULT 0
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
    UNIQUE (client_order_id, piece)
);
CREATE INDEX IF NOT EXISTS planned_not_released
    ON planned_executions (due_us, id) WHERE seq IS NULL;
"""

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
    o.account_id, o.symbol, o.side
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
            "reference_price, received_at_us, times_submitted, possible_resends) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                )
                for o in orders
            ],
        )
        self._db.executemany(
            "INSERT INTO planned_executions (client_order_id, piece, due_us, kind, quantity, "
            "price, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    p.client_order_id,
                    p.piece,
                    to_us(p.due),
                    p.kind,
                    _text(p.quantity),
                    None if p.price is None else _text(p.price),
                    p.reason,
                )
                for p in planned
            ],
        )

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
        """Forget every order and execution; the sequence starts again at 1."""
        with self.transaction():
            self._db.execute("DELETE FROM planned_executions")
            self._db.execute("DELETE FROM orders")


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated DDL statements inside the caller's transaction (executescript
    would commit it first)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _json_list(values: Sequence[str]) -> str:
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
    )
