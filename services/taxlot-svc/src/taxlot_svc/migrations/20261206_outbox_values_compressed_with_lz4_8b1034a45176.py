"""outbox values compressed with lz4

Revision ID: 8b1034a45176
Revises: 27843cc359c2
Create Date: 2026-12-06 20:20:00
"""

from collections.abc import Sequence

from ballast_common.migrations import compress_outbox_with_lz4, compress_outbox_with_pglz

revision: str = "8b1034a45176"
down_revision: str | None = "27843cc359c2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    compress_outbox_with_lz4()


def downgrade() -> None:
    compress_outbox_with_pglz()
