"""tax inputs carry an acquisition date (an adjustment's: the custodian's figure accepted)

Revision ID: 0725a5461aaf
Revises: 5e2a9c41d7b3
Create Date: 2026-12-07 03:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0725a5461aaf"
down_revision: str | None = "5e2a9c41d7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tax_inputs", sa.Column("acquired_on", sa.Date(), nullable=True))


def downgrade() -> None:
    op.drop_column("tax_inputs", "acquired_on")
