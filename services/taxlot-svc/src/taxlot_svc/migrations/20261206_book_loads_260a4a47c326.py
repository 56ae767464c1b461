"""book loads

Revision ID: 260a4a47c326
Revises: a2dcbbad6302
Create Date: 2026-12-06 04:57:32.666872
"""

from collections.abc import Sequence

from alembic import op
from ballast_common.book_loads import create_book_loads

revision: str = "260a4a47c326"
down_revision: str | None = "a2dcbbad6302"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_book_loads()


def downgrade() -> None:
    op.drop_table("book_loads")
