"""accounts know their tenant

The tenant whose account-changed named an account: an opening balance of another tenant
for it is refused. Existing rows take the tenant of the account's ledger, where there is one.

Revision ID: 8d3f6b2a91e4
Revises: c475da51a267
Create Date: 2026-12-06 14:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "8d3f6b2a91e4"
down_revision: str | None = "c475da51a267"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "accounts",
        sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    )
    op.execute(
        "UPDATE accounts a SET tenant = b.tenant FROM account_books b"
        " WHERE b.account_id = a.account_id"
    )


def downgrade() -> None:
    op.drop_column("accounts", "tenant")
