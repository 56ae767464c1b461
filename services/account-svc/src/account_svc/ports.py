"""What account-svc's rules for accounts and proposals need from storage: the repository
port. Its Postgres adapter is repository.PostgresAccountRepository; the tests run the rules
on an in-memory fake too."""

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ballast_common.audit import AuditEntry

from account_svc.tables import Account, Filter, Proposal, SecurityList


class AccountRepository(Protocol):
    """Accounts, the models they may follow, the security lists restrictions name, and trade
    proposals with their decisions.

    Reads of a tenant see that tenant's rows only: another tenant's are as absent as unknown
    ids (account ids are unique across tenants, so `existing_account_ids` sees them all).
    Rows read are the stored objects of the transaction: a change to one is stored with it
    (as the ORM does); `for_update` locks the row until the transaction ends."""

    async def get_account(
        self, tenant: str, account_id: str, *, for_update: bool = False
    ) -> Account | None: ...

    async def existing_account_ids(self, ids: Sequence[str]) -> set[str]: ...

    async def households_of_other_tenants(
        self, tenant: str, household_ids: Sequence[str]
    ) -> set[str]: ...

    async def add_accounts(self, accounts: Sequence[Account]) -> None: ...

    async def save(self, row: Account | Proposal | SecurityList) -> None: ...

    async def known_model_ids(self, tenant: str, ids: Sequence[str]) -> set[str]: ...

    async def upsert_known_model(
        self, tenant: str, model_id: str, name: str, version: int
    ) -> None: ...

    async def security_lists(self, tenant: str, ids: Sequence[str]) -> dict[str, list[str]]: ...

    async def approval_policies(
        self, account_ids: Sequence[str]
    ) -> dict[str, tuple[str, bool]]: ...

    async def insert_new_proposals(self, proposals: Sequence[Proposal]) -> set[str]: ...

    async def get_proposal(
        self, tenant: str, proposal_id: str, *, for_update: bool = False
    ) -> Proposal | None: ...

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None: ...


class ProposalRouter(Protocol):
    """What routing proposals by filters needs from storage: the enabled filters of
    tenants, which one first selects each proposal (evaluated in the database), and the
    accounts a filter suspends."""

    async def enabled_filters(self, tenants: Sequence[str]) -> list[Filter]: ...

    async def first_matching_filters(
        self, proposals: Sequence[Proposal], filters: Sequence[Filter]
    ) -> dict[str, int]: ...

    async def suspend_accounts(
        self, account_ids: Sequence[str], now: datetime
    ) -> list[Account]: ...
