"""direct-index models: the risk model, optimizer settings and factor exposures a model
version carries

Revision ID: e2b8f4a61c03
Revises: 5d1c8e7a2b90
Create Date: 2026-12-07 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e2b8f4a61c03"
down_revision: str | None = "5d1c8e7a2b90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("models", sa.Column("direct_index", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("models", "direct_index")
