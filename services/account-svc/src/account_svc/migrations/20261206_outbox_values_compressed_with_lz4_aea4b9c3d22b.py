"""outbox values compressed with lz4

Revision ID: aea4b9c3d22b
Revises: b4d82c6e1a37
Create Date: 2026-12-06 20:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import compress_outbox_with_lz4, compress_outbox_with_pglz

revision: str = "aea4b9c3d22b"
down_revision: str | None = "b4d82c6e1a37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    compress_outbox_with_lz4()


def downgrade() -> None:
    compress_outbox_with_pglz()
