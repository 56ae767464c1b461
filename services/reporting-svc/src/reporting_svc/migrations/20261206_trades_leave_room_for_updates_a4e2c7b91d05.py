"""trades leave room for updates

A trade's row is written when proposed and rewritten when approved, filled and reflected in
holdings; none of those changes an indexed column, so with free space on its page each
rewrite is a heap-only tuple update that touches no index.

Revision ID: a4e2c7b91d05
Revises: 1c9850adbab3
Create Date: 2026-12-06 21:50:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a4e2c7b91d05"
down_revision: str | None = "1c9850adbab3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE trades SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE trades RESET (fillfactor)")
