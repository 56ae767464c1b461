"""book loads of a tenant

Revision ID: c475da51a267
Revises: b5eb3357fd19
Create Date: 2026-12-06 14:40:00
"""

from collections.abc import Sequence

from ballast_common.book_loads import key_book_loads_by_tenant, unkey_book_loads_by_tenant

revision: str = "c475da51a267"
down_revision: str | None = "b5eb3357fd19"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    key_book_loads_by_tenant()


def downgrade() -> None:
    unkey_book_loads_by_tenant()
