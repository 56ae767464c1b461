"""idempotency keys

Revision ID: 11bee0f86814
Revises: db916dc8bf7f
Create Date: 2026-11-22 07:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import create_idempotency_keys, drop_idempotency_keys

revision: str = "11bee0f86814"
down_revision: str | None = "db916dc8bf7f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
