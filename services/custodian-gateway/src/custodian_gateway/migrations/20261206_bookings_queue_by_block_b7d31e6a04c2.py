"""bookings queue by block

The booking sender's queue was a partial index over every allocation whose booking is
pending; each share entered and left it, and its churn made the claim scan dead entries.
The queue is now `bookings_due`, one row per done block with shares still to tell the
custodian. With that index gone, no later step of an allocation changes an indexed column,
so with room on the page (fillfactor) those rewrites touch no index.

Revision ID: b7d31e6a04c2
Revises: 1e3d189bc53d
Create Date: 2026-12-06 22:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7d31e6a04c2"
down_revision: str | None = "1e3d189bc53d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bookings_due",
        sa.Column("client_order_id", sa.String(length=64), primary_key=True),
        sa.Column("custodian", sa.String(length=64), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_bookings_due_custodian", "bookings_due", ["custodian", "due_at"])
    op.execute(
        "INSERT INTO bookings_due (client_order_id, custodian, due_at)"
        " SELECT client_order_id, min(custodian), min(updated_at) FROM allocations"
        " WHERE booking_status = 'pending' AND client_order_id IS NOT NULL"
        " GROUP BY client_order_id"
    )
    op.drop_index("ix_allocations_booking_pending", table_name="allocations")
    op.execute("ALTER TABLE allocations SET (fillfactor = 75)")


def downgrade() -> None:
    op.execute("ALTER TABLE allocations RESET (fillfactor)")
    op.create_index(
        "ix_allocations_booking_pending",
        "allocations",
        ["custodian", "updated_at"],
        unique=False,
        postgresql_where=sa.text("booking_status = 'pending'"),
    )
    op.drop_table("bookings_due")
