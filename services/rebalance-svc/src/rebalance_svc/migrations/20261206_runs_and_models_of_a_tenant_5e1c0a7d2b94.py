"""runs and models of a tenant

Revision ID: 5e1c0a7d2b94
Revises: 0cec9cb1792f
Create Date: 2026-12-06 14:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e1c0a7d2b94"
down_revision: str | None = "0cec9cb1792f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("models", sa.Column("tenant", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("tenant", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("started_by", sa.String(length=200), nullable=True))
    op.create_index(op.f("ix_runs_tenant"), "runs", ["tenant"], unique=False)
    # Existing rows: the tenant of the accounts they concern, where that is one tenant.
    op.execute(
        "UPDATE models m SET tenant = a.tenant FROM (SELECT model_id, min(tenant) AS tenant"
        " FROM accounts WHERE model_id IS NOT NULL GROUP BY model_id"
        " HAVING count(DISTINCT tenant) = 1) a WHERE a.model_id = m.model_id"
    )
    op.execute(
        "UPDATE runs r SET tenant = m.tenant FROM models m"
        " WHERE r.kind = 'rebalance' AND m.model_id = r.model_id AND m.tenant IS NOT NULL"
    )
    op.execute(
        "UPDATE runs SET tenant = (SELECT min(tenant) FROM accounts)"
        " WHERE tenant IS NULL AND (SELECT count(DISTINCT tenant) FROM accounts) = 1"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_tenant"), table_name="runs")
    op.drop_column("runs", "started_by")
    op.drop_column("runs", "tenant")
    op.drop_column("models", "tenant")
