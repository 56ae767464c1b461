"""All of account-svc's SQL."""

from collections.abc import Sequence

from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.tables import Account, KnownModel, Proposal


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
    if model_id:
        stmt = stmt.where(Account.model_id == model_id)
    stmt = stmt.order_by(col(Account.account_id)).limit(limit).offset(offset)
    return list(await session.exec(stmt))


async def add_accounts(session: AsyncSession, accounts: Sequence[Account]) -> None:
    session.add_all(accounts)
    await session.flush()


async def save(session: AsyncSession, row: Account | Proposal) -> None:
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
