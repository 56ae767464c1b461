"""All of model-hub-svc's SQL."""

from collections.abc import Sequence

from ballast_common import audit, tenancy
from ballast_common.audit import AuditEntry
from ballast_common.book_loads import StagedLoad, value_sql
from ballast_common.contracts.book_files import PRICES, SECURITIES
from sqlalchemy import ColumnElement, any_, literal, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc.tables import EquivalenceSet, Model, ModelTarget, ModelVersion, Security


class PostgresModelHubRepository:
    """The repository port (ports.ModelHubRepository) on the service's schema, in the
    transaction of `session`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def upsert_securities(self, securities: Sequence[Security]) -> None:
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
        await self.session.execute(stmt)

    async def get_security(self, symbol: str) -> Security | None:
        return await self.session.get(Security, symbol)

    async def get_securities(self, symbols: Sequence[str]) -> list[Security]:
        result = await self.session.exec(select(Security).where(col(Security.symbol).in_(symbols)))
        return list(result)

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        await audit.append(self.session, tenant, entries)

    async def known_symbols(self, symbols: Sequence[str]) -> set[str]:
        result = await self.session.exec(
            select(Security.symbol).where(col(Security.symbol).in_(symbols))
        )
        return set(result)

    async def get_model(
        self, tenant: str, model_id: str, *, for_update: bool = False
    ) -> Model | None:
        stmt = select(Model).where(Model.model_id == model_id, Model.tenant == tenant)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.exec(stmt)).first()

    async def model_id_taken(self, model_id: str) -> bool:
        """Whether any tenant has a model of this id (ids are unique platform-wide)."""
        stmt = select(literal(1)).where(Model.model_id == model_id)
        async with tenancy.across_tenants(self.session):
            return (await self.session.exec(stmt)).first() is not None

    async def get_version(self, tenant: str, model_id: str, version: int) -> ModelVersion | None:
        stmt = (
            select(ModelVersion)
            .join(Model, col(Model.model_id) == col(ModelVersion.model_id))
            .where(
                ModelVersion.model_id == model_id,
                ModelVersion.version == version,
                Model.tenant == tenant,
            )
        )
        return (await self.session.exec(stmt)).first()

    async def targets_of(self, tenant: str, model_id: str, version: int) -> list[ModelTarget]:
        result = await self.session.exec(
            select(ModelTarget)
            .join(Model, col(Model.model_id) == col(ModelTarget.model_id))
            .where(
                ModelTarget.model_id == model_id,
                ModelTarget.version == version,
                Model.tenant == tenant,
            )
            .order_by(col(ModelTarget.symbol))
        )
        return list(result)

    async def add_version(
        self, model: Model, version: ModelVersion, targets: Sequence[ModelTarget]
    ) -> None:
        self.session.add(model)
        self.session.add(version)
        self.session.add_all(targets)
        await self.session.flush()

    async def models_holding(self, symbol: str) -> list[Model]:
        """Models of every tenant whose current version has a target in `symbol`, locked for a
        new version (corporate actions apply platform-wide)."""
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
        return list(await self.session.exec(stmt))

    async def get_equivalence_set(
        self, set_id: str, *, for_update: bool = False
    ) -> EquivalenceSet | None:
        stmt = select(EquivalenceSet).where(EquivalenceSet.set_id == set_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.exec(stmt)).first()

    async def list_equivalence_sets(
        self, include_removed: bool, limit: int, offset: int
    ) -> list[EquivalenceSet]:
        """The platform's equivalence sets, by id."""
        stmt = select(EquivalenceSet).order_by(col(EquivalenceSet.set_id))
        if not include_removed:
            stmt = stmt.where(col(EquivalenceSet.removed).is_(False))
        return list(await self.session.exec(stmt.limit(limit).offset(offset)))

    async def equivalence_sets_holding(
        self, symbols: Sequence[str], *, except_set: str | None = None
    ) -> list[EquivalenceSet]:
        """Live sets with any of these members (a symbol may be in only one)."""
        stmt = select(EquivalenceSet).where(
            col(EquivalenceSet.removed).is_(False),
            _members().op("&&")(postgresql.array(list(symbols))),
        )
        if except_set is not None:
            stmt = stmt.where(EquivalenceSet.set_id != except_set)
        return list(await self.session.exec(stmt))

    async def sets_with_member(
        self, symbol: str, *, for_update: bool = False
    ) -> list[EquivalenceSet]:
        """Live sets with the member, by id (for corporate actions)."""
        stmt = (
            select(EquivalenceSet)
            .where(col(EquivalenceSet.removed).is_(False), literal(symbol) == any_(_members()))
            .order_by(col(EquivalenceSet.set_id))
        )
        if for_update:
            stmt = stmt.with_for_update()
        return list(await self.session.exec(stmt))

    async def save_equivalence_set(self, row: EquivalenceSet) -> None:
        self.session.add(row)
        await self.session.flush()


def _members() -> ColumnElement[list[str]]:
    return EquivalenceSet.__table__.c.members  # type: ignore[attr-defined]


async def list_securities(session: AsyncSession, limit: int, offset: int) -> list[Security]:
    """Securities of the platform-wide master, by symbol."""
    result = await session.exec(
        select(Security).order_by(col(Security.symbol)).limit(limit).offset(offset)
    )
    return list(result)


async def list_models(session: AsyncSession, tenant: str, limit: int, offset: int) -> list[Model]:
    """The tenant's models, by id."""
    stmt = (
        select(Model)
        .where(Model.tenant == tenant)
        .order_by(col(Model.model_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


# --- book loads: securities.csv and prices.csv, staged (see ballast_common.book_loads) ---------


async def unknown_priced_symbols(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[int, str]]:
    """(line, symbol) of prices.csv rows whose security is neither in the master nor in
    securities.csv."""
    prices = staged.table("prices.csv")
    known_new = (
        f'OR EXISTS (SELECT 1 FROM "{staged.table("securities.csv")}" n '
        "WHERE btrim(n.symbol) = btrim(p.symbol))"
        if staged.has("securities.csv")
        else ""
    )
    rows = await session.execute(
        text(
            f'SELECT p.line, btrim(p.symbol) FROM "{prices}" p WHERE NOT (EXISTS (SELECT 1 FROM '
            f"securities s WHERE s.symbol = btrim(p.symbol)) {known_new}) ORDER BY p.line"
        )
    )
    return [(int(line), symbol) for line, symbol in rows]


async def unpriced_new_symbols(session: AsyncSession, staged: StagedLoad) -> list[tuple[int, str]]:
    """(line, symbol) of securities.csv rows new to the master without a row in prices.csv."""
    if not staged.has("securities.csv"):
        return []
    rows = await session.execute(
        text(
            f'SELECT n.line, btrim(n.symbol) FROM "{staged.table("securities.csv")}" n '
            "WHERE NOT EXISTS (SELECT 1 FROM securities s WHERE s.symbol = btrim(n.symbol)) "
            f'AND NOT EXISTS (SELECT 1 FROM "{staged.table("prices.csv")}" p '
            "WHERE btrim(p.symbol) = btrim(n.symbol)) ORDER BY n.line"
        )
    )
    return [(int(line), symbol) for line, symbol in rows]


async def load_securities(session: AsyncSession, staged: StagedLoad) -> list[str]:
    """Add or update the staged securities (with their staged price, or the price they have)
    and the prices of the others; returns the symbols changed."""
    prices = staged.table("prices.csv")
    price = value_sql(PRICES, "price", "p")
    changed: list[str] = []
    if staged.has("securities.csv"):
        new = staged.table("securities.csv")
        fractional = (
            value_sql(SECURITIES, "fractional_eligible", "n")
            if "fractional_eligible" in staged.columns["securities.csv"]
            else "NULL"
        )
        cusip = (
            value_sql(SECURITIES, "cusip", "n")
            if "cusip" in staged.columns["securities.csv"]
            else "NULL"
        )
        rows = await session.execute(
            text(
                "INSERT INTO securities (symbol, name, asset_class, sector, price, "
                "fractional_eligible, cusip, updated_at) "
                f"SELECT btrim(n.symbol), {value_sql(SECURITIES, 'name', 'n')}, "
                f"{value_sql(SECURITIES, 'asset_class', 'n')}, "
                f"{value_sql(SECURITIES, 'sector', 'n')}, "
                f"coalesce({price}, s.price), coalesce({fractional}, false), {cusip}, now() "
                f'FROM "{new}" n LEFT JOIN "{prices}" p ON btrim(p.symbol) = btrim(n.symbol) '
                "LEFT JOIN securities s ON s.symbol = btrim(n.symbol) "
                "ON CONFLICT (symbol) DO UPDATE SET name = excluded.name, "
                "asset_class = excluded.asset_class, sector = excluded.sector, "
                "price = excluded.price, fractional_eligible = excluded.fractional_eligible, "
                "cusip = coalesce(excluded.cusip, securities.cusip), updated_at = now() "
                "RETURNING symbol"
            )
        )
        changed += [r[0] for r in rows]
    rows = await session.execute(
        text(
            f'UPDATE securities s SET price = {price}, updated_at = now() FROM "{prices}" p '
            f"WHERE s.symbol = btrim(p.symbol) AND s.price <> {price} "
            + ("AND s.symbol <> ALL(:done) " if changed else "")
            + "RETURNING s.symbol"
        ),
        {"done": changed} if changed else {},
    )
    return changed + [r[0] for r in rows]


async def securities_page(session: AsyncSession, symbols: Sequence[str]) -> list[Security]:
    result = await session.exec(
        select(Security)
        .where(col(Security.symbol).in_(list(symbols)))
        .order_by(col(Security.symbol))
    )
    return list(result)
