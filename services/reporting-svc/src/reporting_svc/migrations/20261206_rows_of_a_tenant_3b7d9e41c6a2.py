"""rows of a tenant

Models, runs and account valuations learn their tenant, so that every report reads one
tenant's rows; the account list's sort indexes lead with the tenant. Existing rows are
backfilled from the accounts they concern (where that is one tenant).

Revision ID: 3b7d9e41c6a2
Revises: fba27cd91b78
Create Date: 2026-12-06 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "3b7d9e41c6a2"
down_revision: str | None = "fba27cd91b78"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORTS = {  # index -> its column after the tenant
    "ix_account_valuations_name": "name",
    "ix_account_valuations_model": "model_id",
    "ix_account_valuations_status": "status",
    "ix_account_valuations_market_value": "market_value",
    "ix_account_valuations_cash": "cash",
    "ix_account_valuations_drift": "max_abs_drift",
}


def _tenant() -> sa.Column[str]:
    return sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)


def upgrade() -> None:
    op.add_column("models", _tenant())
    op.add_column("runs", _tenant())
    op.add_column("account_valuations", _tenant())
    op.execute(
        "UPDATE account_valuations v SET tenant = a.tenant FROM accounts a"
        " WHERE a.account_id = v.account_id"
    )
    op.execute(
        "UPDATE models m SET tenant = a.tenant FROM (SELECT model_id, min(tenant) AS tenant"
        " FROM accounts WHERE model_id IS NOT NULL GROUP BY model_id"
        " HAVING count(DISTINCT tenant) = 1) a WHERE a.model_id = m.model_id"
    )
    for table in ("run_drift", "proposals"):
        op.execute(
            f"UPDATE runs r SET tenant = x.tenant FROM (SELECT t.run_id, min(a.tenant) AS tenant"
            f" FROM {table} t JOIN accounts a ON a.account_id = t.account_id"
            f" WHERE t.run_id IS NOT NULL GROUP BY t.run_id HAVING count(DISTINCT a.tenant) = 1)"
            f" x WHERE x.run_id = r.run_id AND r.tenant IS NULL"
        )
    op.create_index("ix_models_tenant", "models", ["tenant"])
    op.create_index("ix_accounts_tenant", "accounts", ["tenant", "account_id"])
    op.create_index("ix_runs_tenant_first_event", "runs", ["tenant", "first_event_at"])
    op.create_index("ix_account_valuations_tenant", "account_valuations", ["tenant", "account_id"])
    for index, column in SORTS.items():
        op.drop_index(index, table_name="account_valuations")
        op.create_index(index, "account_valuations", ["tenant", column, "account_id"])


def downgrade() -> None:
    for index, column in SORTS.items():
        op.drop_index(index, table_name="account_valuations")
        op.create_index(index, "account_valuations", [column, "account_id"])
    op.drop_index("ix_account_valuations_tenant", table_name="account_valuations")
    op.drop_index("ix_runs_tenant_first_event", table_name="runs")
    op.drop_index("ix_accounts_tenant", table_name="accounts")
    op.drop_index("ix_models_tenant", table_name="models")
    op.drop_column("account_valuations", "tenant")
    op.drop_column("runs", "tenant")
    op.drop_column("models", "tenant")
