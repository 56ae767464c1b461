"""idempotency keys

Revision ID: a2dcbbad6302
Revises: db9fed67debe
Create Date: 2026-11-22 07:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import create_idempotency_keys, drop_idempotency_keys

revision: str = "a2dcbbad6302"
down_revision: str | None = "db9fed67debe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
