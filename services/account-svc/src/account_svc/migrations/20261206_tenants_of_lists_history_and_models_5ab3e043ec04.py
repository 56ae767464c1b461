"""tenants of lists, history and models

Security lists become each tenant's own (keyed by tenant and id); restriction history and
known models say whose they are, so every read can be scoped to the caller's tenant;
proposals (scoped through their account) get an index in the order they are listed.
Existing rows take the tenant of the accounts they belong to, else "demo" (the tenant every
request had by default before tokens named it).

Revision ID: 5ab3e043ec04
Revises: e62e157e31e9
Create Date: 2026-12-06 13:42:23.652329
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "5ab3e043ec04"
down_revision: str | None = "e62e157e31e9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFAULT_TENANT = "demo"


def upgrade() -> None:
    for table in ("known_models", "restriction_history", "security_lists"):
        op.add_column(
            table, sa.Column("tenant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    # A list belongs to the tenant of the accounts restricted by it.
    op.execute(
        sa.text(
            """
            UPDATE security_lists l SET tenant = COALESCE(
                (SELECT min(a.tenant) FROM accounts a
                 WHERE a.restrictions @> jsonb_build_array(
                     jsonb_build_object('scope', 'list', 'value', l.list_id))),
                :tenant)
            """
        ).bindparams(tenant=DEFAULT_TENANT)
    )
    op.execute(
        sa.text(
            """
            UPDATE restriction_history h SET tenant = COALESCE(
                (SELECT a.tenant FROM accounts a WHERE a.account_id = h.account_id),
                (SELECT l.tenant FROM security_lists l WHERE l.list_id = h.list_id),
                :tenant)
            """
        ).bindparams(tenant=DEFAULT_TENANT)
    )
    # A model belongs to the tenant of an account following it (an SMA or a UMA's sleeve).
    op.execute(
        sa.text(
            """
            UPDATE known_models m SET tenant = COALESCE(
                (SELECT min(a.tenant) FROM accounts a
                 WHERE a.model_id = m.model_id
                    OR a.strategy @> jsonb_build_object('sleeves', jsonb_build_array(
                        jsonb_build_object('model_id', m.model_id)))),
                :tenant)
            """
        ).bindparams(tenant=DEFAULT_TENANT)
    )
    for table in ("known_models", "restriction_history", "security_lists"):
        op.alter_column(table, "tenant", nullable=False)
    op.create_index(op.f("ix_known_models_tenant"), "known_models", ["tenant"], unique=False)
    op.create_index(
        op.f("ix_restriction_history_list_id"), "restriction_history", ["list_id"], unique=False
    )
    op.drop_constraint("security_lists_pkey", "security_lists", type_="primary")
    op.create_primary_key("security_lists_pkey", "security_lists", ["tenant", "list_id"])
    # proposals are scoped through their account: a page in this order probes accounts
    op.create_index(
        "ix_proposals_received_at", "proposals", ["received_at", "proposal_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_proposals_received_at", table_name="proposals")
    op.drop_constraint("security_lists_pkey", "security_lists", type_="primary")
    op.create_primary_key("security_lists_pkey", "security_lists", ["list_id"])
    op.drop_column("security_lists", "tenant")
    op.drop_index(op.f("ix_restriction_history_list_id"), table_name="restriction_history")
    op.drop_column("restriction_history", "tenant")
    op.drop_index(op.f("ix_known_models_tenant"), table_name="known_models")
    op.drop_column("known_models", "tenant")
