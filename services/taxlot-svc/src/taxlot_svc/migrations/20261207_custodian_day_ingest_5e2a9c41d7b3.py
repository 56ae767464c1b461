"""custodian day ingest: transactions taken once, original files kept

Revision ID: 5e2a9c41d7b3
Revises: 36272f45011c
Create Date: 2026-12-07 03:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "5e2a9c41d7b3"
down_revision: str | None = "36272f45011c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _string(length: int) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "custodian_transactions",
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("custodian", _string(64), nullable=False),
        sa.Column("transaction_id", _string(64), nullable=False),
        sa.Column("lot_id", _string(64), nullable=False),
        sa.Column("account_id", _string(64), nullable=False),
        sa.Column("type", _string(16), nullable=False),
        sa.Column("symbol", _string(16), nullable=True),
        sa.Column("quantity", sa.Numeric(), nullable=True),
        sa.Column("amount", sa.Numeric(20, 2), nullable=True),
        sa.Column("price", sa.Numeric(), nullable=True),
        sa.Column("trade_date", sa.Date(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("load_id", _string(64), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("outcome", _string(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "taken_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant", "custodian", "transaction_id", "lot_id"),
    )
    op.create_index(
        "ix_custodian_transactions_load",
        "custodian_transactions",
        ["tenant", "load_id", "outcome"],
        unique=False,
    )
    op.create_table(
        "custodian_day_files",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("tenant", _string(64), nullable=False),
        sa.Column("custodian", _string(64), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("name", _string(128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", _string(64), nullable=False),
        sa.Column("manifest_sha256", _string(64), nullable=True),
        sa.Column("received_by", _string(200), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_custodian_day_files_day",
        "custodian_day_files",
        ["tenant", "custodian", "business_date", "name", "id"],
        unique=False,
    )
    op.create_table(
        "custodian_day_file_chunks",
        sa.Column("file_id", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "n"),
    )


def downgrade() -> None:
    op.drop_table("custodian_day_file_chunks")
    op.drop_index("ix_custodian_day_files_day", table_name="custodian_day_files")
    op.drop_table("custodian_day_files")
    op.drop_index("ix_custodian_transactions_load", table_name="custodian_transactions")
    op.drop_table("custodian_transactions")
