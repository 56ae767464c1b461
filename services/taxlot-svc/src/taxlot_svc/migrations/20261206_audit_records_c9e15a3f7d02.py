"""audit records

Revision ID: c9e15a3f7d02
Revises: 8d3f6b2a91e4
Create Date: 2026-12-06 16:30:00
"""

from collections.abc import Sequence

from ballast_common.audit import create_audit_records, drop_audit_records

revision: str = "c9e15a3f7d02"
down_revision: str | None = "8d3f6b2a91e4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_records()


def downgrade() -> None:
    drop_audit_records()
