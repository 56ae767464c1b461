"""model settings (share models, hold and replacement, bands, tax-loss proxies, swap-back) and
parent-child inheritance (a child version's parent, overrides; a parent's limits); asset
allocations (and the allocation a model version keeps to)

Revision ID: c4d1e8a27b30
Revises: 98541163c11d
Create Date: 2026-12-07 00:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c4d1e8a27b30"
down_revision: str | None = "98541163c11d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("model_targets", "weight", existing_type=sa.Numeric(12, 10), nullable=True)
    op.add_column("model_targets", sa.Column("shares", sa.Numeric(20, 8), nullable=True))
    op.add_column(
        "model_targets",
        sa.Column("hold", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("model_targets", sa.Column("replacement", sa.String(16), nullable=True))
    op.add_column("model_targets", sa.Column("band_kind", sa.String(8), nullable=True))
    op.add_column("model_targets", sa.Column("band_width", sa.Numeric(10, 8), nullable=True))
    op.add_column("model_targets", sa.Column("tax_loss_proxies", postgresql.JSONB(), nullable=True))
    op.add_column(
        "model_versions",
        sa.Column("kind", sa.String(8), nullable=False, server_default="weights"),
    )
    op.add_column(
        "model_versions",
        sa.Column("swap_back", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("model_versions", sa.Column("parent_model_id", sa.String(64), nullable=True))
    op.add_column("model_versions", sa.Column("parent_version", sa.Integer(), nullable=True))
    op.add_column("model_versions", sa.Column("overrides", postgresql.JSONB(), nullable=True))
    op.add_column("model_versions", sa.Column("limits", postgresql.JSONB(), nullable=True))
    op.create_index(
        op.f("ix_model_versions_parent_model_id"), "model_versions", ["parent_model_id"]
    )
    op.add_column("model_versions", sa.Column("allocation_id", sa.String(64), nullable=True))
    op.create_table(
        "allocations",
        sa.Column("allocation_id", sa.String(64), nullable=False),
        sa.Column("tenant", sa.String(64), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("allocation_id"),
    )
    op.create_table(
        "allocation_versions",
        sa.Column("allocation_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("weights", postgresql.JSONB(), nullable=False),
        sa.Column("changed_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("allocation_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("allocation_versions")
    op.drop_table("allocations")
    op.drop_column("model_versions", "allocation_id")
    op.drop_index(op.f("ix_model_versions_parent_model_id"), table_name="model_versions")
    for column in ("limits", "overrides", "parent_version", "parent_model_id", "swap_back", "kind"):
        op.drop_column("model_versions", column)
    for column in (
        "tax_loss_proxies",
        "band_width",
        "band_kind",
        "replacement",
        "hold",
        "shares",
    ):
        op.drop_column("model_targets", column)
    op.execute("DELETE FROM model_targets WHERE weight IS NULL")
    op.alter_column("model_targets", "weight", existing_type=sa.Numeric(12, 10), nullable=False)
