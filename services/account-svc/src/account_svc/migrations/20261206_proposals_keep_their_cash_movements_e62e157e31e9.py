"""proposals keep their cash movements

Revision ID: e62e157e31e9
Revises: a3739b441740
Create Date: 2026-12-06 08:29:02.039434
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "e62e157e31e9"
down_revision: str | None = "a3739b441740"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "proposals",
        sa.Column(
            "cash_movements",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("proposals", "cash_movements")
