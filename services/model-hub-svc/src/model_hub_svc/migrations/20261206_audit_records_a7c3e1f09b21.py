"""audit records

Revision ID: a7c3e1f09b21
Revises: 195e829f1955
Create Date: 2026-12-06 16:30:00
"""

from collections.abc import Sequence

from ballast_common.audit import create_audit_records, drop_audit_records

revision: str = "a7c3e1f09b21"
down_revision: str | None = "195e829f1955"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_records()


def downgrade() -> None:
    drop_audit_records()
