"""The custodian's figure accepted (docs/custodian-files.md, *Accepting the custodian's
figure*): a ledger adjustment per break kind, by a person (`accept-custodian`) or by the
`accept` policy when a day is reconciled.

- quantity: the lot's shares become the custodian's, its basis the custodian's (ours scaled
  per share when the custodian gave none);
- missing: our lot is closed (relieved without a sale: no gain is realized);
- extra: the custodian's lot is opened with its basis and acquisition date;
- basis: the lot's basis becomes the custodian's; date: its acquisition date and holding
  start become the custodian's; cash: the account's cash becomes the custodian's.

Each adjustment is journalled in `ledger_entries` with cause `reconciliation:<break id>`,
audited, and the accounts' holdings published (`holdings-reconciled`, cause
`reconciliation`). A lot adjustment is also kept as an `adjust` input of the tax engine, so
a later replay of the household makes it again (`ballast_engine.tax.adjustments`). A break
whose lot or cash changed since it was found is not adjusted.
"""

from __future__ import annotations

from collections.abc import Sequence

from ballast_common.audit import AuditEntry
from ballast_common.book_loads import StagedLoad
from ballast_common.uow import Cause, UnitOfWork

from taxlot_svc import reconciliation_repository as rrepo
from taxlot_svc import repository as repo

ACCEPT = "accept-custodian"
KEEP_OURS = "keep-ours"
POLICY_ACTOR = "policy"  # who resolved a break that the accept policy resolved
AUDITED_IDS = 1000  # break ids named in the day's audit record


async def accept(uow: UnitOfWork, tenant: str, break_ids: Sequence[int]) -> set[int]:
    """Adjust the ledger to the custodian's figures of these breaks and ask for the holdings
    of their accounts; returns the breaks adjusted."""
    session = uow.session
    applied = await rrepo.accept_custodian_figures(session, tenant, break_ids)
    here = Cause.here()
    await rrepo.request_reconciled_snapshots(session, applied, here.traceparent, here.tracestate)
    return applied


async def accept_by_policy(uow: UnitOfWork, staged: StagedLoad, custodian: str) -> dict[str, int]:
    """The day's breaks whose policy is `accept`: the ledger adjusted, the breaks resolved by
    the policy, one audit record for the day. Returns the breaks accepted by kind."""
    session = uow.session
    wanted = await rrepo.accept_policy_breaks(session, staged.tenant, staged.load_id)
    if not wanted:
        return {}
    applied = await accept(uow, staged.tenant, wanted)
    note = f"the accept policy, when {custodian}'s day {staged.as_of} was reconciled"
    await rrepo.record_resolution(session, staged.tenant, applied, ACCEPT, POLICY_ACTOR, note)
    counts = await rrepo.accepted_counts(session, applied)
    ids, left = sorted(applied), sorted(set(wanted) - applied)
    after = {
        "accepted": counts,
        "break_ids": ids[:AUDITED_IDS],  # every break carries its own resolution
        "more_break_ids": max(0, len(ids) - AUDITED_IDS),
        "not_adjusted": left[:AUDITED_IDS],
    }
    entry = AuditEntry(POLICY_ACTOR, ACCEPT, "reconciliation", staged.load_id, None, after)
    await repo.append_audit(session, staged.tenant, [entry])
    return counts
