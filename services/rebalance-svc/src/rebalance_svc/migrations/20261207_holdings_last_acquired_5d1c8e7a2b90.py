"""holdings remember their latest acquisition

`holdings.last_acquired`: the latest `acquired` of a position's lots. The wash-sale window's
search for recent purchases in a household (`repository.household_lots`) expanded every
lot's JSON of every position of the household to find the few bought lately; it now reads
only the positions with a lot in the window.

Revision ID: 5d1c8e7a2b90
Revises: c7dab1560503
Create Date: 2026-12-07 03:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1c8e7a2b90"
down_revision: str | None = "c7dab1560503"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("holdings", sa.Column("last_acquired", sa.Date(), nullable=True))
    op.execute(
        "UPDATE holdings SET last_acquired = (SELECT max((l->>'acquired')::date)"
        " FROM jsonb_array_elements(lots) AS l) WHERE jsonb_array_length(lots) > 0"
    )


def downgrade() -> None:
    op.drop_column("holdings", "last_acquired")
