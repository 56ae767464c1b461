"""The SQL of reusable strategies: the strategies, the accounts following them, and a new
version carried to every follower in one statement."""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, column, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.tables import Account, ReusableStrategy, StrategyFollower

_ACCOUNT_COLUMNS = tuple(Account.__table__.columns)  # type: ignore[attr-defined]


async def get_strategy(
    session: AsyncSession,
    tenant: str,
    strategy_id: str,
    *,
    for_update: bool = False,
    for_share: bool = False,
) -> ReusableStrategy | None:
    """The tenant's strategy (None when unknown or another tenant's)."""
    stmt = select(ReusableStrategy).where(
        ReusableStrategy.tenant == tenant, ReusableStrategy.strategy_id == strategy_id
    )
    if for_update or for_share:
        stmt = stmt.with_for_update(read=for_share and not for_update)
    return (await session.exec(stmt)).first()


async def list_strategies(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[ReusableStrategy]:
    """A page of the tenant's strategies, by id."""
    stmt = (
        select(ReusableStrategy)
        .where(ReusableStrategy.tenant == tenant)
        .order_by(col(ReusableStrategy.strategy_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def save(session: AsyncSession, row: ReusableStrategy) -> None:
    session.add(row)
    await session.flush()


async def follower_counts(
    session: AsyncSession, tenant: str, strategy_ids: Sequence[str]
) -> dict[str, int]:
    """How many accounts follow each of the tenant's strategies (one grouped read)."""
    if not strategy_ids:
        return {}
    stmt = (
        select(StrategyFollower.strategy_id, func.count())
        .where(
            StrategyFollower.tenant == tenant,
            col(StrategyFollower.strategy_id).in_(strategy_ids),
        )
        .group_by(col(StrategyFollower.strategy_id))
    )
    return {strategy_id: int(n) for strategy_id, n in await session.exec(stmt)}


async def follow(
    session: AsyncSession, tenant: str, account_id: str, strategy_id: str, version: int
) -> None:
    """The account follows the strategy from now on (whatever it followed before)."""
    stmt = insert(StrategyFollower).values(
        account_id=account_id, tenant=tenant, strategy_id=strategy_id, version=version
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[StrategyFollower.account_id],
        set_={"strategy_id": strategy_id, "version": version, "tenant": tenant},
    )
    await session.execute(stmt)


async def unfollow(session: AsyncSession, account_id: str) -> None:
    """The account follows no reusable strategy (its own, or none)."""
    await session.execute(
        delete(StrategyFollower).where(col(StrategyFollower.account_id) == account_id)
    )


async def carry_to_followers(
    session: AsyncSession,
    tenant: str,
    strategy_id: str,
    version: int,
    strategy: dict[str, Any],
    now: datetime,
) -> int:
    """Give every account following the strategy its new version (one statement, after
    locking them in id order as a bulk change does, so the two never deadlock); returns how
    many."""
    params = {"tenant": tenant, "strategy_id": strategy_id}
    await session.execute(
        text(
            "SELECT count(*) FROM (SELECT 1 FROM accounts a JOIN strategy_followers f "
            "ON f.account_id = a.account_id WHERE f.tenant = :tenant "
            "AND f.strategy_id = :strategy_id ORDER BY a.account_id FOR UPDATE OF a) x"
        ),
        params,
    )
    result = await session.execute(
        text(
            "WITH moved AS (UPDATE strategy_followers SET version = :version "
            "WHERE tenant = :tenant AND strategy_id = :strategy_id RETURNING account_id) "
            "UPDATE accounts a SET strategy = CAST(:strategy AS jsonb), updated_at = :now "
            "FROM moved WHERE a.account_id = moved.account_id AND a.tenant = :tenant"
        ),
        {
            "version": version,
            "tenant": tenant,
            "strategy_id": strategy_id,
            "strategy": json.dumps(strategy),
            "now": now,
        },
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def followers_page(
    session: AsyncSession, tenant: str, strategy_id: str, after_account_id: str, limit: int
) -> list[Row[Any]]:
    """The accounts following the strategy, past an id, by id (every column of accounts)."""
    names = ", ".join(f"a.{c.name}" for c in _ACCOUNT_COLUMNS)
    stmt = text(
        f"SELECT {names} FROM strategy_followers f JOIN accounts a "
        "ON a.account_id = f.account_id WHERE f.tenant = :tenant "
        "AND f.strategy_id = :strategy_id AND f.account_id > :after "
        "ORDER BY f.account_id LIMIT :limit"
    ).columns(*(column(c.name, c.type) for c in _ACCOUNT_COLUMNS))
    params = {
        "tenant": tenant,
        "strategy_id": strategy_id,
        "after": after_account_id,
        "limit": limit,
    }
    return list(await session.execute(stmt, params))
