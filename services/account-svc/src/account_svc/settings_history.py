"""An account's settings history, read from the audit trail (the one record of every change
of an account: opened, changed over REST, by a bulk change, by a corporate action): who, when,
what changed from what to what, and the bulk change or request that changed it."""

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from account_svc import bulk_changes_repository as repo
from account_svc.bulk_changes import bulk_change_of_action
from account_svc.bulk_changes_schemas import FieldChangeOut, SettingsChangeOut
from account_svc.repository import PostgresAccountRepository
from account_svc.service import get_account

# documents whose keys are settings of their own: a change is shown key by key
_KEYED = ("rebalance_settings", "tax_settings", "attributes")


async def settings_history(
    session: AsyncSession, tenant: str, account_id: str, limit: int, offset: int
) -> list[SettingsChangeOut]:
    """A page of the changes of the tenant's account, newest first (another's: not found)."""
    await get_account(PostgresAccountRepository(session), tenant, account_id)
    rows = await repo.account_audit_newest_first(session, tenant, account_id, limit, offset)
    return [
        SettingsChangeOut(
            seq=r.seq,
            at=r.recorded_at,
            by=r.actor,
            action=r.action,
            bulk_change_id=bulk_change_of_action(r.action),
            request_id=r.request_id,
            changes=field_changes(r.before, r.after),
        )
        for r in rows
    ]


def field_changes(
    before: dict[str, Any] | None, after: dict[str, Any] | None
) -> list[FieldChangeOut]:
    """What differs between two documents of an account, field by field (settings documents
    key by key, e.g. `rebalance_settings.min_trade_value`); a field absent is null."""
    old, new = before or {}, after or {}
    changes: list[FieldChangeOut] = []
    for field in sorted(old.keys() | new.keys()):
        was, now = old.get(field), new.get(field)
        if was == now:
            continue
        if field in _KEYED and isinstance(was or {}, dict) and isinstance(now or {}, dict):
            changes += [
                FieldChangeOut(field=f"{field}.{c.field}", before=c.before, after=c.after)
                for c in field_changes(was or {}, now or {})
            ]
            continue
        changes.append(FieldChangeOut(field=field, before=was, after=now))
    return changes
