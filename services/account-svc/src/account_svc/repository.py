"""All of account-svc's SQL."""

from collections.abc import Sequence

from sqlalchemy import or_
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.tables import Account, KnownModel, Proposal, RestrictionChange, SecurityList


async def get_account(
    session: AsyncSession, account_id: str, *, for_update: bool = False
) -> Account | None:
    stmt = select(Account).where(Account.account_id == account_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def existing_account_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    result = await session.exec(select(Account.account_id).where(col(Account.account_id).in_(ids)))
    return set(result)


async def list_accounts(
    session: AsyncSession,
    *,
    household_id: str | None,
    model_id: str | None,
    limit: int,
    offset: int,
) -> list[Account]:
    stmt = select(Account)
    if household_id:
        stmt = stmt.where(Account.household_id == household_id)
    if model_id:  # an SMA following the model, or a UMA with a sleeve on it
        stmt = stmt.where(
            or_(
                col(Account.model_id) == model_id,
                col(Account.strategy).contains({"sleeves": [{"model_id": model_id}]}),
            )
        )
    stmt = stmt.order_by(col(Account.account_id)).limit(limit).offset(offset)
    return list(await session.exec(stmt))


async def add_accounts(session: AsyncSession, accounts: Sequence[Account]) -> None:
    session.add_all(accounts)
    await session.flush()


async def save(session: AsyncSession, row: Account | Proposal | SecurityList) -> None:
    session.add(row)
    await session.flush()


async def upsert_known_model(session: AsyncSession, model_id: str, name: str, version: int) -> None:
    stmt = insert(KnownModel).values(model_id=model_id, name=name, version=version)
    stmt = stmt.on_conflict_do_update(
        index_elements=[KnownModel.model_id],
        set_={"name": stmt.excluded.name, "version": stmt.excluded.version},
        where=KnownModel.version < stmt.excluded.version,
    )
    await session.execute(stmt)


async def known_model_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    result = await session.exec(
        select(KnownModel.model_id).where(col(KnownModel.model_id).in_(ids))
    )
    return set(result)


async def get_proposal(
    session: AsyncSession, proposal_id: str, *, for_update: bool = False
) -> Proposal | None:
    stmt = select(Proposal).where(Proposal.proposal_id == proposal_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_proposals(
    session: AsyncSession, *, status: str | None, account_id: str | None, limit: int, offset: int
) -> list[Proposal]:
    stmt = select(Proposal)
    if status:
        stmt = stmt.where(Proposal.status == status)
    if account_id:
        stmt = stmt.where(Proposal.account_id == account_id)
    stmt = stmt.order_by(col(Proposal.received_at)).limit(limit).offset(offset)
    return list(await session.exec(stmt))


async def accounts_restricted_by_list(session: AsyncSession, list_id: str) -> list[Account]:
    """Accounts with a restriction on the list, locked for update."""
    stmt = (
        select(Account)
        .where(col(Account.restrictions).contains([{"scope": "list", "value": list_id}]))
        .order_by(col(Account.account_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def accounts_restricting_security(session: AsyncSession, symbol: str) -> list[Account]:
    """Accounts with a restriction of scope security on the symbol, locked for update."""
    stmt = (
        select(Account)
        .where(col(Account.restrictions).contains([{"scope": "security", "value": symbol}]))
        .order_by(col(Account.account_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def security_lists_holding(session: AsyncSession, symbol: str) -> list[SecurityList]:
    """Named lists that have the symbol as a member, locked for update."""
    stmt = (
        select(SecurityList)
        .where(col(SecurityList.symbols).contains([symbol]))
        .order_by(col(SecurityList.list_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def accounts_restricted_by_lists(
    session: AsyncSession, list_ids: Sequence[str]
) -> list[Account]:
    """Accounts with a restriction on any of the lists, locked for update."""
    if not list_ids:
        return []
    stmt = (
        select(Account)
        .where(
            or_(
                *(
                    col(Account.restrictions).contains([{"scope": "list", "value": list_id}])
                    for list_id in list_ids
                )
            )
        )
        .order_by(col(Account.account_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def add_restriction_changes(
    session: AsyncSession, changes: Sequence[RestrictionChange]
) -> None:
    session.add_all(changes)
    await session.flush()


async def restriction_history(session: AsyncSession, account_id: str) -> list[RestrictionChange]:
    stmt = (
        select(RestrictionChange)
        .where(RestrictionChange.account_id == account_id)
        .order_by(col(RestrictionChange.change_id))
    )
    return list(await session.exec(stmt))


async def list_history(session: AsyncSession, list_id: str) -> list[RestrictionChange]:
    stmt = (
        select(RestrictionChange)
        .where(RestrictionChange.list_id == list_id)
        .order_by(col(RestrictionChange.change_id))
    )
    return list(await session.exec(stmt))


async def get_security_list(
    session: AsyncSession, list_id: str, *, for_update: bool = False
) -> SecurityList | None:
    stmt = select(SecurityList).where(SecurityList.list_id == list_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def security_lists(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[str]]:
    """Members of the given lists (unknown ids are absent)."""
    if not ids:
        return {}
    result = await session.exec(
        select(SecurityList.list_id, SecurityList.symbols).where(col(SecurityList.list_id).in_(ids))
    )
    return {list_id: list(symbols) for list_id, symbols in result}


async def list_security_lists(session: AsyncSession) -> list[SecurityList]:
    return list(await session.exec(select(SecurityList).order_by(col(SecurityList.list_id))))
