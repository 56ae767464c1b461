"""proposals keep a direct-index sleeve's tracking error before and after, and their notes

Revision ID: f3c9a2d71e84
Revises: c47e9a1b2d05
Create Date: 2026-12-07 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f3c9a2d71e84"
down_revision: str | None = "c47e9a1b2d05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for name in ("tracking_error_before_percent", "tracking_error_after_percent"):
        op.add_column("proposals", sa.Column(name, sa.Numeric(20, 4), nullable=True))
    op.add_column(
        "proposals",
        sa.Column(
            "notes",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("proposals", "notes")
    for name in ("tracking_error_after_percent", "tracking_error_before_percent"):
        op.drop_column("proposals", name)
