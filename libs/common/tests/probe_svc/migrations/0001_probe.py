"""probe service tables

Revision ID: probe0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from ballast_common.migrations import create_outbox_and_inbox, drop_outbox_and_inbox

revision = "probe0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("account_id", sa.String(), nullable=False),
        sa.Column("text", sa.String(), nullable=False),
    )
    create_outbox_and_inbox()


def downgrade() -> None:
    drop_outbox_and_inbox()
    op.drop_table("notes")
