"""valuations, tallies and chunked runs

Each account's valuation and the engine's latest drift verdict are stored
(`account_valuations`, replacing `account_drift`); runs learn their kind, trigger and
totals from their chunks (`run_chunks`); trades carry their run and fill counts; the counts a
summary or a run's progress shows are kept in `book_tallies` and `run_tallies` by
statement-level triggers (transition tables: one tally update per statement, whatever its
row count). Existing rows are backfilled.

Revision ID: fba27cd91b78
Revises: 17ab64954906
Create Date: 2026-12-06 04:54:11.769113
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "fba27cd91b78"
down_revision: str | None = "17ab64954906"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTS = (
    "accounts_measured",
    "accounts_out_of_tolerance",
    "proposals",
    "proposals_approved",
    "trades",
    "trades_proposed",
    "trades_approved",
    "trades_partially_filled",
    "trades_filled",
    "trades_rejected",
    "trades_declined",
    "taxed_trades",
    "fills",
    "fills_reflected",
)
# A backend writes its own slot, so concurrent transactions rarely wait on one another.
SLOT = "(pg_backend_pid() % 16)::smallint"


@dataclass(frozen=True)
class Tally:
    """What one row of `table` adds to the tallies (a removed row subtracts it)."""

    table: str
    run_column: str | None  # the row's run, for run_tallies
    book: bool  # whether book_tallies counts it
    adds: dict[str, str]  # tally column -> expression over the row
    latest: dict[str, str] = field(default_factory=dict)  # tally column -> max over new rows


TALLIES = (
    Tally(
        "account_valuations",
        None,
        True,
        {
            "accounts": "(status IS NOT NULL)::int",
            "accounts_measured": "(status IS NOT NULL AND measured_at IS NOT NULL)::int",
            "accounts_out_of_tolerance": "(status IS NOT NULL AND out_of_tolerance)::int",
            "market_value": "COALESCE(market_value, 0)",
        },
    ),
    Tally(
        "run_drift",
        "run_id",
        False,
        {"accounts_measured": "1", "accounts_out_of_tolerance": "out_of_tolerance::int"},
    ),
    Tally(
        "proposals",
        "run_id",
        True,
        {"proposals": "1", "proposals_approved": "(approved_at IS NOT NULL)::int"},
    ),
    Tally(
        "trades",
        "run_id",
        True,
        {
            "trades": "1",
            **{
                f"trades_{s}": f"(status = '{s}')::int"
                for s in ("proposed", "approved", "partially_filled", "filled", "rejected",
                          "declined")
            },
            "taxed_trades": "(estimated_tax IS NOT NULL AND status <> 'declined')::int",
            "estimated_tax": "CASE WHEN status <> 'declined' THEN COALESCE(estimated_tax, 0)"
            " ELSE 0 END",
            "fills": "fills",
            "fills_reflected": "fills_reflected",
        },
        {"last_reconciled_at": "reconciled_at"},
    ),
)  # fmt: skip


def _upsert(target: str, keys: list[str], key_exprs: list[str], tally: Tally) -> str:
    """INSERT ... SELECT the summed deltas into `target`, adding to what is there."""
    columns = [*tally.adds, *tally.latest]
    sums = [f"SUM({c})" for c in tally.adds] + [f"MAX({c})" for c in tally.latest]
    updates = [f"{c} = {target}.{c} + EXCLUDED.{c}" for c in tally.adds] + [
        f"{c} = GREATEST({target}.{c}, EXCLUDED.{c})" for c in tally.latest
    ]
    grouped = [e for e in key_exprs if e != SLOT]
    group = "HAVING COUNT(*) > 0"
    if grouped:
        group = f"WHERE {grouped[0]} IS NOT NULL GROUP BY {grouped[0]} ORDER BY {grouped[0]}"
    return (
        f"INSERT INTO {target} ({', '.join(keys + columns)})"
        f" SELECT {', '.join(key_exprs + sums)} FROM deltas {group}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}"
    )


def _statement(tally: Tally, changed: str) -> str:
    deltas = [f"sign * ({e}) AS {c}" for c, e in tally.adds.items()] + [
        f"CASE WHEN sign = 1 THEN {e} END AS {c}" for c, e in tally.latest.items()
    ]
    if tally.run_column:
        deltas.insert(0, f"{tally.run_column} AS run_id")
    ctes = [f"changed AS ({changed})", f"deltas AS (SELECT {', '.join(deltas)} FROM changed)"]
    writes = []
    if tally.run_column:
        writes.append(_upsert("run_tallies", ["run_id", "slot"], ["run_id", SLOT], tally))
    if tally.book:
        writes.append(_upsert("book_tallies", ["slot"], [SLOT], tally))
    *first, last = writes
    ctes += [f"w{i} AS ({w})" for i, w in enumerate(first)]
    return f"WITH {', '.join(ctes)} {last};"


def _function(tally: Tally) -> str:
    new = "SELECT *, 1 AS sign FROM new_rows"
    old = "SELECT *, -1 AS sign FROM old_rows"
    return f"""
        CREATE FUNCTION tally_{tally.table}() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $fn$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {_statement(tally, new)}
            ELSIF TG_OP = 'UPDATE' THEN
                {_statement(tally, f"{new} UNION ALL {old}")}
            ELSE
                {_statement(tally, old)}
            END IF;
            RETURN NULL;
        END
        $fn$
    """


def _triggers(table: str) -> list[str]:
    run = f"FOR EACH STATEMENT EXECUTE FUNCTION tally_{table}()"
    return [
        f"CREATE TRIGGER {table}_tally_insert AFTER INSERT ON {table}"
        f" REFERENCING NEW TABLE AS new_rows {run}",
        f"CREATE TRIGGER {table}_tally_update AFTER UPDATE ON {table}"
        f" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows {run}",
        f"CREATE TRIGGER {table}_tally_delete AFTER DELETE ON {table}"
        f" REFERENCING OLD TABLE AS old_rows {run}",
    ]


def _tally_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    money = sa.Numeric(precision=24, scale=6)
    return [
        *[sa.Column(c, sa.BigInteger(), server_default=sa.text("0"), nullable=False)
          for c in COUNTS],
        sa.Column("estimated_tax", money, server_default=sa.text("0"), nullable=False),
        sa.Column("last_reconciled_at", sa.DateTime(timezone=True), nullable=True),
    ]  # fmt: skip


def _zero(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Integer(), server_default=sa.text("0"), nullable=False)


_BACKFILL = [
    # valuations: every account known from account-changed or holdings, valued, with its
    # latest verdict
    """INSERT INTO account_valuations (account_id, name, model_id, status, updated_at)
       SELECT account_id, name, model_id, status, now() FROM accounts""",
    """INSERT INTO account_valuations (account_id, updated_at)
       SELECT account_id, now() FROM holdings ON CONFLICT (account_id) DO NOTHING""",
    """INSERT INTO account_valuations (account_id, drift_run_id, max_abs_drift, tolerance,
                                       out_of_tolerance, measured_at, updated_at)
       SELECT account_id, run_id, max_abs_drift, tolerance, out_of_tolerance, measured_at,
              now()
         FROM account_drift
       ON CONFLICT (account_id) DO UPDATE
          SET drift_run_id = EXCLUDED.drift_run_id, max_abs_drift = EXCLUDED.max_abs_drift,
              tolerance = EXCLUDED.tolerance, out_of_tolerance = EXCLUDED.out_of_tolerance,
              measured_at = EXCLUDED.measured_at""",
    """UPDATE account_valuations v
          SET cash = n.cash, holdings_as_of = n.as_of, securities_value = n.value,
              market_value = n.cash + n.value, positions = n.positions,
              unpriced_positions = n.unpriced
         FROM (SELECT h.account_id, h.cash, h.as_of,
                      COALESCE(SUM(p.quantity * s.price), 0) AS value,
                      COUNT(p.symbol) AS positions,
                      COUNT(p.symbol) FILTER (WHERE s.symbol IS NULL) AS unpriced
                 FROM holdings h
                 LEFT JOIN positions p ON p.account_id = h.account_id AND p.quantity <> 0
                 LEFT JOIN securities s ON s.symbol = p.symbol
                GROUP BY h.account_id, h.cash, h.as_of) n
        WHERE v.account_id = n.account_id""",
    # trades: their run and fill counts
    """UPDATE trades t
          SET run_id = f.run_id, fills = f.fills, fills_reflected = f.reflected,
              reconciled_at = f.reconciled_at
         FROM (SELECT tt.trade_id, p.run_id, COUNT(fi.fill_id) AS fills,
                      COUNT(rf.fill_id) AS reflected, MAX(rf.reconciled_at) AS reconciled_at
                 FROM trades tt JOIN proposals p ON p.proposal_id = tt.proposal_id
                 LEFT JOIN fills fi ON fi.trade_id = tt.trade_id
                 LEFT JOIN reconciled_fills rf ON rf.fill_id = fi.fill_id
                GROUP BY tt.trade_id, p.run_id) f
        WHERE t.trade_id = f.trade_id""",
    # runs from before chunks: no chunk to wait for
    "UPDATE runs SET chunks = 0",
]


def _backfill_tallies() -> list[str]:
    """The tallies of the rows already stored, in slot 0."""
    statements = []
    for tally in TALLIES:
        for target, keyed in (("run_tallies", tally.run_column), ("book_tallies", None)):
            if target == "book_tallies" and not tally.book:
                continue
            if target == "run_tallies" and not keyed:
                continue
            adds = {c: f"COALESCE(SUM({e}), 0)" for c, e in tally.adds.items()}
            adds |= {c: f"MAX({e})" for c, e in tally.latest.items()}
            keys = ["run_id", "slot"] if keyed else ["slot"]
            key_exprs = [f"{keyed}", "0"] if keyed else ["0"]
            where_group = f"WHERE {keyed} IS NOT NULL GROUP BY {keyed}" if keyed else ""
            updates = [f"{c} = {target}.{c} + EXCLUDED.{c}" for c in tally.adds] + [
                f"{c} = GREATEST({target}.{c}, EXCLUDED.{c})" for c in tally.latest
            ]
            statements.append(
                f"INSERT INTO {target} ({', '.join(keys + list(adds))})"
                f" SELECT {', '.join(key_exprs + list(adds.values()))}"
                f" FROM {tally.table} {where_group}"
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(updates)}"
            )
    return statements


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    weight = sa.Numeric(precision=14, scale=10)
    money = sa.Numeric(precision=24, scale=6)
    op.create_table(
        "account_valuations",
        sa.Column("account_id", text(length=64), nullable=False),
        sa.Column("name", text(), nullable=True),
        sa.Column("model_id", text(length=64), nullable=True),
        sa.Column("status", text(length=16), nullable=True),
        sa.Column("holdings_as_of", sa.Date(), nullable=True),
        sa.Column("cash", money, nullable=True),
        sa.Column("securities_value", money, nullable=True),
        sa.Column("market_value", money, nullable=True),
        _zero("positions"),
        _zero("unpriced_positions"),
        sa.Column("drift_run_id", sa.Uuid(), nullable=True),
        sa.Column("max_abs_drift", weight, nullable=True),
        sa.Column("tolerance", weight, nullable=True),
        sa.Column("out_of_tolerance", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )  # fmt: skip
    for name, column in (
        ("cash", "cash"),
        ("drift", "max_abs_drift"),
        ("market_value", "market_value"),
        ("model", "model_id"),
        ("name", "name"),
        ("status", "status"),
    ):
        op.create_index(
            f"ix_account_valuations_{name}", "account_valuations", [column, "account_id"]
        )
    op.create_table(
        "book_tallies",
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("accounts", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        *_tally_columns(),
        sa.Column("market_value", money, server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
    )
    op.create_table(
        "run_tallies",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        *_tally_columns(),
        sa.PrimaryKeyConstraint("run_id", "slot"),
    )
    op.create_table(
        "run_chunks",
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("status", text(length=16), nullable=False),
        *[sa.Column(c, sa.Integer(), nullable=False)
          for c in ("accounts", "accounts_evaluated", "accounts_out_of_tolerance",
                    "accounts_skipped", "proposals", "trades")],
        sa.Column("error", text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "chunk"),
    )  # fmt: skip
    op.create_index("ix_account_sleeves_model", "account_sleeves", ["model_id"])
    op.create_index("ix_positions_symbol", "positions", ["symbol"])
    op.drop_index("ix_proposals_run", table_name="proposals")
    op.create_index("ix_proposals_run", "proposals", ["run_id", "account_id"])
    op.create_index("ix_run_drift_by_drift", "run_drift", ["run_id", "max_abs_drift", "account_id"])
    op.add_column("runs", sa.Column("kind", text(length=16), nullable=True))
    op.add_column("runs", sa.Column("trigger", text(length=32), nullable=True))
    op.add_column("runs", sa.Column("chunks", sa.Integer(), nullable=True))
    for name in (
        "chunks_completed",
        "chunks_failed",
        "accounts",
        "accounts_evaluated",
        "accounts_skipped",
        "expected_proposals",
        "expected_trades",
    ):
        op.add_column("runs", _zero(name))  # fmt: skip
    op.create_index("ix_runs_first_event", "runs", ["first_event_at"])
    op.add_column("trades", sa.Column("run_id", sa.Uuid(), nullable=True))
    op.add_column("trades", _zero("fills"))
    op.add_column("trades", _zero("fills_reflected"))
    op.add_column("trades", sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_trades_run", "trades", ["run_id", "account_id"])

    for statement in [*_BACKFILL, *_backfill_tallies()]:
        op.execute(statement)
    op.drop_table("account_drift")
    for tally in TALLIES:
        op.execute(_function(tally))
        for trigger in _triggers(tally.table):
            op.execute(trigger)


def downgrade() -> None:
    for tally in TALLIES:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {tally.table}_tally_{event} ON {tally.table}")
        op.execute(f"DROP FUNCTION tally_{tally.table}()")
    op.create_table(
        "account_drift",
        sa.Column("account_id", sa.VARCHAR(length=64), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("model_id", sa.VARCHAR(length=64), nullable=False),
        sa.Column("model_version", sa.INTEGER(), nullable=False),
        sa.Column("total_value", sa.NUMERIC(precision=24, scale=6), nullable=False),
        sa.Column("max_abs_drift", sa.NUMERIC(precision=14, scale=10), nullable=False),
        sa.Column("tolerance", sa.NUMERIC(precision=14, scale=10), nullable=False),
        sa.Column("out_of_tolerance", sa.BOOLEAN(), nullable=False),
        sa.Column("measured_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="account_drift_pkey"),
    )
    op.execute(
        """INSERT INTO account_drift
           SELECT v.account_id, v.drift_run_id, r.model_id, r.model_version, d.total_value,
                  v.max_abs_drift, v.tolerance, v.out_of_tolerance, v.measured_at
             FROM account_valuations v
             JOIN run_drift d ON d.run_id = v.drift_run_id AND d.account_id = v.account_id
             JOIN runs r ON r.run_id = d.run_id"""
    )
    op.drop_index("ix_trades_run", table_name="trades")
    for name in ("reconciled_at", "fills_reflected", "fills", "run_id"):
        op.drop_column("trades", name)
    op.drop_index("ix_runs_first_event", table_name="runs")
    for name in (
        "expected_trades",
        "expected_proposals",
        "accounts_skipped",
        "accounts_evaluated",
        "accounts",
        "chunks_failed",
        "chunks_completed",
        "chunks",
        "trigger",
        "kind",
    ):
        op.drop_column("runs", name)  # fmt: skip
    op.drop_index("ix_run_drift_by_drift", table_name="run_drift")
    op.drop_index("ix_proposals_run", table_name="proposals")
    op.create_index("ix_proposals_run", "proposals", ["run_id"])
    op.drop_index("ix_positions_symbol", table_name="positions")
    op.drop_index("ix_account_sleeves_model", table_name="account_sleeves")
    op.drop_table("run_chunks")
    op.drop_table("run_tallies")
    op.drop_table("book_tallies")
    op.drop_table("account_valuations")
