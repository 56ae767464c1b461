"""audit records

Revision ID: b4d82c6e1a37
Revises: efdb31438958
Create Date: 2026-12-06 16:30:00
"""

from collections.abc import Sequence

from ballast_common.audit import create_audit_records, drop_audit_records

revision: str = "b4d82c6e1a37"
down_revision: str | None = "efdb31438958"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_records()


def downgrade() -> None:
    drop_audit_records()
