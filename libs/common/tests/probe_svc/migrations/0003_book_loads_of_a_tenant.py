"""probe service keys its book loads by tenant

Revision ID: probe0003
Revises: probe0002
"""

from ballast_common.book_loads import key_book_loads_by_tenant, unkey_book_loads_by_tenant

revision = "probe0003"
down_revision = "probe0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    key_book_loads_by_tenant()


def downgrade() -> None:
    unkey_book_loads_by_tenant()
