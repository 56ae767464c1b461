"""probe service loads books

Revision ID: probe0002
Revises: probe0001
"""

from alembic import op
from ballast_common.book_loads import create_book_loads

revision = "probe0002"
down_revision = "probe0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_book_loads()


def downgrade() -> None:
    op.drop_table("book_loads")
