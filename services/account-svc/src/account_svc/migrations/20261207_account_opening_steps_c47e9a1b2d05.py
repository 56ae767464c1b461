"""account opening as a workflow: its steps, and an index of the accounts still opening

Revision ID: c47e9a1b2d05
Revises: 8b3d6f0a2c71
Create Date: 2026-12-07 01:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "c47e9a1b2d05"
down_revision: str | None = "8b3d6f0a2c71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_opening_steps",
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("note", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "step"),
    )
    op.create_index(
        "ix_account_opening_steps_tenant_status",
        "account_opening_steps",
        ["tenant", "status"],
        unique=False,
    )
    op.create_index(
        "ix_accounts_opening",
        "accounts",
        ["tenant", "created_at"],
        unique=False,
        postgresql_where=sa.text("status = 'opening'"),
    )


def downgrade() -> None:
    op.drop_index("ix_accounts_opening", table_name="accounts")
    op.drop_index("ix_account_opening_steps_tenant_status", table_name="account_opening_steps")
    op.drop_table("account_opening_steps")
