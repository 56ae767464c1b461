"""allocations keep their approval event

The trades-approved event that carried each trade, so its fill names it as its cause.
Allocations stored before have none (their fills name no cause, as before).

Revision ID: f422e5678aef
Revises: e55cb6e77036
Create Date: 2026-12-06 07:32:43.843965
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f422e5678aef"
down_revision: str | None = "e55cb6e77036"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("allocations", sa.Column("approval_event_id", sa.Uuid(), nullable=True))


def downgrade() -> None:
    op.drop_column("allocations", "approval_event_id")
