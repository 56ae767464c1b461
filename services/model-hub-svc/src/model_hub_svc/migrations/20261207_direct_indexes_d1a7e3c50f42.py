"""direct indexes: a model version's risk model and optimizer settings, a target's factor
exposures

Revision ID: d1a7e3c50f42
Revises: c4d1e8a27b30
Create Date: 2026-12-07 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d1a7e3c50f42"
down_revision: str | None = "c4d1e8a27b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column("direct_index", postgresql.JSONB(), nullable=True))
    op.add_column("model_targets", sa.Column("factor_exposures", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("model_targets", "factor_exposures")
    op.drop_column("model_versions", "direct_index")
