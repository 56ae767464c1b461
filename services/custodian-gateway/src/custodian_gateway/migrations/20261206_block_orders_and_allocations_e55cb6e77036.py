"""block orders and allocations

Orders become block orders (one custodian order for many approved trades) and each approved
trade becomes an allocation of its block. Orders already stored (one per trade) become blocks
of one allocation, under the account they were sent with, so a resend keeps the same terms.
An order partially filled at upgrade time had its fills published one execution at a time;
sharing them again when it completes would count them twice, so the upgrade refuses to run
until such orders are done.

Revision ID: e55cb6e77036
Revises: f13394d71647
Create Date: 2026-12-06 04:49:11.497918
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e55cb6e77036"
down_revision: str | None = "f13394d71647"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    open_partial = bind.execute(
        sa.text("SELECT count(*) FROM orders WHERE status = 'partially_filled'")
    ).scalar_one()
    if open_partial:
        raise RuntimeError(
            f"{open_partial} orders are partially filled: their fills were published one "
            "execution at a time, so they must be filled or rejected before the upgrade to "
            "block orders (run the previous version until GET /orders?status=partially_filled "
            "is empty)"
        )
    op.create_table(
        "allocations",
        sa.Column("trade_id", sa.Uuid(), nullable=False),
        sa.Column("proposal_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("custodian", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("symbol", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("side", sqlmodel.sql.sqltypes.AutoString(length=4), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("reference_price", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("lot_ids", sa.ARRAY(sa.String()), server_default="{}", nullable=False),
        sa.Column("sleeve_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("client_order_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("filled_quantity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("average_price", sa.Numeric(precision=24, scale=8), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("traceparent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("tracestate", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("trade_id"),
    )
    op.create_index(op.f("ix_allocations_account_id"), "allocations", ["account_id"], unique=False)
    op.create_index(
        op.f("ix_allocations_client_order_id"), "allocations", ["client_order_id"], unique=False
    )
    op.create_index(
        "ix_allocations_waiting",
        "allocations",
        ["custodian", "created_at"],
        unique=False,
        postgresql_where=sa.text("client_order_id IS NULL"),
    )
    op.add_column(
        "orders",
        sa.Column(
            "custodian",
            sqlmodel.sql.sqltypes.AutoString(length=64),
            server_default="default",
            nullable=False,
        ),
    )
    op.add_column(
        "orders",
        sa.Column("whole_shares", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column(
        "orders",
        sa.Column("allocation_count", sa.Integer(), server_default="1", nullable=False),
    )
    op.add_column("orders", sa.Column("last_fill_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("orders", sa.Column("allocated_at", sa.DateTime(timezone=True), nullable=True))
    for column in ("custodian", "whole_shares", "allocation_count"):
        op.alter_column("orders", column, server_default=None)
    # Each order so far was one trade: it becomes a block of one allocation.
    op.execute(
        """
        INSERT INTO allocations (
            trade_id, proposal_id, account_id, tenant, custodian, symbol, side, quantity,
            reference_price, lot_ids, sleeve_id, status, client_order_id, filled_quantity,
            average_price, reject_reason, traceparent, tracestate, created_at, updated_at)
        SELECT trade_id, proposal_id, account_id, tenant, 'default', symbol, side, quantity,
            reference_price, lot_ids, sleeve_id,
            CASE
                WHEN status = 'filled' THEN 'filled'
                WHEN status = 'rejected' AND filled_quantity > 0 THEN 'partially_filled'
                WHEN status = 'rejected' THEN 'rejected'
                ELSE 'blocked'
            END,
            client_order_id, filled_quantity, average_price, reject_reason, traceparent,
            tracestate, created_at, updated_at
        FROM orders
        """
    )
    op.execute(
        """
        UPDATE orders o
        SET whole_shares = (o.quantity = trunc(o.quantity)),
            allocated_at = CASE WHEN o.status IN ('filled', 'rejected') THEN o.updated_at END,
            last_fill_at = (
                SELECT max(e.executed_at) FROM executions e
                WHERE e.client_order_id = o.client_order_id
                  AND e.outcome = 'applied' AND e.kind = 'fill'
            )
        """
    )
    # The poll cursor is per custodian now, named like the custodian.
    op.execute("UPDATE poll_cursor SET name = 'default' WHERE name = 'custodian'")
    op.drop_index(op.f("ix_orders_account_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_proposal_id"), table_name="orders")
    op.drop_constraint(op.f("orders_trade_id_key"), "orders", type_="unique")
    op.create_index(op.f("ix_orders_custodian"), "orders", ["custodian"], unique=False)
    op.drop_column("orders", "lot_ids")
    op.drop_column("orders", "sleeve_id")
    op.drop_column("orders", "proposal_id")
    op.drop_column("orders", "trade_id")


def downgrade() -> None:
    bind = op.get_bind()
    shared = bind.execute(
        sa.text(
            "SELECT (SELECT count(*) FROM orders WHERE allocation_count <> 1) "
            "+ (SELECT count(*) FROM allocations WHERE client_order_id IS NULL)"
        )
    ).scalar_one()
    if shared:
        raise RuntimeError(
            f"{shared} block orders of several trades or trades waiting for a block exist: "
            "one order per trade cannot hold them"
        )
    op.add_column("orders", sa.Column("trade_id", sa.UUID(), nullable=True))
    op.add_column("orders", sa.Column("proposal_id", sa.UUID(), nullable=True))
    op.add_column("orders", sa.Column("sleeve_id", sa.VARCHAR(length=64), nullable=True))
    op.add_column(
        "orders",
        sa.Column(
            "lot_ids",
            postgresql.ARRAY(sa.VARCHAR()),
            server_default=sa.text("'{}'::character varying[]"),
            nullable=False,
        ),
    )
    op.execute(
        """
        UPDATE orders o
        SET trade_id = a.trade_id, proposal_id = a.proposal_id, sleeve_id = a.sleeve_id,
            lot_ids = a.lot_ids, account_id = a.account_id
        FROM allocations a
        WHERE a.client_order_id = o.client_order_id
        """
    )
    op.alter_column("orders", "trade_id", nullable=False)
    op.alter_column("orders", "proposal_id", nullable=False)
    op.execute("UPDATE poll_cursor SET name = 'custodian' WHERE name = 'default'")
    op.drop_index(op.f("ix_orders_custodian"), table_name="orders")
    op.create_unique_constraint(op.f("orders_trade_id_key"), "orders", ["trade_id"])
    op.create_index(op.f("ix_orders_proposal_id"), "orders", ["proposal_id"], unique=False)
    op.create_index(op.f("ix_orders_account_id"), "orders", ["account_id"], unique=False)
    op.drop_column("orders", "allocated_at")
    op.drop_column("orders", "last_fill_at")
    op.drop_column("orders", "allocation_count")
    op.drop_column("orders", "whole_shares")
    op.drop_column("orders", "custodian")
    op.drop_index("ix_allocations_waiting", table_name="allocations")
    op.drop_index(op.f("ix_allocations_client_order_id"), table_name="allocations")
    op.drop_index(op.f("ix_allocations_account_id"), table_name="allocations")
    op.drop_table("allocations")
