"""All of model-hub-svc's SQL."""

import json
from collections.abc import Sequence
from decimal import Decimal

from ballast_common import audit, tenancy
from ballast_common.audit import AuditEntry
from ballast_common.book_loads import StagedLoad, value_sql
from ballast_common.bulk import driver_connection, insert_columns
from ballast_common.contracts.book_files import PRICES, SECURITIES
from sqlalchemy import ColumnElement, Integer, String, any_, func, literal, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc.tables import (
    Allocation,
    AllocationVersion,
    EquivalenceSet,
    Model,
    ModelTarget,
    ModelVersion,
    Security,
)


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
            # a cascade may have moved its current version by a statement of its own
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
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

    async def taken_model_ids(self, model_ids: Sequence[str]) -> set[str]:
        """Which of these ids any tenant has (ids are unique platform-wide); one statement."""
        stmt = select(Model.model_id).where(col(Model.model_id).in_(list(model_ids)))
        async with tenancy.across_tenants(self.session):
            return set(await self.session.exec(stmt))

    async def add_models(self, models: Sequence[Model]) -> None:
        """New models in one statement (their versions follow with add_versions)."""
        await insert_columns(
            self.session,
            Model.__table__,  # type: ignore[attr-defined]
            {
                c: [getattr(m, c) for m in models]
                for c in ("model_id", "tenant", "name", "current_version", "updated_at")
            },
        )

    async def ancestors_of(self, tenant: str, model_id: str) -> list[str]:
        """The model's parent, its parent's parent, ... (by their current versions), nearest
        first; one recursive statement (it stops at a cycle, should one be stored)."""
        rows = await self.session.execute(
            text(
                "WITH RECURSIVE up(model_id, depth, path) AS ("
                " SELECT v.parent_model_id, 1, ARRAY[m.model_id]::text[] FROM models m"
                " JOIN model_versions v ON v.model_id = m.model_id"
                " AND v.version = m.current_version"
                " WHERE m.model_id = :model_id AND m.tenant = :tenant"
                " AND v.parent_model_id IS NOT NULL"
                " UNION ALL"
                " SELECT v.parent_model_id, up.depth + 1, up.path || up.model_id::text FROM up"
                " JOIN models m ON m.model_id = up.model_id AND m.tenant = :tenant"
                " JOIN model_versions v ON v.model_id = m.model_id"
                " AND v.version = m.current_version"
                " WHERE v.parent_model_id IS NOT NULL AND NOT up.model_id = ANY(up.path))"
                " SELECT model_id FROM up ORDER BY depth"
            ),
            {"model_id": model_id, "tenant": tenant},
        )
        return [r[0] for r in rows]

    async def children_of(
        self, tenant: str, parent_ids: Sequence[str]
    ) -> list[tuple[Model, ModelVersion]]:
        """The tenant's models whose current version derives from one of `parent_ids`, with
        that version, by id; their rows locked for a new version. One statement."""
        stmt = (
            select(Model, ModelVersion)
            .join(
                ModelVersion,
                (col(ModelVersion.model_id) == col(Model.model_id))
                & (col(ModelVersion.version) == col(Model.current_version)),
            )
            .where(Model.tenant == tenant, col(ModelVersion.parent_model_id).in_(parent_ids))
            .order_by(col(Model.model_id))
            .with_for_update(of=Model)
            .execution_options(populate_existing=True)
        )
        return [(m, v) for m, v in await self.session.exec(stmt)]

    async def targets_of_versions(self, keys: Sequence[tuple[str, int]]) -> list[ModelTarget]:
        """The targets of these (model id, version) pairs, by model and symbol; one statement
        (callers name versions of models they read for their tenant)."""
        if not keys:
            return []
        # a join on the pairs, probed by the primary key: a row-value IN list of a thousand
        # children's pairs took the planner to a scan of every version's targets (~1 s)
        wanted = (
            select(
                func.unnest(literal([m for m, _ in keys], postgresql.ARRAY(String))).label("m"),
                func.unnest(literal([v for _, v in keys], postgresql.ARRAY(Integer))).label("v"),
            )
        ).subquery()
        stmt = (
            select(ModelTarget)
            .join(
                wanted,
                (col(ModelTarget.model_id) == wanted.c.m)
                & (col(ModelTarget.version) == wanted.c.v),
            )
            .order_by(col(ModelTarget.model_id), col(ModelTarget.symbol))
        )
        return list(await self.session.exec(stmt))

    async def add_versions(
        self, versions: Sequence[ModelVersion], targets: Sequence[ModelTarget]
    ) -> None:
        """New versions of many models at once (each its model's next): one INSERT of the
        versions, one of their targets, one UPDATE of the models' current version."""
        if not versions:
            return
        await self.session.flush()  # the ORM's pending changes go first
        version_columns = (
            "model_id", "version", "changed_by", "created_at", "kind", "swap_back",
            "parent_model_id", "parent_version", "overrides", "limits",
        )  # fmt: skip
        await insert_columns(
            self.session,
            ModelVersion.__table__,  # type: ignore[attr-defined]
            {c: [_driver_value(getattr(v, c)) for v in versions] for c in version_columns},
        )
        target_columns = (
            "model_id", "version", "symbol", "weight", "shares", "hold", "replacement",
            "band_kind", "band_width", "tax_loss_proxies", "factor_exposures",
        )  # fmt: skip
        await insert_columns(
            self.session,
            ModelTarget.__table__,  # type: ignore[attr-defined]
            {c: [_driver_value(getattr(t, c)) for t in targets] for c in target_columns},
        )
        connection = await driver_connection(self.session)
        await connection.execute(
            "UPDATE models m SET current_version = n.version, updated_at = now() "
            "FROM unnest($1::text[], $2::int[]) AS n(model_id, version) "
            "WHERE m.model_id = n.model_id",
            [v.model_id for v in versions],
            [v.version for v in versions],
        )

    async def allocation_weights(
        self, tenant: str, allocation_ids: Sequence[str]
    ) -> dict[str, dict[str, Decimal]]:
        """The current asset-class weights of these allocations of the tenant; one statement."""
        if not allocation_ids:
            return {}
        stmt = (
            select(AllocationVersion.allocation_id, AllocationVersion.weights)
            .join(
                Allocation,
                (col(Allocation.allocation_id) == col(AllocationVersion.allocation_id))
                & (col(Allocation.current_version) == col(AllocationVersion.version)),
            )
            .where(
                Allocation.tenant == tenant,
                col(Allocation.allocation_id).in_(list(allocation_ids)),
            )
        )
        rows = await self.session.exec(stmt)
        return {a: {c: Decimal(w) for c, w in weights.items()} for a, weights in rows}

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


def _driver_value(value: object) -> object:
    # insert_columns takes json and jsonb as text
    return json.dumps(value) if isinstance(value, dict | list) else value


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


# --- asset allocations ------------------------------------------------------------------------


async def get_allocation(
    session: AsyncSession, tenant: str, allocation_id: str, *, for_update: bool = False
) -> Allocation | None:
    stmt = select(Allocation).where(
        Allocation.allocation_id == allocation_id, Allocation.tenant == tenant
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def allocation_id_taken(session: AsyncSession, allocation_id: str) -> bool:
    """Whether any tenant has an allocation of this id (ids are unique platform-wide)."""
    stmt = select(literal(1)).where(Allocation.allocation_id == allocation_id)
    async with tenancy.across_tenants(session):
        return (await session.exec(stmt)).first() is not None


async def get_allocation_version(
    session: AsyncSession, tenant: str, allocation_id: str, version: int
) -> AllocationVersion | None:
    stmt = (
        select(AllocationVersion)
        .join(Allocation, col(Allocation.allocation_id) == col(AllocationVersion.allocation_id))
        .where(
            AllocationVersion.allocation_id == allocation_id,
            AllocationVersion.version == version,
            Allocation.tenant == tenant,
        )
    )
    return (await session.exec(stmt)).first()


async def add_allocation_version(
    session: AsyncSession, allocation: Allocation, version: AllocationVersion
) -> None:
    session.add(allocation)
    session.add(version)
    await session.flush()


async def list_allocations(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[tuple[Allocation, AllocationVersion]]:
    """The tenant's allocations with their current versions, by id."""
    stmt = (
        select(Allocation, AllocationVersion)
        .join(
            AllocationVersion,
            (col(Allocation.allocation_id) == col(AllocationVersion.allocation_id))
            & (col(Allocation.current_version) == col(AllocationVersion.version)),
        )
        .where(Allocation.tenant == tenant)
        .order_by(col(Allocation.allocation_id))
        .limit(limit)
        .offset(offset)
    )
    return [(a, v) for a, v in await session.exec(stmt)]


async def known_asset_classes(session: AsyncSession, classes: Sequence[str]) -> set[str]:
    """Which of these asset classes a security of the master has."""
    stmt = select(Security.asset_class).where(col(Security.asset_class).in_(list(classes)))
    return set(await session.exec(stmt.distinct()))


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
