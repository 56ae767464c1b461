"""lots one document per account

An account's lots are read one account at a time (GET /accounts/{id}/lots), yet each snapshot
rewrote them row by row: 150 lots an account locked and compared per snapshot, the largest
statement of a model change. `account_lots` keeps each account's lots as one JSON array
(lz4-compressed when the server has lz4), written whole when it changed.

Revision ID: 7f3b2c9e1d4a
Revises: a4d248fc0cc6
Create Date: 2026-12-07 03:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from ballast_common.migrations import compress_with_lz4

revision: str = "7f3b2c9e1d4a"
down_revision: str | None = "a4d248fc0cc6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_lots",
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("lots", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    compress_with_lz4("account_lots", "lots")
    op.execute(
        """
        INSERT INTO account_lots (account_id, lots)
        SELECT account_id,
               json_agg(json_build_object(
                   'lot_id', lot_id, 'symbol', symbol, 'quantity', quantity::text,
                   'acquired', acquired, 'cost_basis', cost_basis::text,
                   'wash_adjustment', wash_adjustment::text, 'sleeve_id', sleeve_id)
                   ORDER BY symbol, acquired, lot_id)
          FROM lots GROUP BY account_id
        """
    )
    op.drop_table("lots")


def downgrade() -> None:
    op.create_table(
        "lots",
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("lot_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("symbol", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("quantity", sa.Numeric(precision=24, scale=8), nullable=False),
        sa.Column("acquired", sa.Date(), nullable=False),
        sa.Column("cost_basis", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("wash_adjustment", sa.Numeric(precision=24, scale=6), nullable=False),
        sa.Column("sleeve_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "lot_id"),
    )
    op.execute(
        """
        INSERT INTO lots (account_id, lot_id, symbol, quantity, acquired, cost_basis,
                          wash_adjustment, sleeve_id)
        SELECT a.account_id, l.lot_id, l.symbol, l.quantity, l.acquired, l.cost_basis,
               COALESCE(l.wash_adjustment, 0), l.sleeve_id
          FROM account_lots a
         CROSS JOIN LATERAL json_to_recordset(a.lots)
               AS l(lot_id text, symbol text, quantity numeric, acquired date,
                    cost_basis numeric, wash_adjustment numeric, sleeve_id text)
        """
    )
    op.drop_table("account_lots")
