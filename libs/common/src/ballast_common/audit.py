"""The audit trail: who changed what, when, from what to what, hash-chained per tenant.

A service records a change with `append(session, tenant, entries)` in the transaction of the
change itself, so a change and its record commit or vanish together. Each tenant's records
form one chain in the service's `audit_records` table: record `seq` n stores the hash of
record n-1 (`prev_hash`; the first stores `GENESIS`) and its own `hash`, the SHA-256 of the
canonical encoding of every field (`canonical`: sorted-key compact JSON). Changing, removing
or inserting a record breaks a link that `ballast audit verify` finds.

- One chain per tenant, never forked: an append takes a transaction-scoped advisory lock on
  (this schema's audit_records, tenant), then reads the chain's head and inserts its records
  in one statement (many records of a batch too, one `unnest` INSERT).
- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE (`create_audit_records`, for a
  service's migration). A deployment also runs the services as a role that only has INSERT
  and SELECT on the table (`BALLAST_AUDIT_APP_ROLE` makes the migration grant that).
- `before` and `after` are JSON documents of the stored representation (null for a create
  or a delete); decimals as strings, times as ISO 8601 (`jsonable`).
- The request id is the trace id of the request (or consumed event) that made the change:
  the same id as in the logs and spans.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from opentelemetry import trace
from pydantic import BaseModel, Field
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    MetaData,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ballast_common.app import ReadSession
from ballast_common.auth import CanRead
from ballast_common.bulk import insert_columns
from ballast_common.pagination import Offset, Page

TABLE = "audit_records"
GENESIS = "0" * 64  # the previous hash of a chain's first record
APP_ROLE_ENV = "BALLAST_AUDIT_APP_ROLE"
HASHED_FIELDS = (
    "tenant",
    "seq",
    "recorded_at",
    "actor",
    "action",
    "subject_type",
    "subject_id",
    "before",
    "after",
    "request_id",
    "prev_hash",
)


def define_audit_records(metadata: MetaData) -> Table:
    """The `audit_records` table, in the metadata of a service whose changes are audited."""
    return Table(
        TABLE,
        metadata,
        Column("tenant", String(64), primary_key=True),
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        Column("actor", String(255), nullable=False),
        Column("action", String(64), nullable=False),
        Column("subject_type", String(64), nullable=False),
        Column("subject_id", String(255), nullable=False),
        Column("before", JSONB, nullable=True),
        Column("after", JSONB, nullable=True),
        Column("request_id", String(64), nullable=True),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        Index("ix_audit_records_subject", "tenant", "subject_type", "subject_id", "seq"),
    )


_REFUSE_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_records_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def create_audit_records(app_role: str | None = None) -> None:
    """Create `audit_records` and its append-only triggers (in a service's migration); with
    an application role (`app_role`, else `$BALLAST_AUDIT_APP_ROLE`, else none) that role gets
    INSERT and SELECT on it and nothing else."""
    import sqlalchemy as sa
    from alembic import op
    from sqlalchemy.dialects import postgresql

    op.create_table(
        TABLE,
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("subject_type", sa.String(length=64), nullable=False),
        sa.Column("subject_id", sa.String(length=255), nullable=False),
        sa.Column("before", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("after", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "seq"),
    )
    op.create_index(
        "ix_audit_records_subject",
        TABLE,
        ["tenant", "subject_type", "subject_id", "seq"],
        unique=False,
    )
    op.execute(_REFUSE_FUNCTION)
    op.execute(
        "CREATE TRIGGER audit_records_no_update_or_delete BEFORE UPDATE OR DELETE "
        "ON audit_records FOR EACH ROW EXECUTE FUNCTION audit_records_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE "
        "ON audit_records FOR EACH STATEMENT EXECUTE FUNCTION audit_records_refuse_change()"
    )
    role = app_role if app_role is not None else os.environ.get(APP_ROLE_ENV, "")
    if role:
        quoted = '"' + role.replace('"', '""') + '"'
        op.execute(f"REVOKE ALL ON audit_records FROM {quoted}")
        op.execute(f"GRANT SELECT, INSERT ON audit_records TO {quoted}")


def drop_audit_records() -> None:
    """Undo `create_audit_records` (the records go with the table)."""
    from alembic import op

    op.drop_table(TABLE)
    op.execute("DROP FUNCTION IF EXISTS audit_records_refuse_change()")


# the query parameters of every `GET .../audit`
SubjectTypeQuery = Annotated[
    str | None, Query(max_length=64, description="only records of this subject type")
]
SubjectIdQuery = Annotated[
    str | None, Query(max_length=255, description="only records of this subject id")
]
AfterQuery = Annotated[
    int | None,
    Query(ge=0, le=2**63 - 1, description="only records after this sequence number"),
]
AuditLimit = Annotated[int, Query(ge=1, le=1000)]


# --- what a record is ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change to record: `before`/`after` are the stored representation (None for a
    create / a delete), made JSON-safe by `append`."""

    actor: str
    action: str
    subject_type: str
    subject_id: str
    before: Any = None
    after: Any = None


class AuditRecordOut(BaseModel):
    """A record of the audit trail, as REST shows it."""

    tenant: str
    seq: int = Field(description="the record's place in its tenant's chain, from 1")
    recorded_at: datetime
    actor: str = Field(description="who made the change (the token's `sub`)")
    action: str
    subject_type: str
    subject_id: str
    before: Any = Field(description="the stored representation before (null: created)")
    after: Any = Field(description="the stored representation after (null: removed)")
    request_id: str | None = Field(description="the trace id of the request or event")
    prev_hash: str
    hash: str


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: decimals (and floats) as strings, times as ISO 8601."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, enum.Enum)):
        return str(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__} in the audit trail")


def timestamp(value: datetime) -> str:
    """The one text form of a record's time in its hash: UTC, microseconds."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash covers: every hashed field, sorted-key compact JSON."""
    fields = {name: record[name] for name in HASHED_FIELDS}
    fields["recorded_at"] = timestamp(fields["recorded_at"])
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of the record's canonical encoding, its previous hash included."""
    return hashlib.sha256(canonical(record)).hexdigest()


def chain(
    tenant: str,
    entries: Sequence[AuditEntry],
    *,
    last_seq: int,
    last_hash: str,
    recorded_at: datetime,
    request_id: str | None,
) -> list[dict[str, Any]]:
    """The records of `entries`, linked after the chain's head (`last_seq`, `last_hash`)."""
    records = []
    prev_hash = last_hash
    for i, entry in enumerate(entries, 1):
        record: dict[str, Any] = {
            "tenant": tenant,
            "seq": last_seq + i,
            "recorded_at": recorded_at,
            "actor": entry.actor,
            "action": entry.action,
            "subject_type": entry.subject_type,
            "subject_id": entry.subject_id,
            "before": jsonable(entry.before),
            "after": jsonable(entry.after),
            "request_id": request_id,
            "prev_hash": prev_hash,
        }
        record["hash"] = prev_hash = record_hash(record)
        records.append(record)
    return records


def current_request_id() -> str | None:
    """The trace id of the request or event being handled (None outside a span)."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


# --- storage ------------------------------------------------------------------------------

_audit_metadata = MetaData()
audit_records = define_audit_records(_audit_metadata)


async def append(session: AsyncSession, tenant: str, entries: Sequence[AuditEntry]) -> None:
    """Add `entries` to the tenant's chain in the session's transaction: one lock, one read
    of the head, one INSERT however many entries there are."""
    if not entries:
        return
    await session.execute(
        text(
            "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.audit_records'), "
            "hashtext(:tenant))"
        ),
        {"tenant": tenant},
    )
    # A statement of its own after the lock: its snapshot sees what the last holder committed.
    head = (
        await session.execute(
            text(
                "SELECT seq, hash FROM audit_records WHERE tenant = :tenant "
                "ORDER BY seq DESC LIMIT 1"
            ),
            {"tenant": tenant},
        )
    ).first()
    records = chain(
        tenant,
        entries,
        last_seq=head[0] if head else 0,
        last_hash=head[1] if head else GENESIS,
        recorded_at=datetime.now(UTC),
        request_id=current_request_id(),
    )
    columns: dict[str, list[Any]] = {name: [] for name in (*HASHED_FIELDS, "hash")}
    for record in records:
        for name, values in columns.items():
            value = record[name]
            if name in ("before", "after") and value is not None:
                value = json.dumps(value)  # the driver takes jsonb as text
            values.append(value)
    await insert_columns(session, audit_records, columns)


async def read(
    session: AsyncSession,
    tenant: str,
    *,
    subject_type: str | None,
    subject_id: str | None,
    after: int | None,
    limit: int,
    offset: int,
) -> list[AuditRecordOut]:
    """The tenant's records in chain order, of one subject type / subject if given, after
    sequence `after` if given: at most `limit` from `offset`."""
    clauses = ["tenant = :tenant"]
    params: dict[str, Any] = {"tenant": tenant, "limit": limit, "offset": offset}
    if subject_type is not None:
        clauses.append("subject_type = :subject_type")
        params["subject_type"] = subject_type
    if subject_id is not None:
        clauses.append("subject_id = :subject_id")
        params["subject_id"] = subject_id
    if after is not None:
        clauses.append("seq > :after")
        params["after"] = after
    rows = await session.execute(
        text(
            "SELECT tenant, seq, recorded_at, actor, action, subject_type, subject_id, before, "
            "after, request_id, prev_hash, hash FROM audit_records "
            f"WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT :limit OFFSET :offset"
        ).columns(before=JSONB, after=JSONB),
        params,
    )
    return [AuditRecordOut.model_validate(dict(r._mapping)) for r in rows]


# --- verifying a chain ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first record of a tenant's chain that does not hold, and what is wrong with it."""

    tenant: str
    seq: int
    subject_type: str
    subject_id: str
    problems: tuple[str, ...]


class ChainVerifier:
    """Checks records fed in chain order (by tenant, then seq): each one's hash against its
    contents, its `prev_hash` against the hash of the record before, and that no sequence
    number is missing. Reports the first broken link of each tenant."""

    def __init__(self) -> None:
        self.records = 0
        self.tenants: set[str] = set()
        self.broken: dict[str, BrokenLink] = {}
        self._heads: dict[str, tuple[int, str]] = {}

    def check(self, record: Mapping[str, Any]) -> BrokenLink | None:
        """Check the next record; a `BrokenLink` if it is its tenant's first that fails."""
        tenant, seq = record["tenant"], record["seq"]
        self.records += 1
        self.tenants.add(tenant)
        last_seq, last_hash = self._heads.get(tenant, (0, GENESIS))
        self._heads[tenant] = (seq, record["hash"])
        if tenant in self.broken:
            return None
        problems = []
        if seq != last_seq + 1:
            missing = "first record" if last_seq == 0 else f"record {last_seq}"
            problems.append(f"sequence {seq} follows {missing}: records removed or inserted")
        if record["prev_hash"] != last_hash:
            before = "the chain's start" if last_seq == 0 else f"record {last_seq}"
            problems.append(f"its link to the previous record is broken (not the hash of {before})")
        if record_hash(record) != record["hash"]:
            problems.append("its hash does not match its contents (changed after it was written)")
        if not problems:
            return None
        broken = BrokenLink(
            tenant, seq, record["subject_type"], record["subject_id"], tuple(problems)
        )
        self.broken[tenant] = broken
        return broken

    def heads(self) -> dict[str, tuple[int, str]]:
        """Each tenant's last record (seq, hash): worth keeping elsewhere, so that records
        removed from a chain's end, or a chain rewritten whole, show too."""
        return dict(self._heads)


def trail_router(what: str) -> APIRouter:
    """`GET /audit`: the caller's tenant's records in chain order, of one subject if asked;
    what every service that keeps an audit trail mounts (`what`: the changes it records)."""
    router = APIRouter()

    @router.get(
        "/audit",
        tags=["audit"],
        response_model=Page[AuditRecordOut],
        summary="The tenant's audit trail, in order",
        description=f"{what}: who made them and what they were before and after; "
        "hash-chained per tenant (`ballast audit verify`).",
    )
    async def list_audit_records(
        session: ReadSession,
        caller: CanRead,
        subject_type: SubjectTypeQuery = None,
        subject_id: SubjectIdQuery = None,
        after: AfterQuery = None,
        limit: AuditLimit = 100,
        offset: Offset = 0,
    ) -> Page[AuditRecordOut]:
        records = await read(
            session,
            caller.tenant,
            subject_type=subject_type,
            subject_id=subject_id,
            after=after,
            limit=limit + 1,
            offset=offset,
        )
        return Page[AuditRecordOut].of(records, limit, offset)

    return router
