"""The FIX session's own durable memory, in SQLite beside the engine's message store.

- `executions`: every fill and reject the counterparty reported, once per ExecID, numbered
  in order of arrival (`seq`). The execution poller reads it like the HTTP custodian's
  GET /executions feed, so the service applies FIX executions with the same code.
  A report is written (and committed) while the engine's callback runs, before the engine
  counts its sequence number as received: a crash in between makes the counterparty resend
  it (PossDupFlag=Y), and the ExecID makes the second copy a no-op.
- `orders`: the terms of every NewOrderSingle sent, so an OrderStatusRequest (which FIX 4.4
  makes name the symbol and side) can be asked for a client order id alone.

Used from the engine's thread and the event loop alike: one connection behind a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from custodian_gateway.fix_messages import Execution, OrderTerms

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL UNIQUE,
    client_order_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    symbol TEXT,
    side TEXT,
    account_id TEXT,
    quantity TEXT,
    price TEXT,
    reason TEXT,
    executed_at TEXT,
    poss_dup INTEGER NOT NULL,
    msg_seq_num INTEGER NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    quantity TEXT NOT NULL,
    reference_price TEXT NOT NULL,
    times_sent INTEGER NOT NULL,
    possible_resends INTEGER NOT NULL,
    last_sent_at TEXT NOT NULL
);
"""


class FixJournal:
    """Executions received and orders sent over one FIX session (thread-safe)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def record_sent(self, orders: list[OrderTerms], resends: set[str]) -> None:
        """Remember the terms of orders about to be sent (one transaction)."""
        now = datetime.now(UTC).isoformat()
        rows = [
            (
                o.client_order_id,
                o.account_id,
                o.symbol,
                o.side,
                o.quantity,
                o.reference_price,
                int(o.client_order_id in resends),
                now,
            )
            for o in orders
        ]
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT (client_order_id) DO UPDATE SET "
                "times_sent = times_sent + 1, "
                "possible_resends = possible_resends + excluded.possible_resends, "
                "last_sent_at = excluded.last_sent_at",
                rows,
            )

    def sent_order(self, client_order_id: str) -> OrderTerms | None:
        """The terms an order was sent with, or None if this session never sent it."""
        with self._lock:
            row = self._db.execute(
                "SELECT client_order_id, account_id, symbol, side, quantity, reference_price "
                "FROM orders WHERE client_order_id = ?",
                (client_order_id,),
            ).fetchone()
        return None if row is None else OrderTerms(*row)

    def times_sent(self, client_order_id: str) -> tuple[int, int]:
        """How often an order was sent, and how many of those were marked PossResend."""
        with self._lock:
            row = self._db.execute(
                "SELECT times_sent, possible_resends FROM orders WHERE client_order_id = ?",
                (client_order_id,),
            ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    def record_execution(self, execution: Execution) -> bool:
        """Store a reported execution unless its ExecID is known; True if it was new."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO executions (execution_id, client_order_id, kind, symbol, side, "
                "account_id, quantity, price, reason, executed_at, poss_dup, msg_seq_num, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (execution_id) DO NOTHING",
                (
                    execution.execution_id,
                    execution.client_order_id,
                    execution.kind,
                    execution.symbol,
                    execution.side,
                    execution.account_id,
                    execution.quantity,
                    execution.price,
                    execution.reason,
                    execution.executed_at,
                    int(execution.poss_dup),
                    execution.msg_seq_num,
                    datetime.now(UTC).isoformat(),
                ),
            )
            return cursor.rowcount == 1

    def executions_after(self, after: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` executions with `seq` above `after`, in order."""
        with self._lock:
            cursor = self._db.execute(
                "SELECT seq, execution_id, client_order_id, kind, symbol, side, account_id, "
                "quantity, price, reason, executed_at, poss_dup, msg_seq_num "
                "FROM executions WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            row["poss_dup"] = bool(row["poss_dup"])
            for empty in [k for k, v in row.items() if v is None]:
                del row[empty]
        return rows

    def last_seq(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT coalesce(max(seq), 0) FROM executions").fetchone()
        return int(row[0])
