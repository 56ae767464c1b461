"""outbox values compressed with lz4

Revision ID: 1c9850adbab3
Revises: 5c1e0b7a9d24
Create Date: 2026-12-06 20:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import compress_outbox_with_lz4, compress_outbox_with_pglz

revision: str = "1c9850adbab3"
down_revision: str | None = "5c1e0b7a9d24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    compress_outbox_with_lz4()


def downgrade() -> None:
    compress_outbox_with_pglz()
