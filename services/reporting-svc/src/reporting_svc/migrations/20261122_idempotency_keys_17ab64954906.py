"""idempotency keys

Revision ID: 17ab64954906
Revises: 7e6e930d9adc
Create Date: 2026-11-22 07:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import create_idempotency_keys, drop_idempotency_keys

revision: str = "17ab64954906"
down_revision: str | None = "7e6e930d9adc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
