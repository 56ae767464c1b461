"""snapshot requests keep their cause

A pending holdings-reconciled remembers the event that asked for it and the trace context to
continue, so the snapshot names its cause and stays in its trace. Requests pending at upgrade
time have neither (their snapshots start a trace, as before).

Revision ID: 37a69bf94dfc
Revises: 260a4a47c326
Create Date: 2026-12-06 07:34:03.562161
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "37a69bf94dfc"
down_revision: str | None = "260a4a47c326"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("pending_snapshots", sa.Column("cause_event_id", sa.Uuid(), nullable=True))
    op.add_column(
        "pending_snapshots",
        sa.Column("traceparent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    )
    op.add_column("pending_snapshots", sa.Column("tracestate", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("pending_snapshots", "tracestate")
    op.drop_column("pending_snapshots", "traceparent")
    op.drop_column("pending_snapshots", "cause_event_id")
