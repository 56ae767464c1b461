"""model settings of the manager: kind, per-target settings, swap-back, parent

Revision ID: c7dab1560503
Revises: a3c9e51f7d20 (written on 4ee613e6c3fe; chained after cash requests so one head)
Create Date: 2026-12-07 00:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c7dab1560503"
down_revision: str | None = "a3c9e51f7d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "models",
        sa.Column("kind", sa.Text(), nullable=False, server_default=sa.text("'weights'")),
    )
    op.add_column(
        "models",
        sa.Column(
            "target_settings",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
    )
    op.add_column(
        "models",
        sa.Column("swap_back", sa.Boolean(), nullable=False, server_default=sa.text("false")),
    )
    op.add_column(
        "models", sa.Column("parent", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("models", "parent")
    op.drop_column("models", "swap_back")
    op.drop_column("models", "target_settings")
    op.drop_column("models", "kind")
