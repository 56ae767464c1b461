"""book loads of a tenant

Revision ID: 195e829f1955
Revises: 52df4fa01032
Create Date: 2026-12-06 14:40:00
"""

from collections.abc import Sequence

from ballast_common.book_loads import key_book_loads_by_tenant, unkey_book_loads_by_tenant

revision: str = "195e829f1955"
down_revision: str | None = "52df4fa01032"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    key_book_loads_by_tenant()


def downgrade() -> None:
    unkey_book_loads_by_tenant()
