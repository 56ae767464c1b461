"""filters route proposals: accounts' advisor and attributes, proposals' metrics and routing,
the filters table

Revision ID: 5f1c2a9d7e34
Revises: aea4b9c3d22b
Create Date: 2026-12-07 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5f1c2a9d7e34"
down_revision: str | None = "aea4b9c3d22b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

METRICS = (
    "account_value",
    "cash_before",
    "buy_value",
    "sell_value",
    "turnover_percent",
    "estimated_tax",
    "drift_before_percent",
    "drift_after_percent",
)


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("advisor_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    )
    op.add_column(
        "accounts",
        sa.Column(
            "attributes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.create_index(op.f("ix_accounts_advisor_id"), "accounts", ["advisor_id"], unique=False)
    op.create_index(
        "ix_accounts_attributes",
        "accounts",
        ["attributes"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"attributes": "jsonb_path_ops"},
    )
    for name in METRICS:
        op.add_column("proposals", sa.Column(name, sa.Numeric(20, 4), nullable=True))
    op.add_column(
        "proposals",
        sa.Column("routed_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    )
    op.add_column(
        "proposals",
        sa.Column("routing_action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    )
    op.create_index(op.f("ix_proposals_routed_by"), "proposals", ["routed_by"], unique=False)
    op.create_index(
        "ix_proposals_account_latest",
        "proposals",
        ["account_id", "received_at", "proposal_id"],
        unique=False,
    )
    op.create_table(
        "filters",
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("filter_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("conditions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "filter_id"),
    )


def downgrade() -> None:
    op.drop_table("filters")
    op.drop_index("ix_proposals_account_latest", table_name="proposals")
    op.drop_index(op.f("ix_proposals_routed_by"), table_name="proposals")
    op.drop_column("proposals", "routing_action")
    op.drop_column("proposals", "routed_by")
    for name in reversed(METRICS):
        op.drop_column("proposals", name)
    op.drop_index("ix_accounts_attributes", table_name="accounts")
    op.drop_index(op.f("ix_accounts_advisor_id"), table_name="accounts")
    op.drop_column("accounts", "attributes")
    op.drop_column("accounts", "advisor_id")
