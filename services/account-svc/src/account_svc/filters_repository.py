"""The SQL of filters: conditions compiled to SQL (bound parameters only), the accounts a
filter selects, filters stored, proposals routed and approved in bulk."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Numeric,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    literal,
    not_,
    or_,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.filter_conditions import (
    Condition,
    attribute_name,
    exact_number,
    field_spec,
)
from account_svc.tables import Account, Filter, Proposal

_ACCOUNTS = Account.__table__  # type: ignore[attr-defined]
_PROPOSALS = Proposal.__table__  # type: ignore[attr-defined]
PROPOSAL_FIELD_PREFIX = "proposal."


def _proposal_field(p: Any, name: str) -> ColumnElement[Any]:
    """A proposal field as SQL over the columns `p` (the proposals table's or an alias's)."""
    columns: dict[str, ColumnElement[Any]] = {
        "status": p.status,
        "account_value": p.account_value,
        "cash_before": p.cash_before,
        "turnover_percent": p.turnover_percent,
        "estimated_tax": p.estimated_tax,
        "drift_percent": p.drift_before_percent,
        "trade_count": p.trade_count if "trade_count" in p else func.jsonb_array_length(p.trades),
        "trade_value": p.buy_value + p.sell_value,
    }
    return columns[name]


def _value(kind: str, value: Any) -> Any:
    if kind in ("number", "integer"):
        number = exact_number(value)
        if number is None:
            raise ValueError(f"not a number: {value!r}")
        return int(number) if kind == "integer" else number
    return value


def condition_sql(condition: Condition, a: Any, p: Any) -> ColumnElement[bool]:
    """One validated condition as SQL over account columns `a` and proposal columns `p`."""
    spec = field_spec(condition.field)
    if spec is None:
        raise ValueError(f"unknown field {condition.field}")
    if spec.kind == "attribute":
        name = attribute_name(condition.field)
        assert name is not None
        return _attribute_sql(a.attributes, name, condition)
    if condition.field.startswith(PROPOSAL_FIELD_PREFIX):
        column = _proposal_field(p, condition.field.removeprefix(PROPOSAL_FIELD_PREFIX))
    else:
        column = a[condition.field]
    op = condition.op
    if op == "exists":
        return column.is_not(None)
    if op == "not_exists":
        return column.is_(None)
    if op in ("in", "not_in"):
        values = [_value(spec.kind, v) for v in condition.value]
        if op == "in":
            return column.in_(values)
        return or_(column.is_(None), column.not_in(values))
    value = _value(spec.kind, condition.value)
    comparisons = {
        "eq": lambda: column == value,
        "ne": lambda: column.is_distinct_from(value),
        "gt": lambda: column > value,
        "gte": lambda: column >= value,
        "lt": lambda: column < value,
        "lte": lambda: column <= value,
    }
    return comparisons[op]()


def _attribute_sql(attributes: Any, name: str, condition: Condition) -> ColumnElement[bool]:
    """An attribute's test: equality on its JSON value (text, number or boolean; `@>` so a
    GIN index serves it), ordering on numbers only, presence by key."""
    op, value = condition.op, condition.value
    if op == "exists":
        return attributes.has_key(name)
    if op == "not_exists":
        return not_(attributes.has_key(name))
    if op in ("eq", "ne", "in", "not_in"):
        values = value if op in ("in", "not_in") else [value]
        held = or_(*(attributes.contains({name: v}) for v in values))
        return held if op in ("eq", "in") else not_(held)
    element = attributes[name]
    number = case(
        (func.jsonb_typeof(element) == "number", element.astext.cast(Numeric)), else_=None
    )
    bound = exact_number(value)
    comparisons = {
        "gt": lambda: number > bound,
        "gte": lambda: number >= bound,
        "lt": lambda: number < bound,
        "lte": lambda: number <= bound,
    }
    return comparisons[op]()


def conditions_sql(conditions: Sequence[Condition], a: Any, p: Any) -> ColumnElement[bool]:
    """All the conditions (none: true) over account columns `a` and proposal columns `p`."""
    if not conditions:
        return true()
    return and_(*(condition_sql(c, a, p) for c in conditions))


def _tests_proposal(conditions: Sequence[Condition]) -> bool:
    return any(c.field.startswith(PROPOSAL_FIELD_PREFIX) for c in conditions)


def latest_proposal_of(account_id: ColumnElement[Any]) -> Any:
    """The latest proposal of the account (a LATERAL subquery: one index probe per account)."""
    return (
        select(_PROPOSALS)
        .where(_PROPOSALS.c.account_id == account_id)
        .order_by(_PROPOSALS.c.received_at.desc(), _PROPOSALS.c.proposal_id.desc())
        .limit(1)
        .lateral("latest_proposal")
    )


def accounts_selected(tenant: str, conditions: Sequence[Condition]) -> Select[Any]:
    """The ids of the tenant's accounts for which every condition holds, over the account and
    its latest proposal (an alias of accounts: usable as a subquery of a query on accounts)."""
    a = _ACCOUNTS.alias("selected_account")
    source: Any = a
    p: Any = None
    if _tests_proposal(conditions):
        latest = latest_proposal_of(a.c.account_id)
        source = a.outerjoin(latest, true())
        p = latest.c
    return (
        select(a.c.account_id)
        .select_from(source)
        .where(a.c.tenant == tenant, conditions_sql(conditions, a.c, p))
    )


# --- filters stored ---------------------------------------------------------------------------


async def get_filter(
    session: AsyncSession, tenant: str, filter_id: str, *, for_update: bool = False
) -> Filter | None:
    """The tenant's filter (None when unknown or another tenant's)."""
    stmt = select(Filter).where(Filter.tenant == tenant, Filter.filter_id == filter_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_filters(
    session: AsyncSession,
    tenant: str,
    *,
    for_update: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[Filter]:
    """The tenant's filters in evaluation order (all of them, or a page)."""
    stmt = (
        select(Filter)
        .where(Filter.tenant == tenant)
        .order_by(col(Filter.position), col(Filter.filter_id))
        .limit(limit)
        .offset(offset)
    )
    if for_update:
        stmt = stmt.with_for_update()
    return list(await session.exec(stmt))


async def next_position(session: AsyncSession, tenant: str) -> int:
    """The position after the tenant's last filter."""
    stmt = select(func.coalesce(func.max(Filter.position), -1) + 1).where(Filter.tenant == tenant)
    return int((await session.exec(stmt)).one())


async def save_filter(session: AsyncSession, row: Filter) -> None:
    session.add(row)
    await session.flush()


async def delete_filter(session: AsyncSession, tenant: str, filter_id: str) -> None:
    await session.execute(
        delete(Filter).where(col(Filter.tenant) == tenant, col(Filter.filter_id) == filter_id)
    )


async def set_positions(session: AsyncSession, tenant: str, filter_ids: Sequence[str]) -> None:
    """Give the tenant's filters the positions of their ids' order, in one statement."""
    ids = bindparam("filter_ids", list(filter_ids), type_=ARRAY(String))
    order = func.array_position(ids, Filter.filter_id) - 1
    await session.execute(
        update(Filter)
        .where(col(Filter.tenant) == tenant, col(Filter.filter_id) == any_(ids))
        .values(position=order)
    )


async def enabled_filters(session: AsyncSession, tenants: Sequence[str]) -> list[Filter]:
    """The enabled filters of the tenants, each tenant's in evaluation order."""
    if not tenants:
        return []
    stmt = (
        select(Filter)
        .where(col(Filter.tenant).in_(tenants), col(Filter.enabled))
        .order_by(col(Filter.tenant), col(Filter.position), col(Filter.filter_id))
    )
    return list(await session.exec(stmt))


async def selected_accounts_page(
    session: AsyncSession, tenant: str, conditions: Sequence[Condition], limit: int, offset: int
) -> tuple[list[Account], int]:
    """A page of the accounts the conditions select now, by id, and how many they select."""
    selected = accounts_selected(tenant, conditions)
    page = (
        select(Account)
        .where(col(Account.account_id).in_(selected), Account.tenant == tenant)
        .order_by(col(Account.account_id))
        .limit(limit)
        .offset(offset)
    )
    total = select(func.count()).select_from(selected.subquery())
    return list(await session.exec(page)), int((await session.exec(total)).one())


# --- routing ----------------------------------------------------------------------------------


_ROUTED_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("proposal_id", String),
    ("account_id", String),
    ("status", String),
    ("account_value", Numeric),
    ("cash_before", Numeric),
    ("buy_value", Numeric),
    ("sell_value", Numeric),
    ("turnover_percent", Numeric),
    ("estimated_tax", Numeric),
    ("drift_before_percent", Numeric),
    ("trade_count", Integer),
)


def _proposals_given(proposals: Sequence[Proposal]) -> Any:
    """The proposals as rows of SQL (one array parameter per column, unnested together)."""
    arrays = []
    for name, type_ in _ROUTED_COLUMNS:
        values = [len(p.trades) if name == "trade_count" else getattr(p, name) for p in proposals]
        arrays.append(bindparam(f"routed_{name}", values, type_=ARRAY(type_)))
    names = (name for name, _ in _ROUTED_COLUMNS)
    return func.unnest(*arrays).table_valued(*names).render_derived(name="routed")


async def first_matching_filters(
    session: AsyncSession, proposals: Sequence[Proposal], filters: Sequence[Filter]
) -> dict[str, int]:
    """For each of the proposals (not stored yet), the index in `filters` of the first one
    (in that order) of its account's tenant whose conditions hold over the account and the
    proposal; one statement for them all. Proposals no filter selects are absent."""
    if not proposals or not filters:
        return {}
    a = _ACCOUNTS.c
    given = _proposals_given(proposals)
    whens = [
        (
            and_(
                a.tenant == f.tenant,
                conditions_sql([Condition.model_validate(c) for c in f.conditions], a, given.c),
            ),
            literal(i),
        )
        for i, f in enumerate(filters)
    ]
    chosen = case(*whens, else_=None).label("filter_index")
    stmt = select(given.c.proposal_id, chosen).select_from(
        given.join(_ACCOUNTS, a.account_id == given.c.account_id)
    )
    rows = await session.execute(stmt)
    return {proposal_id: index for proposal_id, index in rows if index is not None}


async def suspend_accounts(
    session: AsyncSession, account_ids: Sequence[str], now: datetime
) -> list[Account]:
    """Suspend those of the accounts that are active, in one statement; returns them as they
    are now (suspended)."""
    if not account_ids:
        return []
    ids = bindparam("suspended_ids", sorted(set(account_ids)), type_=ARRAY(String))
    stmt = (
        update(Account)
        .where(col(Account.account_id) == any_(ids), col(Account.status) == "active")
        .values(status="suspended", updated_at=now)
        .returning(Account)
        .execution_options(synchronize_session=False)
    )
    return list((await session.execute(stmt)).scalars())


# --- bulk approval ----------------------------------------------------------------------------


async def proposal_states(
    session: AsyncSession, tenant: str, proposal_ids: Sequence[str]
) -> dict[str, tuple[str, str, str | None]]:
    """(status, account status, decision note) of those of the proposals of the tenant's
    accounts, locked for update (unknown or another tenant's: absent)."""
    ids = bindparam("state_ids", list(proposal_ids), type_=ARRAY(String))
    stmt = (
        select(Proposal.proposal_id, Proposal.status, Account.status, Proposal.decision_note)
        .join(Account, col(Account.account_id) == col(Proposal.account_id))
        .where(col(Proposal.proposal_id) == any_(ids), Account.tenant == tenant)
        .with_for_update(of=Proposal)
    )
    rows = await session.execute(stmt)
    return {pid: (status, account_status, note) for pid, status, account_status, note in rows}


async def pending_latest_proposals(
    session: AsyncSession, tenant: str, conditions: Sequence[Condition]
) -> dict[str, tuple[str, str, str | None]]:
    """(status, account status, decision note) of the pending latest proposals of the
    accounts the conditions select, locked for update."""
    selected = accounts_selected(tenant, conditions).subquery("selected")
    newer = _PROPOSALS.alias("newer")
    is_latest = not_(
        select(newer.c.proposal_id)
        .where(
            newer.c.account_id == Proposal.account_id,
            or_(
                newer.c.received_at > Proposal.received_at,
                and_(
                    newer.c.received_at == Proposal.received_at,
                    newer.c.proposal_id > Proposal.proposal_id,
                ),
            ),
        )
        .exists()
    )
    stmt = (
        select(Proposal.proposal_id, Proposal.status, Account.status, Proposal.decision_note)
        .join(Account, col(Account.account_id) == col(Proposal.account_id))
        .join(selected, selected.c.account_id == col(Proposal.account_id))
        .where(Account.tenant == tenant, Proposal.status == "pending", is_latest)
        .order_by(col(Proposal.proposal_id))
        .with_for_update(of=Proposal)
    )
    rows = await session.execute(stmt)
    return {pid: (status, account_status, note) for pid, status, account_status, note in rows}


async def approve_proposals(
    session: AsyncSession, proposal_ids: Sequence[str], actor: str, note: str | None, now: datetime
) -> list[Proposal]:
    """Approve the pending ones of the proposals in one statement; returns them approved."""
    ids = bindparam("approved_ids", list(proposal_ids), type_=ARRAY(String))
    stmt = (
        update(Proposal)
        .where(col(Proposal.proposal_id) == any_(ids), col(Proposal.status) == "pending")
        .values(status="approved", decided_by=actor, decided_at=now, decision_note=note)
        .returning(*_PROPOSALS.c)
    )
    # plain rows made into detached proposals: the session keeps none of them
    return [Proposal.model_validate(row._mapping) for row in await session.execute(stmt)]


class PostgresProposalRouter:
    """ports.ProposalRouter on the service's schema, in the transaction of `session`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def enabled_filters(self, tenants: Sequence[str]) -> list[Filter]:
        return await enabled_filters(self.session, tenants)

    async def first_matching_filters(
        self, proposals: Sequence[Proposal], filters: Sequence[Filter]
    ) -> dict[str, int]:
        return await first_matching_filters(self.session, proposals, filters)

    async def suspend_accounts(self, account_ids: Sequence[str], now: datetime) -> list[Account]:
        return await suspend_accounts(self.session, account_ids, now)
