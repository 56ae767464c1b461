"""book loads

Revision ID: 52df4fa01032
Revises: 986250c0a940
Create Date: 2026-12-06 04:57:10.752298
"""

from collections.abc import Sequence

from alembic import op
from ballast_common.book_loads import create_book_loads

revision: str = "52df4fa01032"
down_revision: str | None = "986250c0a940"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_book_loads()


def downgrade() -> None:
    op.drop_table("book_loads")
