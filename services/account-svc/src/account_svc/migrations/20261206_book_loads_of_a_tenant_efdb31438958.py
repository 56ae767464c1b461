"""book loads of a tenant

Revision ID: efdb31438958
Revises: 5ab3e043ec04
Create Date: 2026-12-06 14:40:00
"""

from collections.abc import Sequence

from ballast_common.book_loads import key_book_loads_by_tenant, unkey_book_loads_by_tenant

revision: str = "efdb31438958"
down_revision: str | None = "5ab3e043ec04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    key_book_loads_by_tenant()


def downgrade() -> None:
    unkey_book_loads_by_tenant()
