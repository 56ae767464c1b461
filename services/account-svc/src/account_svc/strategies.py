"""Reusable strategies: a tenant's UMA strategies (sleeves of models with weights and bands, a
rebalance range) that many accounts follow. An account following one holds that strategy as
its own `strategy`, so account-changed carries it resolved and nothing downstream changes; a
new version is written to every follower in one statement and each is recorded and announced
again, a thousand at a time."""

from datetime import UTC, datetime
from typing import Any

from ballast_common.audit import AuditEntry
from ballast_common.errors import FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import service
from account_svc import strategies_repository as repo
from account_svc.ports import AccountRepository
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountOut, Strategy
from account_svc.strategies_schemas import (
    AccountStrategyIn,
    ReusableStrategyIn,
    ReusableStrategyOut,
)
from account_svc.tables import ReusableStrategy

PAGE = 1000  # followers recorded and announced at a time
SUBJECT = "strategy"
FOLLOW_ACTION_PREFIX = "follow-strategy:"  # a follower's audit record when a version moves it


async def put_strategy(
    uow: UnitOfWork, tenant: str, actor: str, strategy_id: str, body: ReusableStrategyIn
) -> ReusableStrategyOut:
    """Create or change the tenant's strategy (checked as an account's strategy is); a change
    of its sleeves or range is a new version, carried to every account following it."""
    session = uow.session
    account_repo = PostgresAccountRepository(session)
    strategy = Strategy.model_validate(body.model_dump(exclude={"name"}))
    await service.check_strategy(account_repo, tenant, strategy, "")  # an account's rules
    doc = strategy.model_dump(mode="json")
    row = await repo.get_strategy(session, tenant, strategy_id, for_update=True)
    now = datetime.now(UTC)
    if row is None:
        row = ReusableStrategy(
            tenant=tenant,
            strategy_id=strategy_id,
            name=body.name,
            version=1,
            strategy=doc,
            updated_by=actor,
            updated_at=now,
        )
        await repo.save(session, row)
        await account_repo.append_audit(
            tenant, [AuditEntry(actor, "create", SUBJECT, strategy_id, None, _doc_of(row))]
        )
        return await _out(session, row)
    moved = Strategy.model_validate(row.strategy) != strategy  # by value: 0.60 is 0.6
    if not moved and row.name == body.name:
        return await _out(session, row)  # the same again: no new version
    before, previous = _doc_of(row), row.strategy
    if moved:
        row.strategy = doc
    row.name, row.updated_by, row.updated_at = body.name, actor, now
    row.version += 1
    await repo.save(session, row)
    await account_repo.append_audit(
        tenant, [AuditEntry(actor, "update", SUBJECT, strategy_id, before, _doc_of(row))]
    )
    if moved:
        await repo.carry_to_followers(session, tenant, strategy_id, row.version, doc, now)
        await _record_and_announce(uow, tenant, actor, row, previous)
    return await _out(session, row)


async def get_strategy(session: AsyncSession, tenant: str, strategy_id: str) -> ReusableStrategyOut:
    """The tenant's strategy with how many accounts follow it."""
    row = await repo.get_strategy(session, tenant, strategy_id)
    if row is None:
        raise NotFound(f"no strategy {strategy_id}")
    return await _out(session, row)


async def list_strategies(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[ReusableStrategyOut]:
    """A page of the tenant's strategies, by id, with their followers."""
    rows = await repo.list_strategies(session, tenant, limit, offset)
    followers = await repo.follower_counts(session, tenant, [r.strategy_id for r in rows])
    return [_view(r, followers.get(r.strategy_id, 0)) for r in rows]


async def set_account_strategy(
    uow: UnitOfWork,
    accounts: AccountRepository,
    tenant: str,
    account_id: str,
    body: AccountStrategyIn,
    *,
    actor: str,
) -> Strategy:
    """Make the account a UMA following a reusable strategy (`strategy_id`), or its own
    sleeves (it then follows none)."""
    given = body.model_fields_set
    if body.strategy_id is not None:
        extra = sorted(given & {"sleeves", "rebalance_range", "interior_pct"})
        if extra:
            raise InvalidInput(
                "an account follows a strategy as it is: give strategy_id or sleeves, not both",
                [FieldProblem(f, "not with strategy_id") for f in extra],
            )
        row = await repo.get_strategy(uow.session, tenant, body.strategy_id, for_share=True)
        if row is None:
            raise InvalidInput(
                f"unknown strategy {body.strategy_id}",
                [
                    FieldProblem(
                        "strategy_id",
                        f"unknown strategy {body.strategy_id}: PUT /strategies/"
                        f"{body.strategy_id} first",
                    )
                ],
            )
        strategy = Strategy.model_validate(row.strategy)
        result = await service.set_strategy(
            uow, accounts, tenant, account_id, strategy, actor=actor
        )
        await repo.follow(uow.session, tenant, account_id, row.strategy_id, row.version)
        return result
    if body.sleeves is None:
        raise InvalidInput(
            "give the account's sleeves, or the strategy_id of a strategy to follow",
            [FieldProblem("sleeves", "required (or strategy_id)")],
        )
    strategy = Strategy(
        sleeves=body.sleeves, rebalance_range=body.rebalance_range, interior_pct=body.interior_pct
    )
    result = await service.set_strategy(uow, accounts, tenant, account_id, strategy, actor=actor)
    await repo.unfollow(uow.session, account_id)
    return result


async def clear_account_strategy(
    uow: UnitOfWork, accounts: AccountRepository, tenant: str, account_id: str, *, actor: str
) -> AccountOut:
    """The account stops being a UMA (and follows no strategy)."""
    result = await service.clear_strategy(uow, accounts, tenant, account_id, actor=actor)
    await repo.unfollow(uow.session, account_id)
    return result


async def _record_and_announce(
    uow: UnitOfWork,
    tenant: str,
    actor: str,
    row: ReusableStrategy,
    previous: dict[str, Any],
) -> None:
    """An audit record and an account-changed for every follower, a page at a time."""
    account_repo = PostgresAccountRepository(uow.session)
    action = f"{FOLLOW_ACTION_PREFIX}{row.strategy_id}@{row.version}"
    before, after = {"strategy": previous}, {"strategy": row.strategy}
    last = ""
    while page := await repo.followers_page(uow.session, tenant, row.strategy_id, last, PAGE):
        entries = [AuditEntry(actor, action, "account", a.account_id, before, after) for a in page]
        await account_repo.append_audit(tenant, entries)
        await service.announce_accounts(uow, account_repo, page)
        await uow.flush_events()
        last = page[-1].account_id


def _doc_of(row: ReusableStrategy) -> dict[str, Any]:
    return {"name": row.name, "version": row.version, "strategy": row.strategy}


async def _out(session: AsyncSession, row: ReusableStrategy) -> ReusableStrategyOut:
    followers = await repo.follower_counts(session, row.tenant, [row.strategy_id])
    return _view(row, followers.get(row.strategy_id, 0))


def _view(row: ReusableStrategy, followers: int) -> ReusableStrategyOut:
    strategy = Strategy.model_validate(row.strategy)
    return ReusableStrategyOut(
        strategy_id=row.strategy_id,
        name=row.name,
        version=row.version,
        sleeves=strategy.sleeves,
        rebalance_range=strategy.rebalance_range,
        interior_pct=strategy.interior_pct,
        followers=followers,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
    )
