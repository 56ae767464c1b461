"""reconciliation of custodian days

Revision ID: 27843cc359c2
Revises: c9e15a3f7d02
Create Date: 2026-12-06 20:00:40.987469
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "27843cc359c2"
down_revision: str | None = "c9e15a3f7d02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "custodian_day_loads",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("load_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("files", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "load_id"),
    )
    op.create_table(
        "reconciliation_breaks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("custodian", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("symbol", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("lot_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("ours", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("theirs", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("policy", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("load_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column(
            "found_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_reconciliation_breaks_account",
        "reconciliation_breaks",
        ["account_id", "id"],
        unique=False,
    )
    op.create_index(
        "ix_reconciliation_breaks_load",
        "reconciliation_breaks",
        ["tenant", "load_id", "kind"],
        unique=False,
    )
    op.create_index(
        "ix_reconciliation_breaks_status_account",
        "reconciliation_breaks",
        ["tenant", "status", "account_id", "id"],
        unique=False,
    )
    op.create_table(
        "reconciliations",
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("custodian", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("load_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("accounts", sa.BigInteger(), nullable=False),
        sa.Column("lots_compared", sa.BigInteger(), nullable=False),
        sa.Column("matched", sa.BigInteger(), nullable=False),
        sa.Column("breaks", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("accounts_with_breaks", sa.BigInteger(), nullable=False),
        sa.Column(
            "reconciled_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("tenant", "custodian", "business_date"),
    )


def downgrade() -> None:
    op.drop_table("reconciliations")
    op.drop_index("ix_reconciliation_breaks_status_account", table_name="reconciliation_breaks")
    op.drop_index("ix_reconciliation_breaks_account", table_name="reconciliation_breaks")
    op.drop_index("ix_reconciliation_breaks_load", table_name="reconciliation_breaks")
    op.drop_table("reconciliation_breaks")
    op.drop_table("custodian_day_loads")
