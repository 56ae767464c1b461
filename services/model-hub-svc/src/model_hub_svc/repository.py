"""All of model-hub-svc's SQL."""

from collections.abc import Sequence

from sqlalchemy import ColumnElement, any_, literal
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc.tables import EquivalenceSet, Model, ModelTarget, ModelVersion, Security


async def upsert_securities(session: AsyncSession, securities: Sequence[Security]) -> None:
    rows = [s.model_dump() for s in securities]
    stmt = insert(Security).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Security.symbol],
        set_={
            c: stmt.excluded[c]
            for c in (
                "name",
                "asset_class",
                "sector",
                "price",
                "fractional_eligible",
                "cusip",
                "updated_at",
            )
        },
    )
    await session.execute(stmt)


async def get_security(session: AsyncSession, symbol: str) -> Security | None:
    return await session.get(Security, symbol)


async def list_securities(session: AsyncSession, limit: int, offset: int) -> list[Security]:
    result = await session.exec(
        select(Security).order_by(col(Security.symbol)).limit(limit).offset(offset)
    )
    return list(result)


async def known_symbols(session: AsyncSession, symbols: Sequence[str]) -> set[str]:
    result = await session.exec(select(Security.symbol).where(col(Security.symbol).in_(symbols)))
    return set(result)


async def get_model(
    session: AsyncSession, model_id: str, *, for_update: bool = False
) -> Model | None:
    stmt = select(Model).where(Model.model_id == model_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_models(session: AsyncSession) -> list[Model]:
    return list(await session.exec(select(Model).order_by(col(Model.model_id))))


async def targets_of(session: AsyncSession, model_id: str, version: int) -> list[ModelTarget]:
    result = await session.exec(
        select(ModelTarget)
        .where(ModelTarget.model_id == model_id, ModelTarget.version == version)
        .order_by(col(ModelTarget.symbol))
    )
    return list(result)


async def get_version(session: AsyncSession, model_id: str, version: int) -> ModelVersion | None:
    return await session.get(ModelVersion, (model_id, version))


async def add_version(
    session: AsyncSession, model: Model, version: ModelVersion, targets: Sequence[ModelTarget]
) -> None:
    session.add(model)
    session.add(version)
    session.add_all(targets)
    await session.flush()


def _members() -> ColumnElement[list[str]]:
    return EquivalenceSet.__table__.c.members  # type: ignore[attr-defined]


async def get_equivalence_set(
    session: AsyncSession, set_id: str, *, for_update: bool = False
) -> EquivalenceSet | None:
    stmt = select(EquivalenceSet).where(EquivalenceSet.set_id == set_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_equivalence_sets(
    session: AsyncSession, include_removed: bool
) -> list[EquivalenceSet]:
    stmt = select(EquivalenceSet).order_by(col(EquivalenceSet.set_id))
    if not include_removed:
        stmt = stmt.where(col(EquivalenceSet.removed).is_(False))
    return list(await session.exec(stmt))


async def equivalence_sets_holding(
    session: AsyncSession, symbols: Sequence[str], *, except_set: str | None = None
) -> list[EquivalenceSet]:
    """Live sets with any of these members (a symbol may be in only one)."""
    stmt = select(EquivalenceSet).where(
        col(EquivalenceSet.removed).is_(False),
        _members().op("&&")(postgresql.array(list(symbols))),
    )
    if except_set is not None:
        stmt = stmt.where(EquivalenceSet.set_id != except_set)
    return list(await session.exec(stmt))


async def sets_with_member(
    session: AsyncSession, symbol: str, *, for_update: bool = False
) -> list[EquivalenceSet]:
    stmt = (
        select(EquivalenceSet)
        .where(col(EquivalenceSet.removed).is_(False), literal(symbol) == any_(_members()))
        .order_by(col(EquivalenceSet.set_id))
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list(await session.exec(stmt))


async def save_equivalence_set(session: AsyncSession, row: EquivalenceSet) -> None:
    session.add(row)
    await session.flush()


async def models_holding(session: AsyncSession, symbol: str) -> list[Model]:
    """Models whose current version has a target in `symbol`, locked for a new version."""
    stmt = (
        select(Model)
        .join(
            ModelTarget,
            (col(ModelTarget.model_id) == col(Model.model_id))
            & (col(ModelTarget.version) == col(Model.current_version)),
        )
        .where(ModelTarget.symbol == symbol)
        .order_by(col(Model.model_id))
        .with_for_update(of=Model)
    )
    return list(await session.exec(stmt))
