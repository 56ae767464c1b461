"""The SQL of reviewing proposals that the shared repository does not already have."""

from typing import Any

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

# Pending proposals use the status index; each one's account is probed for the tenant.
_PENDING_BY_ROUTE = text(
    "SELECT p.routed_by, count(*) AS proposals FROM proposals p "
    "WHERE p.status = 'pending' AND EXISTS (SELECT 1 FROM accounts a "
    "WHERE a.account_id = p.account_id AND a.tenant = :tenant) "
    "GROUP BY p.routed_by ORDER BY p.routed_by NULLS FIRST LIMIT :limit OFFSET :offset"
)


async def pending_by_route(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[dict[str, Any]]:
    """How many of the tenant's proposals are pending, per what routed them."""
    rows = await session.execute(
        _PENDING_BY_ROUTE, {"tenant": tenant, "limit": limit, "offset": offset}
    )
    return [dict(r._mapping) for r in rows]
