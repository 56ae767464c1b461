"""holds from trading

`account_holds`: whether the custodian's reconciliation holds an account from trading
(trading-hold-changed), why and since when, for the account list and the dashboard.

Revision ID: a4d248fc0cc6
Revises: a4e2c7b91d05
Create Date: 2026-12-06 22:23:51.309993
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "a4d248fc0cc6"
down_revision: str | None = "a4e2c7b91d05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_holds",
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("custodian", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("business_date", sa.Date(), nullable=True),
        sa.Column("held_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_index("ix_account_holds_tenant", "account_holds", ["tenant"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_account_holds_tenant", table_name="account_holds")
    op.drop_table("account_holds")
