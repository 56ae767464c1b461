"""idempotency keys

Revision ID: 986250c0a940
Revises: b832aa51124f
Create Date: 2026-11-22 07:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import create_idempotency_keys, drop_idempotency_keys

revision: str = "986250c0a940"
down_revision: str | None = "b832aa51124f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
