"""idempotency keys

Revision ID: f13394d71647
Revises: ff205d9dbc5a
Create Date: 2026-11-22 07:10:00
"""

from collections.abc import Sequence

from ballast_common.migrations import create_idempotency_keys, drop_idempotency_keys

revision: str = "f13394d71647"
down_revision: str | None = "ff205d9dbc5a"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
