"""The SQL of bulk changes and of settings history: every statement works on a whole
selection at once (INSERT ... SELECT, UPDATE ... FROM), never account by account."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Row, String, column, literal, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.sql import Select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc.tables import Account, BulkChange, BulkChangeAccount

_ACCOUNT_COLUMNS = tuple(Account.__table__.columns)  # type: ignore[attr-defined]
_JSON_COLUMNS = {c.name for c in _ACCOUNT_COLUMNS if isinstance(c.type, JSONB)}

# (a None of the ORM is stored as JSON null in the JSONB columns strategy and tax_settings,
# a book load's as SQL NULL: jsonb_typeof tells an object from both)
# What each kind of change makes of the columns it touches, over the account `a` (a JSON
# value per column); the parameters are the service's (bulk_changes.py).
_AFTER: dict[str, dict[str, str]] = {
    "add_restriction": {
        "restrictions": "CASE WHEN a.restrictions @> jsonb_build_array(CAST(:key AS jsonb)) "
        "THEN a.restrictions ELSE a.restrictions || jsonb_build_array(CAST(:doc AS jsonb)) END"
    },
    "remove_restriction": {
        "restrictions": "(SELECT COALESCE(jsonb_agg(r.doc ORDER BY r.n), '[]'::jsonb) "
        "FROM jsonb_array_elements(a.restrictions) WITH ORDINALITY r(doc, n) "
        "WHERE NOT r.doc @> CAST(:key AS jsonb))"
    },
    "set_rebalance_settings": {
        "rebalance_settings": "jsonb_strip_nulls(a.rebalance_settings || CAST(:patch AS jsonb))"
    },
    "set_tax_settings": {
        "tax_settings": "CAST(:defaults AS jsonb) || CASE WHEN jsonb_typeof(a.tax_settings) "
        "= 'object' THEN a.tax_settings ELSE '{}'::jsonb END || CAST(:patch AS jsonb)"
    },
    "set_model": {"model_id": "to_jsonb(CAST(:model_id AS text))"},
    "set_status": {"status": "to_jsonb(CAST(:status AS text))"},
    "set_attributes": {
        "attributes": "jsonb_strip_nulls(a.attributes || CAST(:patch AS jsonb))",
        "advisor_id": "CASE WHEN CAST(:set_advisor AS boolean) "
        "THEN to_jsonb(CAST(:advisor_id AS text)) ELSE to_jsonb(a.advisor_id) END",
    },
}


def _problem(condition: str, field: str) -> str:
    return (
        f"CASE WHEN {condition} THEN jsonb_build_array(jsonb_build_object('field', '{field}', "
        "'message', CAST(:message AS text))) ELSE '[]'::jsonb END"
    )


# Why a kind of change cannot apply to an account (at most one problem per kind today).
_PROBLEMS: dict[str, str] = {
    "add_restriction": _problem(
        "NOT a.restrictions @> jsonb_build_array(CAST(:key AS jsonb)) "
        "AND jsonb_array_length(a.restrictions) >= CAST(:most AS int)",
        "restrictions",
    ),
    "set_model": _problem("jsonb_typeof(a.strategy) = 'object'", "model_id"),
    # an opening account becomes active only by its steps (it may be closed)
    "set_status": _problem("a.status = 'opening' AND CAST(:status AS text) <> 'closed'", "status"),
    "set_attributes": _problem(
        "(SELECT count(*) FROM jsonb_object_keys(jsonb_strip_nulls("
        "a.attributes || CAST(:patch AS jsonb)))) > CAST(:most AS int)",
        "attributes",
    ),
}
KINDS = tuple(_AFTER)


def _object(values: dict[str, str]) -> str:
    return "jsonb_build_object(" + ", ".join(f"'{k}', {v}" for k, v in values.items()) + ")"


def accounts_of_ids(tenant: str, account_ids: Sequence[str]) -> Select[Any]:
    """The tenant's accounts among the ids, as a select of account_id."""
    ids = literal(list(account_ids), ARRAY(String))
    return select(Account.account_id).where(
        Account.tenant == tenant, col(Account.account_id) == ids.any_()
    )


def changed_account_ids(bulk_change_id: str) -> Select[Any]:
    """The accounts an applied bulk change changed, as a select of account_id."""
    return select(BulkChangeAccount.account_id).where(
        BulkChangeAccount.bulk_change_id == bulk_change_id,
        col(BulkChangeAccount.exempted_at).is_(None),
        col(BulkChangeAccount.after) != col(BulkChangeAccount.before),
    )


async def unknown_account_ids(
    session: AsyncSession, tenant: str, account_ids: Sequence[str], most: int
) -> list[tuple[int, str]]:
    """(position from 0, id) of the ids that are no account of the tenant, the first `most`."""
    rows = await session.execute(
        text(
            "SELECT u.n - 1, u.id FROM unnest(CAST(:ids AS text[])) WITH ORDINALITY u(id, n) "
            "WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = u.id "
            "AND a.tenant = :tenant) ORDER BY u.n LIMIT :most"
        ),
        {"ids": list(account_ids), "tenant": tenant, "most": most},
    )
    return [(int(n), str(i)) for n, i in rows]


async def add_bulk_change(session: AsyncSession, row: BulkChange) -> None:
    session.add(row)
    await session.flush()


async def get_bulk_change(
    session: AsyncSession, tenant: str, bulk_change_id: str, *, for_update: bool = False
) -> BulkChange | None:
    """The tenant's bulk change (None when unknown or another tenant's)."""
    stmt = select(BulkChange).where(
        BulkChange.tenant == tenant, BulkChange.bulk_change_id == bulk_change_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


async def list_bulk_changes(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[BulkChange]:
    """A page of the tenant's bulk changes, newest first."""
    stmt = (
        select(BulkChange)
        .where(BulkChange.tenant == tenant)
        .order_by(col(BulkChange.created_at).desc(), col(BulkChange.bulk_change_id))
        .limit(limit)
        .offset(offset)
    )
    return list(await session.exec(stmt))


async def freeze_selection(
    session: AsyncSession, bulk_change_id: str, tenant: str, selected: Select[Any]
) -> int:
    """Keep the selected accounts of the tenant with the bulk change (one INSERT ... SELECT);
    returns how many."""
    rows = select(
        literal(bulk_change_id, String),
        Account.account_id,
        Account.tenant,
        Account.updated_at,
    ).where(Account.tenant == tenant, col(Account.account_id).in_(selected))
    stmt = insert(BulkChangeAccount).from_select(
        ["bulk_change_id", "account_id", "tenant", "seen_updated_at"], rows
    )
    result = await session.execute(stmt)
    return int(result.rowcount)  # type: ignore[attr-defined]


async def work_out_outcomes(
    session: AsyncSession,
    bulk_change_id: str,
    kind: str,
    params: dict[str, Any],
    *,
    exempted_too: bool,
) -> None:
    """Store what the change makes of each selected account as it is now (the touched
    columns before and after, and the problems), in one UPDATE ... FROM accounts."""
    after = _AFTER[kind]
    before = {name: f"to_jsonb(a.{name})" for name in after}
    problems = _PROBLEMS.get(kind, "'[]'::jsonb")
    exempted = "" if exempted_too else "AND b.exempted_at IS NULL"
    await session.execute(
        text(
            f"UPDATE bulk_change_accounts b SET before = {_object(before)}, "
            f"after = {_object(after)}, problems = {problems} "
            "FROM accounts a WHERE b.bulk_change_id = :bulk_change_id "
            f"AND a.account_id = b.account_id {exempted}"
        ),
        {"bulk_change_id": bulk_change_id, **params},
    )


@dataclass(frozen=True)
class Counts:
    selected: int = 0
    exempted: int = 0
    changing: int = 0
    unchanged: int = 0
    with_problems: int = 0


async def counts(session: AsyncSession, bulk_change_ids: Sequence[str]) -> dict[str, Counts]:
    """How many accounts each bulk change selected, exempted, changes, leaves as they are,
    and cannot change (one grouped read)."""
    if not bulk_change_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT bulk_change_id, count(*), count(*) FILTER (WHERE exempted_at IS NOT NULL), "
            "count(*) FILTER (WHERE exempted_at IS NULL AND after <> before), "
            "count(*) FILTER (WHERE exempted_at IS NULL AND after = before), "
            "count(*) FILTER (WHERE exempted_at IS NULL AND problems <> '[]'::jsonb) "
            "FROM bulk_change_accounts WHERE bulk_change_id = ANY(CAST(:ids AS text[])) "
            "GROUP BY bulk_change_id"
        ),
        {"ids": list(bulk_change_ids)},
    )
    return {r[0]: Counts(*(int(n) for n in r[1:])) for r in rows}


async def account_outcomes(
    session: AsyncSession,
    bulk_change_id: str,
    *,
    with_problems: bool | None,
    exempted: bool | None,
    limit: int,
    offset: int,
) -> list[BulkChangeAccount]:
    """A page of the bulk change's accounts, by id."""
    stmt = select(BulkChangeAccount).where(BulkChangeAccount.bulk_change_id == bulk_change_id)
    if with_problems is not None:
        has = col(BulkChangeAccount.problems) != literal([], JSONB)
        stmt = stmt.where(has if with_problems else ~has)
    if exempted is not None:
        is_exempt = col(BulkChangeAccount.exempted_at).is_not(None)
        stmt = stmt.where(is_exempt if exempted else ~is_exempt)
    stmt = stmt.order_by(col(BulkChangeAccount.account_id)).limit(limit).offset(offset)
    return list(await session.exec(stmt))


async def get_account_outcome(
    session: AsyncSession, bulk_change_id: str, account_id: str
) -> BulkChangeAccount | None:
    stmt = select(BulkChangeAccount).where(
        BulkChangeAccount.bulk_change_id == bulk_change_id,
        BulkChangeAccount.account_id == account_id,
    )
    return (await session.exec(stmt)).first()


async def save(session: AsyncSession, row: BulkChange | BulkChangeAccount) -> None:
    session.add(row)
    await session.flush()


@dataclass(frozen=True)
class Locked:
    accounts: int
    changed_since_preview: int
    changed_since_preview_ids: list[str]


async def lock_selected_accounts(session: AsyncSession, bulk_change_id: str, most: int) -> Locked:
    """Lock the accounts the bulk change will change (not exempted), in id order; count those
    changed since the preview and name the first `most`."""
    row = (
        await session.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE moved), "
                "(array_agg(account_id ORDER BY account_id) FILTER (WHERE moved))"
                "[1:CAST(:most AS int)] FROM ("
                "SELECT a.account_id, a.updated_at > b.seen_updated_at AS moved "
                "FROM accounts a JOIN bulk_change_accounts b ON b.account_id = a.account_id "
                "WHERE b.bulk_change_id = :bulk_change_id AND b.exempted_at IS NULL "
                "ORDER BY a.account_id FOR UPDATE OF a) x"
            ),
            {"bulk_change_id": bulk_change_id, "most": most},
        )
    ).one()
    return Locked(int(row[0]), int(row[1]), list(row[2] or []))


async def problems_of_unexempted(
    session: AsyncSession, bulk_change_id: str, most: int
) -> tuple[int, list[tuple[str, list[dict[str, str]]]]]:
    """How many accounts not exempted cannot take the change, and the first `most` of them
    (id, problems)."""
    where = (
        "WHERE bulk_change_id = :bulk_change_id AND exempted_at IS NULL AND problems <> '[]'::jsonb"
    )
    params = {"bulk_change_id": bulk_change_id, "most": most}
    total = (
        await session.execute(text(f"SELECT count(*) FROM bulk_change_accounts {where}"), params)
    ).scalar_one()
    rows = await session.execute(
        text(
            f"SELECT account_id, problems FROM bulk_change_accounts {where} "
            "ORDER BY account_id LIMIT :most"
        ).columns(column("account_id", String), column("problems", JSONB)),
        params,
    )
    return int(total), [(r[0], list(r[1])) for r in rows]


async def apply_to_accounts(
    session: AsyncSession, bulk_change_id: str, kind: str, now: datetime
) -> int:
    """Set the touched columns of every account not exempted whose outcome differs (one
    UPDATE ... FROM); returns how many changed."""
    sets = [
        f"{name} = b.after -> '{name}'"
        if name in _JSON_COLUMNS
        else f"{name} = b.after ->> '{name}'"
        for name in _AFTER[kind]
    ]
    result = await session.execute(
        text(
            f"UPDATE accounts a SET {', '.join(sets)}, updated_at = :now "
            "FROM bulk_change_accounts b WHERE b.bulk_change_id = :bulk_change_id "
            "AND b.account_id = a.account_id AND b.exempted_at IS NULL AND b.after <> b.before"
        ),
        {"bulk_change_id": bulk_change_id, "now": now},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def changed_accounts_page(
    session: AsyncSession, bulk_change_id: str, after_account_id: str, limit: int
) -> list[Row[Any]]:
    """The accounts the bulk change changed, past an id, by id: every column of accounts,
    and `touched_before`, `touched_after` (the columns the change touched)."""
    names = ", ".join(f"a.{c.name}" for c in _ACCOUNT_COLUMNS)
    stmt = text(
        f"SELECT {names}, b.before AS touched_before, b.after AS touched_after "
        "FROM bulk_change_accounts b "
        "JOIN accounts a ON a.account_id = b.account_id "
        "WHERE b.bulk_change_id = :bulk_change_id AND b.exempted_at IS NULL "
        "AND b.after <> b.before AND b.account_id > :after "
        "ORDER BY b.account_id LIMIT :limit"
    ).columns(
        *(column(c.name, c.type) for c in _ACCOUNT_COLUMNS),
        column("touched_before", JSONB),
        column("touched_after", JSONB),
    )
    params = {"bulk_change_id": bulk_change_id, "after": after_account_id, "limit": limit}
    return list(await session.execute(stmt, params))


async def account_audit_newest_first(
    session: AsyncSession, tenant: str, account_id: str, limit: int, offset: int
) -> list[Row[Any]]:
    """A page of the audit records of the tenant's account, newest first."""
    stmt = text(
        "SELECT seq, recorded_at, actor, action, before, after, request_id FROM audit_records "
        "WHERE tenant = :tenant AND subject_type = 'account' AND subject_id = :account_id "
        "ORDER BY seq DESC LIMIT :limit OFFSET :offset"
    ).columns(
        column("seq", BigInteger),
        column("recorded_at", DateTime(timezone=True)),
        column("actor", String),
        column("action", String),
        column("before", JSONB),
        column("after", JSONB),
        column("request_id", String),
    )
    params = {"tenant": tenant, "account_id": account_id, "limit": limit, "offset": offset}
    return list(await session.execute(stmt, params))
