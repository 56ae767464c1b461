"""allocations are booked at the custodian

Each allocation that got a share of its block's fills is told to the custodian (account,
fill, and for a sell the lots to relieve): `booking_status` pending -> booked or refused.
Allocations shared before have none (nothing is sent for them).

Revision ID: 9ca78bb972e9
Revises: f422e5678aef
Create Date: 2026-12-06 19:40:43.055543
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9ca78bb972e9"
down_revision: str | None = "f422e5678aef"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("allocations", sa.Column("booking_status", sa.String(length=16), nullable=True))
    op.add_column("allocations", sa.Column("booking_reason", sa.Text(), nullable=True))
    op.add_column("allocations", sa.Column("booked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_allocations_booking_pending",
        "allocations",
        ["custodian", "updated_at"],
        unique=False,
        postgresql_where=sa.text("booking_status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_allocations_booking_pending", table_name="allocations")
    op.drop_column("allocations", "booked_at")
    op.drop_column("allocations", "booking_reason")
    op.drop_column("allocations", "booking_status")
