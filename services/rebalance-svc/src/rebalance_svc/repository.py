"""All of rebalance-svc's SQL."""

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from rebalance_svc.tables import Account, Cash, Holding, Model, Run, Scenario, Security


async def upsert_securities(session: AsyncSession, rows: Sequence[dict[str, object]]) -> None:
    stmt = insert(Security).values(list(rows))
    stmt = stmt.on_conflict_do_update(
        index_elements=[Security.symbol],
        set_={
            c: stmt.excluded[c] for c in ("asset_class", "sector", "price", "fractional_eligible")
        },
    )
    await session.execute(stmt)


async def prices(session: AsyncSession) -> dict[str, Decimal]:
    result = await session.exec(select(col(Security.symbol), col(Security.price)))
    return dict(result.all())


async def get_model(session: AsyncSession, model_id: str) -> Model | None:
    return await session.get(Model, model_id)


async def save(session: AsyncSession, row: Model | Account | Run) -> None:
    session.add(row)
    await session.flush()


async def upsert_account(session: AsyncSession, account: Account) -> None:
    stmt = insert(Account).values(account.model_dump())
    stmt = stmt.on_conflict_do_update(
        index_elements=[Account.account_id],
        set_={c: stmt.excluded[c] for c in ("tenant", "model_id", "status")},
    )
    await session.execute(stmt)


async def accounts_following(session: AsyncSession, model_id: str) -> list[Account]:
    result = await session.exec(
        select(Account).where(Account.model_id == model_id).order_by(col(Account.account_id))
    )
    return list(result)


async def replace_holdings(
    session: AsyncSession, account_id: str, cash: Decimal, positions: dict[str, Decimal]
) -> None:
    await session.execute(delete(Holding).where(col(Holding.account_id) == account_id))
    if positions:
        await session.execute(
            insert(Holding).values(
                [
                    {"account_id": account_id, "symbol": s, "quantity": q}
                    for s, q in positions.items()
                ]
            )
        )
    stmt = insert(Cash).values(account_id=account_id, amount=cash, updated_at=func.now())
    stmt = stmt.on_conflict_do_update(
        index_elements=[Cash.account_id],
        set_={"amount": stmt.excluded.amount, "updated_at": stmt.excluded.updated_at},
    )
    await session.execute(stmt)


async def books_of(
    session: AsyncSession, account_ids: Sequence[str]
) -> tuple[dict[str, Decimal], dict[str, dict[str, Decimal]]]:
    """Cash and holdings of the given accounts; accounts never reconciled have no cash row."""
    cash_rows = await session.exec(
        select(col(Cash.account_id), col(Cash.amount)).where(col(Cash.account_id).in_(account_ids))
    )
    holding_rows = await session.exec(
        select(col(Holding.account_id), col(Holding.symbol), col(Holding.quantity)).where(
            col(Holding.account_id).in_(account_ids)
        )
    )
    holdings: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for account_id, symbol, quantity in holding_rows:
        holdings[account_id][symbol] = quantity
    return dict(cash_rows.all()), holdings


async def get_run(session: AsyncSession, run_id: str) -> Run | None:
    return await session.get(Run, run_id)


async def list_runs(
    session: AsyncSession, model_id: str | None, model_version: int | None, limit: int
) -> list[Run]:
    stmt = select(Run)
    if model_id:
        stmt = stmt.where(Run.model_id == model_id)
    if model_version is not None:
        stmt = stmt.where(Run.model_version == model_version)
    return list(await session.exec(stmt.order_by(col(Run.started_at).desc()).limit(limit)))


async def read_model_counts(session: AsyncSession) -> dict[str, int]:
    async def count(table: type) -> int:
        return int((await session.exec(select(func.count()).select_from(table))).one())

    return {
        "securities": await count(Security),
        "models": await count(Model),
        "accounts": await count(Account),
        "accounts_with_holdings": await count(Cash),
        "runs": await count(Run),
    }


async def all_securities(session: AsyncSession) -> list[Security]:
    return list(await session.exec(select(Security)))


async def add_scenarios(
    session: AsyncSession, run_id: str, scenarios: dict[str, dict[str, object]]
) -> None:
    if scenarios:
        await session.execute(
            insert(Scenario).values(
                [{"run_id": run_id, "account_id": a, "scenario": s} for a, s in scenarios.items()]
            )
        )


async def get_scenario(session: AsyncSession, run_id: str, account_id: str) -> Scenario | None:
    return await session.get(Scenario, (run_id, account_id))
