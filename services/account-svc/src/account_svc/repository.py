"""All of account-svc's SQL."""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from ballast_common import audit, tenancy
from ballast_common.audit import AuditEntry
from ballast_common.book_loads import MAX_PROBLEMS, StagedLoad, value_sql
from ballast_common.contracts.book_files import ACCOUNTS, HOUSEHOLDS, RESTRICTIONS, SLEEVES, CsvFile
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    String,
    and_,
    any_,
    bindparam,
    column,
    literal_column,
    or_,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.tables import (
    Account,
    Household,
    KnownModel,
    Proposal,
    RestrictionChange,
    SecurityList,
)

PROPOSALS_PER_INSERT = 1000  # 23 columns each: under Postgres's 32,767 parameters
HELD_ACTIONS = ("review", "suspend")  # routing actions that leave a proposal to a person


class PostgresAccountRepository:
    """The repository port (ports.AccountRepository) on the service's schema, in the
    transaction of `session`. Reads of a tenant are scoped to it in SQL."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        await audit.append(self.session, tenant, entries)

    async def get_account(
        self, tenant: str, account_id: str, *, for_update: bool = False
    ) -> Account | None:
        """The tenant's account (None when unknown or another tenant's)."""
        stmt = select(Account).where(Account.account_id == account_id, Account.tenant == tenant)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.exec(stmt)).first()

    async def existing_account_ids(self, ids: Sequence[str]) -> set[str]:
        """Those of `ids` any tenant has (account ids are unique platform-wide)."""
        async with tenancy.across_tenants(self.session):
            result = await self.session.exec(
                select(Account.account_id).where(col(Account.account_id).in_(ids))
            )
            return set(result)

    async def households_of_other_tenants(
        self, tenant: str, household_ids: Sequence[str]
    ) -> set[str]:
        """Of the ids, households known under another tenant (in households or by accounts)."""
        if not household_ids:
            return set()
        # one array parameter, not one per id: a batch of 5,000 binds one value (4x faster)
        ids = bindparam("household_ids", list(household_ids), type_=ARRAY(String))
        known = select(Household.household_id).where(
            col(Household.household_id) == any_(ids), Household.tenant != tenant
        )
        held = select(Account.household_id).where(
            col(Account.household_id) == any_(ids), Account.tenant != tenant
        )
        async with tenancy.across_tenants(self.session):
            return set((await self.session.execute(known.union(held))).scalars())

    async def add_accounts(self, accounts: Sequence[Account]) -> None:
        self.session.add_all(accounts)
        await self.session.flush()

    async def save(self, row: Account | Proposal | SecurityList) -> None:
        self.session.add(row)
        await self.session.flush()

    async def upsert_known_model(self, tenant: str, model_id: str, name: str, version: int) -> None:
        """Remember a model's newest version and its tenant."""
        stmt = insert(KnownModel).values(
            model_id=model_id, tenant=tenant, name=name, version=version
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[KnownModel.model_id],
            set_={
                "tenant": stmt.excluded.tenant,
                "name": stmt.excluded.name,
                "version": stmt.excluded.version,
            },
            where=KnownModel.version < stmt.excluded.version,
        )
        await self.session.execute(stmt)

    async def known_model_ids(self, tenant: str, ids: Sequence[str]) -> set[str]:
        """Of the ids, the tenant's known models."""
        result = await self.session.exec(
            select(KnownModel.model_id).where(
                col(KnownModel.model_id).in_(ids), KnownModel.tenant == tenant
            )
        )
        return set(result)

    async def security_lists(self, tenant: str, ids: Sequence[str]) -> dict[str, list[str]]:
        """Members of the tenant's lists of the given ids (unknown ids are absent)."""
        if not ids:
            return {}
        result = await self.session.exec(
            select(SecurityList.list_id, SecurityList.symbols).where(
                SecurityList.tenant == tenant, col(SecurityList.list_id).in_(ids)
            )
        )
        return {list_id: list(symbols) for list_id, symbols in result}

    async def approval_policies(self, account_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """Status and auto_approve of the given accounts (unknown ids are absent)."""
        if not account_ids:
            return {}
        result = await self.session.exec(
            select(Account.account_id, Account.status, Account.auto_approve).where(
                col(Account.account_id).in_(account_ids)
            )
        )
        return {account_id: (status, auto_approve) for account_id, status, auto_approve in result}

    async def insert_new_proposals(self, proposals: Sequence[Proposal]) -> set[str]:
        """Insert the proposals not recorded yet, in one multi-row statement per thousand; returns
        the ids of those inserted."""
        inserted: set[str] = set()
        for start in range(0, len(proposals), PROPOSALS_PER_INSERT):
            rows = [p.model_dump() for p in proposals[start : start + PROPOSALS_PER_INSERT]]
            stmt = (
                insert(Proposal)
                .values(rows)
                .on_conflict_do_nothing(index_elements=[Proposal.proposal_id])
                .returning(col(Proposal.proposal_id))
            )
            inserted.update((await self.session.execute(stmt)).scalars())
        return inserted

    async def get_proposal(
        self, tenant: str, proposal_id: str, *, for_update: bool = False
    ) -> Proposal | None:
        """A proposal of the tenant's accounts (None when unknown or another tenant's)."""
        stmt = select(Proposal).where(
            Proposal.proposal_id == proposal_id, _of_tenants_account(tenant)
        )
        if for_update:
            stmt = stmt.with_for_update(of=Proposal)
        return (await self.session.exec(stmt)).first()


def _of_tenants_account(tenant: str) -> ColumnElement[bool]:
    """A proposal's account is the tenant's (proposals have no tenant of their own: the
    account's is the one truth, and its primary key makes this an index probe)."""
    return (
        select(Account.account_id)
        .where(Account.account_id == Proposal.account_id, Account.tenant == tenant)
        .exists()
    )


async def list_accounts(
    session: AsyncSession,
    tenant: str,
    *,
    household_id: str | None,
    model_id: str | None,
    limit: int,
    offset: int,
) -> list[Account]:
    """A page of the tenant's accounts, by id."""
    stmt = select(Account).where(Account.tenant == tenant)
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


async def known_models(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[KnownModel]:
    """The tenant's models announced by model-hub-svc, by id."""
    stmt = (
        select(KnownModel)
        .where(KnownModel.tenant == tenant)
        .order_by(col(KnownModel.model_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def list_proposals(
    session: AsyncSession,
    tenant: str,
    *,
    status: str | None,
    account_id: str | None,
    limit: int,
    offset: int,
    routed_by: str | None = None,
    held: bool = False,
) -> list[Proposal]:
    """A page of the proposals of the tenant's accounts, oldest first (held: pending ones a
    filter held for review or suspension)."""
    stmt = select(Proposal).where(_of_tenants_account(tenant))
    if status:
        stmt = stmt.where(Proposal.status == status)
    if account_id:
        stmt = stmt.where(Proposal.account_id == account_id)
    if routed_by:
        stmt = stmt.where(Proposal.routed_by == routed_by)
    if held:
        stmt = stmt.where(
            Proposal.status == "pending", col(Proposal.routing_action).in_(HELD_ACTIONS)
        )
    stmt = stmt.order_by(col(Proposal.received_at), col(Proposal.proposal_id))
    stmt = stmt.limit(limit).offset(offset)
    return list(await session.exec(stmt))


async def accounts_restricting_security(session: AsyncSession, symbol: str) -> list[Account]:
    """Accounts of every tenant with a restriction of scope security on the symbol, locked
    for update."""
    stmt = (
        select(Account)
        .where(col(Account.restrictions).contains([{"scope": "security", "value": symbol}]))
        .order_by(col(Account.account_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def security_lists_holding(session: AsyncSession, symbol: str) -> list[SecurityList]:
    """Named lists of every tenant that have the symbol as a member, locked for update."""
    stmt = (
        select(SecurityList)
        .where(col(SecurityList.symbols).contains([symbol]))
        .order_by(col(SecurityList.list_id))
        .with_for_update()
    )
    return list(await session.exec(stmt))


async def accounts_restricted_by_lists(
    session: AsyncSession, lists: Sequence[tuple[str, str]]
) -> list[Account]:
    """Accounts with a restriction on any of the (tenant, list id) lists (an account names
    its own tenant's lists), locked for update."""
    if not lists:
        return []
    stmt = (
        select(Account)
        .where(
            or_(
                *(
                    and_(
                        col(Account.tenant) == tenant,
                        col(Account.restrictions).contains([{"scope": "list", "value": list_id}]),
                    )
                    for tenant, list_id in lists
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


async def restriction_history(
    session: AsyncSession, tenant: str, account_id: str, limit: int, offset: int
) -> list[RestrictionChange]:
    """The tenant's account's restriction changes, oldest first."""
    stmt = (
        select(RestrictionChange)
        .where(RestrictionChange.tenant == tenant, RestrictionChange.account_id == account_id)
        .order_by(col(RestrictionChange.change_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def list_history(
    session: AsyncSession, tenant: str, list_id: str, limit: int, offset: int
) -> list[RestrictionChange]:
    """The tenant's security list's member changes, oldest first."""
    stmt = (
        select(RestrictionChange)
        .where(RestrictionChange.tenant == tenant, RestrictionChange.list_id == list_id)
        .order_by(col(RestrictionChange.change_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def get_security_list(
    session: AsyncSession, tenant: str, list_id: str, *, for_update: bool = False
) -> SecurityList | None:
    """The tenant's list (None when unknown or another tenant's)."""
    stmt = select(SecurityList).where(
        SecurityList.tenant == tenant, SecurityList.list_id == list_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_security_lists(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[SecurityList]:
    """The tenant's security lists, by id."""
    stmt = (
        select(SecurityList)
        .where(SecurityList.tenant == tenant)
        .order_by(col(SecurityList.list_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


# --- book loads: staged files (see ballast_common.book_loads) ---------------------------------

_NULL_OF_KIND = {"decimal": "NULL::numeric", "bool": "NULL::boolean", "date": "NULL::date"}
_LIMIT = f"LIMIT {MAX_PROBLEMS}"


class _Staged:
    """One staged file in SQL: `FROM` text, and each column's typed value (NULL if the file
    left the optional column out)."""

    def __init__(self, staged: StagedLoad, file: CsvFile, alias: str) -> None:
        self.file, self.alias = file, alias
        self.present = staged.has(file.name)
        self.table = f'"{staged.table(file.name)}" {alias}' if self.present else ""
        self._columns = staged.columns.get(file.name, ())

    def __call__(self, column: str) -> str:
        if column in self._columns:
            return value_sql(self.file, column, self.alias)
        return _NULL_OF_KIND.get(self.file.column(column).kind, "NULL::text")

    @property
    def line(self) -> str:
        return f"{self.alias}.line"


def _files(staged: StagedLoad) -> tuple[_Staged, _Staged, _Staged, _Staged]:
    return (
        _Staged(staged, HOUSEHOLDS, "h"),
        _Staged(staged, ACCOUNTS, "a"),
        _Staged(staged, SLEEVES, "s"),
        _Staged(staged, RESTRICTIONS, "r"),
    )


def _of(staged: StagedLoad, name: str) -> _Staged:
    return {f.file.name: f for f in _files(staged)}[name]


async def _rows(session: AsyncSession, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await session.execute(text(sql), params)]


_STAGED_KEYS = (
    (HOUSEHOLDS, ("household_id",)),
    (ACCOUNTS, ("account_id", "household_id")),
    (SLEEVES, ("account_id",)),
    (RESTRICTIONS, ("account_id",)),
)


async def plan_for_staged_files(session: AsyncSession, staged: StagedLoad) -> None:
    """Index the staged files' keys (the typed values the checks join on) and analyze them,
    so the planner knows how many accounts and households there are instead of guessing
    (a guess of 200 groups made a nested loop of 100,000 x 10,000 rows); and no JIT in this
    transaction: compiling the big set-based statements costs seconds, more than it saves."""
    await session.execute(text("SET LOCAL jit = off"))
    for file, keys in _STAGED_KEYS:
        if not staged.has(file.name):
            continue
        table = staged.table(file.name)
        for key in keys:
            await session.execute(
                text(
                    f'CREATE INDEX IF NOT EXISTS "{table}_{key}" ON "{table}" '
                    f"(({value_sql(file, key)}))"
                )
            )
        await session.execute(text(f'ANALYZE "{table}"'))


async def staged_accounts_existing(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[Any, ...]]:
    """(line, account_id) of staged accounts that exist already."""
    _, a, _, _ = _files(staged)
    return await _rows(
        session,
        f"SELECT {a.line}, x.account_id FROM {a.table} JOIN accounts x "
        f"ON x.account_id = {a('account_id')} ORDER BY 1 {_LIMIT}",
    )


async def staged_account_households(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[Any, ...]]:
    """(line, household_id, account's tenant, household's tenant or None when the household is
    neither staged nor known) of staged accounts whose household is unknown or another
    tenant's. A known household is in `households` or has accounts already."""
    h, a, _, _ = _files(staged)
    account_tenant = f"COALESCE({a('tenant')}, CAST(:tenant AS text))"
    return await _rows(
        session,
        f"""
        WITH wanted AS (SELECT DISTINCT {a("household_id")} AS household_id FROM {a.table}),
        owners AS (
            SELECT w.household_id, COALESCE(
                CASE WHEN {h.line} IS NOT NULL
                     THEN COALESCE({h("tenant")}, CAST(:tenant AS text)) END,
                k.tenant,
                (SELECT x.tenant FROM accounts x
                 WHERE x.household_id = w.household_id LIMIT 1)) AS tenant
            FROM wanted w
            LEFT JOIN {h.table} ON {h("household_id")} = w.household_id
            LEFT JOIN households k ON k.household_id = w.household_id
        )
        SELECT {a.line}, o.household_id, {account_tenant}, o.tenant
        FROM {a.table} JOIN owners o ON o.household_id = {a("household_id")}
        WHERE o.tenant IS DISTINCT FROM {account_tenant}
        ORDER BY 1 {_LIMIT}
        """,
        tenant=staged.tenant,
    )


async def staged_households_of_other_tenants(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[Any, ...]]:
    """(line, household_id, staged tenant, known tenant) of staged households known already
    under another tenant."""
    h, _, _, _ = _files(staged)
    async with tenancy.across_tenants(session):
        return await _rows(
            session,
            f"""
            SELECT line, household_id, tenant, known FROM (
                SELECT {h.line}, {h("household_id")} AS household_id,
                       COALESCE({h("tenant")}, CAST(:tenant AS text)) AS tenant,
                       COALESCE(k.tenant, (SELECT x.tenant FROM accounts x
                                           WHERE x.household_id = {h("household_id")} LIMIT 1))
                           AS known
                FROM {h.table} LEFT JOIN households k ON k.household_id = {h("household_id")}
            ) t WHERE known <> tenant ORDER BY 1 {_LIMIT}
            """,
            tenant=staged.tenant,
        )


async def staged_unknown_models(
    session: AsyncSession, staged: StagedLoad, file: str
) -> list[tuple[Any, ...]]:
    """(line, model_id) of staged rows naming a model account-svc does not know of the load's
    tenant."""
    f = _of(staged, file)
    if not f.present:
        return []
    return await _rows(
        session,
        f"SELECT {f.line}, {f('model_id')} FROM {f.table} WHERE {f('model_id')} IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM known_models k WHERE k.model_id = {f('model_id')} "
        f"AND k.tenant = CAST(:tenant AS text)) ORDER BY 1 {_LIMIT}",
        tenant=staged.tenant,
    )


async def staged_account_strategies(
    session: AsyncSession, staged: StagedLoad, interior: str
) -> list[tuple[Any, ...]]:
    """(line, account_id, model_id, sleeves, rebalance_range, interior_pct) of staged accounts
    whose model, sleeves and UMA settings do not fit together: a model and sleeves, or
    neither; UMA settings without sleeves; interior_pct with another range."""
    _, a, s, _ = _files(staged)
    rebalance_range, interior_pct = a("rebalance_range"), a("interior_pct")
    sleeves = (
        f"LEFT JOIN (SELECT {s('account_id')} AS account_id, count(*) AS n FROM {s.table} "
        f"GROUP BY 1) u ON u.account_id = {a('account_id')}"
        if s.present
        else "LEFT JOIN (SELECT NULL::text AS account_id, NULL::bigint AS n) u ON false"
    )
    return await _rows(
        session,
        f"""
        SELECT {a.line}, {a("account_id")}, {a("model_id")}, COALESCE(u.n, 0),
               {rebalance_range}, {interior_pct}
        FROM {a.table} {sleeves}
        WHERE ({a("model_id")} IS NOT NULL) = (u.n IS NOT NULL)
           OR (u.n IS NULL AND num_nonnulls({rebalance_range}, {interior_pct}) > 0)
           OR ({interior_pct} IS NOT NULL
               AND {rebalance_range} IS DISTINCT FROM CAST(:interior AS text))
        ORDER BY 1 {_LIMIT}
        """,
        interior=interior,
    )


async def staged_values_above(
    session: AsyncSession,
    staged: StagedLoad,
    file: str,
    column: str,
    bound: Decimal,
    *,
    inclusive: bool = False,
) -> list[tuple[Any, ...]]:
    """(line, value) of staged values above the bound (or at it, when inclusive)."""
    f = _of(staged, file)
    if not f.present or column not in staged.columns[file]:
        return []
    op = ">=" if inclusive else ">"
    return await _rows(
        session,
        f"SELECT {f.line}, {f(column)} FROM {f.table} "
        f"WHERE {f(column)} {op} CAST(:bound AS numeric) ORDER BY 1 {_LIMIT}",
        bound=bound,
    )


async def staged_values_not_matching(
    session: AsyncSession, staged: StagedLoad, file: str, column: str, pattern: str
) -> list[tuple[Any, ...]]:
    """(line, value) of staged values that do not match the regular expression."""
    f = _of(staged, file)
    if not f.present or column not in staged.columns[file]:
        return []
    return await _rows(
        session,
        f"SELECT {f.line}, {f(column)} FROM {f.table} "
        f"WHERE {f(column)} !~ CAST(:pattern AS text) ORDER BY 1 {_LIMIT}",
        pattern=pattern,
    )


async def staged_rows_of_unstaged_accounts(
    session: AsyncSession, staged: StagedLoad, file: str
) -> list[tuple[Any, ...]]:
    """(line, account_id, whether the account exists already) of staged rows of a file whose
    account is not in accounts.csv."""
    _, a, _, _ = _files(staged)
    f = _of(staged, file)
    if not f.present:
        return []
    account = f("account_id")
    return await _rows(
        session,
        f"SELECT {f.line}, {account}, "
        f"EXISTS (SELECT 1 FROM accounts x WHERE x.account_id = {account}) FROM {f.table} "
        f"WHERE NOT EXISTS (SELECT 1 FROM {a.table} WHERE {a('account_id')} = {account}) "
        f"ORDER BY 1 {_LIMIT}",
    )


async def staged_sleeve_sets(
    session: AsyncSession, staged: StagedLoad, tolerance: Decimal, most: int
) -> list[tuple[Any, ...]]:
    """(first line, account_id, total weight, sleeves) of staged UMAs whose weights do not
    add up to 1 within the tolerance, or with more than `most` sleeves."""
    _, _, s, _ = _files(staged)
    if not s.present:
        return []
    return await _rows(
        session,
        f"SELECT min({s.line}), {s('account_id')}, sum({s('weight')}), count(*) "
        f"FROM {s.table} GROUP BY 2 "
        f"HAVING abs(sum({s('weight')}) - 1) > CAST(:tolerance AS numeric) "
        f"OR count(*) > CAST(:most AS int) ORDER BY 1 {_LIMIT}",
        tolerance=tolerance,
        most=most,
    )


async def staged_repeated_sleeve_models(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[Any, ...]]:
    """(line, account_id, model_id) of staged sleeves on a model the UMA has a sleeve on
    already (an earlier line)."""
    _, _, s, _ = _files(staged)
    if not s.present:
        return []
    return await _rows(
        session,
        f"""
        SELECT line, account_id, model_id FROM (
            SELECT {s.line}, {s("account_id")} AS account_id, {s("model_id")} AS model_id,
                   min({s.line}) OVER (PARTITION BY {s("account_id")}, {s("model_id")}) AS first
            FROM {s.table}) d
        WHERE line <> first ORDER BY 1 {_LIMIT}
        """,
    )


async def staged_bands_outside(
    session: AsyncSession,
    staged: StagedLoad,
    bounds: Callable[[str, Any, Any], tuple[Any, Any]],
    kinds: Sequence[str],
    default_kind: str,
    eps: Decimal,
) -> list[tuple[Any, ...]]:
    """(line, kind, width, weight, low, high) of staged sleeves whose band, by `bounds(kind,
    width, target)` applied to the staged columns, reaches below 0 or above 1 (± eps)."""
    _, _, s, _ = _files(staged)
    if not s.present:
        return []
    width: ColumnElement[Any] = literal_column(f"({s('band_width')})")
    weight: ColumnElement[Any] = literal_column(f"({s('weight')})")
    kind = f"COALESCE({s('band_kind')}, CAST(:default_kind AS text))"
    low = " ".join(f"WHEN '{k}' THEN {_sql(bounds(k, width, weight)[0])}" for k in kinds)
    high = " ".join(f"WHEN '{k}' THEN {_sql(bounds(k, width, weight)[1])}" for k in kinds)
    return await _rows(
        session,
        f"""
        SELECT line, kind, width, weight, low, high FROM (
            SELECT {s.line}, {kind} AS kind, {s("band_width")} AS width,
                   {s("weight")} AS weight,
                   CASE {kind} {low} END AS low, CASE {kind} {high} END AS high
            FROM {s.table}) b
        WHERE low < -CAST(:eps AS numeric) OR high > 1 + CAST(:eps AS numeric)
        ORDER BY 1 {_LIMIT}
        """,
        default_kind=default_kind,
        eps=eps,
    )


async def staged_unknown_lists(session: AsyncSession, staged: StagedLoad) -> list[tuple[Any, ...]]:
    """(line, list_id) of staged restrictions of scope list naming no security list of the
    load's tenant."""
    _, _, _, r = _files(staged)
    if not r.present:
        return []
    return await _rows(
        session,
        f"SELECT {r.line}, {r('value')} FROM {r.table} WHERE {r('scope')} = 'list' "
        f"AND NOT EXISTS (SELECT 1 FROM security_lists l WHERE l.list_id = {r('value')} "
        f"AND l.tenant = CAST(:tenant AS text)) ORDER BY 1 {_LIMIT}",
        tenant=staged.tenant,
    )


async def staged_rows_of_another_tenant(
    session: AsyncSession, staged: StagedLoad, file: str
) -> list[tuple[Any, ...]]:
    """(line, tenant) of staged rows that name a tenant other than the load's (the caller's)."""
    f = _of(staged, file)
    if not f.present or "tenant" not in staged.columns[file]:
        return []
    return await _rows(
        session,
        f"SELECT {f.line}, {f('tenant')} FROM {f.table} WHERE {f('tenant')} IS NOT NULL "
        f"AND {f('tenant')} <> CAST(:tenant AS text) ORDER BY 1 {_LIMIT}",
        tenant=staged.tenant,
    )


async def staged_restrictions_not_on_symbols(
    session: AsyncSession, staged: StagedLoad, pattern: str
) -> list[tuple[Any, ...]]:
    """(line, value) of staged restrictions of scope security whose value does not match the
    symbol pattern."""
    _, _, _, r = _files(staged)
    if not r.present:
        return []
    return await _rows(
        session,
        f"SELECT {r.line}, {r('value')} FROM {r.table} WHERE {r('scope')} = 'security' "
        f"AND {r('value')} !~ CAST(:pattern AS text) ORDER BY 1 {_LIMIT}",
        pattern=pattern,
    )


async def staged_restriction_counts(
    session: AsyncSession, staged: StagedLoad, most: int
) -> list[tuple[Any, ...]]:
    """(first line, account_id, restrictions) of staged accounts with more than `most`."""
    _, _, _, r = _files(staged)
    if not r.present:
        return []
    return await _rows(
        session,
        f"SELECT min({r.line}), {r('account_id')}, count(*) FROM {r.table} GROUP BY 2 "
        f"HAVING count(*) > CAST(:most AS int) ORDER BY 1 {_LIMIT}",
        most=most,
    )


async def staged_repeated_restrictions(
    session: AsyncSession, staged: StagedLoad
) -> list[tuple[Any, ...]]:
    """(line, kind, scope, value, first line) of staged restrictions repeating an earlier one
    of the account once read (kinds and scopes in any case, values trimmed)."""
    _, _, _, r = _files(staged)
    if not r.present:
        return []
    key = f"{r('account_id')}, {r('kind')}, {r('scope')}, {r('value')}"
    return await _rows(
        session,
        f"""
        SELECT line, kind, scope, value, first FROM (
            SELECT {r.line}, {r("kind")} AS kind, {r("scope")} AS scope, {r("value")} AS value,
                   min({r.line}) OVER (PARTITION BY {key}) AS first
            FROM {r.table}) d
        WHERE line <> first ORDER BY 1 {_LIMIT}
        """,
    )


async def insert_staged_households(session: AsyncSession, staged: StagedLoad, now: datetime) -> int:
    """Add the staged households (a known one takes the staged name); returns how many."""
    h, _, _, _ = _files(staged)
    result = await session.execute(
        text(
            f"""
            INSERT INTO households (household_id, tenant, name, created_at, updated_at)
            SELECT {h("household_id")}, COALESCE({h("tenant")}, CAST(:tenant AS text)),
                   {h("name")}, :now, :now
            FROM {h.table} ORDER BY {h.line}
            ON CONFLICT (household_id) DO UPDATE
            SET name = EXCLUDED.name, updated_at = EXCLUDED.updated_at
            """
        ),
        {"tenant": staged.tenant, "now": now},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AccountDefaults:
    """What an account gets for a value the files leave empty (the REST bodies' defaults)."""

    status: str
    account_type: str
    auto_approve: bool
    tax_settings: dict[str, Any]  # the whole document, as stored when any tax field is given
    rebalance_range: str
    interior_pct: str
    band_kind: str
    restriction_source: str


async def insert_staged_accounts(
    session: AsyncSession,
    staged: StagedLoad,
    defaults: AccountDefaults,
    set_by: str,
    now: datetime,
) -> tuple[int, int, int]:
    """Add the staged accounts with their settings, tax settings, strategy and restrictions
    built as the documents the REST path stores, in one statement; returns (accounts added,
    UMAs, restrictions). An account that exists already is skipped (not counted)."""
    _, a, s, r = _files(staged)
    ctes: list[str] = []
    joins: list[str] = []
    strategy, restrictions = "NULL::jsonb", "'[]'::jsonb"
    if s.present:
        band = (
            f"jsonb_build_object('kind', COALESCE({s('band_kind')}, "
            f"CAST(:band_kind AS text)), 'width', ({s('band_width')})::text)"
        )
        ctes.append(
            f"""staged_sleeves AS (
                SELECT {s("account_id")} AS account_id, jsonb_agg(jsonb_build_object(
                    'sleeve_id', {s("sleeve_id")}, 'model_id', {s("model_id")},
                    'weight', ({s("weight")})::text, 'band', {band}) ORDER BY {s.line}) AS sleeves
                FROM {s.table} GROUP BY 1)"""
        )
        joins.append(f"LEFT JOIN staged_sleeves sl ON sl.account_id = {a('account_id')}")
        strategy = (
            "CASE WHEN sl.sleeves IS NOT NULL THEN jsonb_build_object('sleeves', sl.sleeves, "
            f"'rebalance_range', COALESCE({a('rebalance_range')}, CAST(:range AS text)), "
            f"'interior_pct', COALESCE(({a('interior_pct')})::text, CAST(:interior_pct AS text)))"
            " END"
        )
    if r.present:
        ctes.append(
            f"""staged_restrictions AS (
                SELECT {r("account_id")} AS account_id, jsonb_agg(jsonb_build_object(
                    'kind', {r("kind")}, 'scope', {r("scope")}, 'value', {r("value")},
                    'source', COALESCE({r("source")}, CAST(:source AS text)),
                    'reason', {r("reason")}, 'set_by', CAST(:set_by AS text),
                    'set_at', CAST(:set_at AS text)) ORDER BY {r.line}) AS docs
                FROM {r.table} GROUP BY 1)"""
        )
        joins.append(f"LEFT JOIN staged_restrictions rs ON rs.account_id = {a('account_id')}")
        restrictions = "COALESCE(rs.docs, '[]'::jsonb)"
    rebalance_settings = (
        "jsonb_strip_nulls(jsonb_build_object("
        f"'min_trade_value', ({a('min_trade_value')})::text, 'fractional', {a('fractional')}, "
        f"'cash_target', ({a('cash_target')})::text, "
        f"'cash_reserve', ({a('cash_reserve')})::text))"
    )
    tax = [
        a(c)
        for c in (
            "relief_method",
            "short_term_rate",
            "long_term_rate",
            "gain_budget",
            "avoid_short_term_gains",
            "harvest",
        )
    ]
    tax_settings = (
        f"CASE WHEN num_nonnulls({', '.join(tax)}) > 0 THEN CAST(:tax AS jsonb) || "
        "jsonb_strip_nulls(jsonb_build_object("
        f"'relief_method', {tax[0]}, 'short_term_rate', ({tax[1]})::text, "
        f"'long_term_rate', ({tax[2]})::text, 'gain_budget', ({tax[3]})::text, "
        f"'avoid_short_term_gains', {tax[4]}, 'harvest', {tax[5]})) END"
    )
    ctes.append(
        f"""inserted AS (
            INSERT INTO accounts (account_id, tenant, household_id, name, account_type,
                model_id, status, auto_approve, rebalance_settings, restrictions, tax_settings,
                strategy, created_at, updated_at)
            SELECT {a("account_id")}, COALESCE({a("tenant")}, CAST(:tenant AS text)),
                {a("household_id")}, {a("name")},
                COALESCE({a("account_type")}, CAST(:account_type AS text)), {a("model_id")},
                CAST(:status AS text),
                COALESCE({a("auto_approve")}, CAST(:auto_approve AS boolean)),
                {rebalance_settings}, {restrictions}, {tax_settings}, {strategy}, :now, :now
            FROM {a.table} {" ".join(joins)}
            ORDER BY {a.line}
            ON CONFLICT (account_id) DO NOTHING
            RETURNING strategy IS NOT NULL AS uma, jsonb_array_length(restrictions) AS n)"""
    )
    row = (
        await session.execute(
            text(
                f"WITH {', '.join(ctes)} SELECT count(*), count(*) FILTER (WHERE uma), "
                "COALESCE(sum(n), 0) FROM inserted"
            ),
            {
                "tenant": staged.tenant,
                "status": defaults.status,
                "account_type": defaults.account_type,
                "auto_approve": defaults.auto_approve,
                "tax": json.dumps(defaults.tax_settings),
                "range": defaults.rebalance_range,
                "interior_pct": defaults.interior_pct,
                "band_kind": defaults.band_kind,
                "source": defaults.restriction_source,
                "set_by": set_by,
                "set_at": now.isoformat(),
                "now": now,
            },
        )
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


_ACCOUNT_COLUMNS = tuple(Account.__table__.columns)  # type: ignore[attr-defined]


async def staged_accounts_page(
    session: AsyncSession, staged: StagedLoad, after_line: int, limit: int
) -> list[Row[Any]]:
    """The accounts of accounts.csv past a line, in file order: rows with `line` and every
    column of accounts (plain rows: the session keeps none of them)."""
    _, a, _, _ = _files(staged)
    names = ", ".join(f"x.{c.name}" for c in _ACCOUNT_COLUMNS)
    stmt = text(
        f"SELECT {a.line}, {names} FROM {a.table} "
        f"JOIN accounts x ON x.account_id = {a('account_id')} "
        f"WHERE {a.line} > :after ORDER BY {a.line} LIMIT :limit"
    ).columns(column("line", BigInteger), *(column(c.name, c.type) for c in _ACCOUNT_COLUMNS))
    return list(await session.execute(stmt, {"after": after_line, "limit": limit}))


def _sql(expression: ColumnElement[Any]) -> str:
    return str(
        expression.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
