"""account-svc's rules for accounts and proposals (opening and changing accounts, settings,
restrictions, UMA strategies, approving proposed trades) through its repository port, each
test run twice: on an in-memory fake (no database) and on the Postgres adapter on real
PostgreSQL (ballast_common.testing's InMemoryBackend and PostgresBackend). What was announced
is read back decoded, as other services receive it. Ids carry a random part (the database is
shared)."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
from account_svc import service
from account_svc.main import spec
from account_svc.ports import AccountRepository
from account_svc.repository import PostgresAccountRepository
from account_svc.schemas import AccountIn, AccountPatch, RestrictionIn, Strategy
from account_svc.tables import Account, Proposal, SecurityList
from ballast_common.audit import AuditEntry
from ballast_common.contracts.events import CashMovementV1, TradesProposedV1
from ballast_common.db import Database
from ballast_common.errors import Conflict, InvalidInput, NotFound, PermanentMessageError
from ballast_common.testing import (
    InMemoryBackend,
    PostgresBackend,
    delivery,
    example,
    migrated_database,
)

SOURCE = "account-svc"
MODEL = "port-core"
TENANT, OTHER = "demo", "port-evil"
OTHER_MODEL = "port-evil-core"

Backend = InMemoryBackend[AccountRepository] | PostgresBackend[AccountRepository]


class InMemoryAccountRepository:
    """ports.AccountRepository in dicts. Rows given to it are kept as they are and rows read
    are the kept objects (as an ORM session's identity map), so a change to a row read is
    stored; proposals are inserted as copies (a multi-row INSERT keeps no object);
    `for_update` has nothing to lock."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.known_models: dict[str, tuple[str, str, int]] = {}  # id -> tenant, name, version
        self.lists: dict[tuple[str, str], SecurityList] = {}  # by tenant and id
        self.proposals: dict[str, Proposal] = {}
        self.audit: list[tuple[str, AuditEntry]] = []

    async def get_account(
        self, tenant: str, account_id: str, *, for_update: bool = False
    ) -> Account | None:
        account = self.accounts.get(account_id)
        return account if account is not None and account.tenant == tenant else None

    async def existing_account_ids(self, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.accounts}

    async def households_of_other_tenants(
        self, tenant: str, household_ids: Sequence[str]
    ) -> set[str]:
        wanted = set(household_ids)
        return {
            a.household_id
            for a in self.accounts.values()
            if a.household_id in wanted and a.tenant != tenant
        }

    async def add_accounts(self, accounts: Sequence[Account]) -> None:
        taken = [a.account_id for a in accounts if a.account_id in self.accounts]
        if taken:
            raise ValueError(f"accounts {taken} exist already")
        self.accounts.update((a.account_id, a) for a in accounts)

    async def save(self, row: Account | Proposal | SecurityList) -> None:
        if isinstance(row, Account):
            self.accounts[row.account_id] = row
        elif isinstance(row, Proposal):
            self.proposals[row.proposal_id] = row
        else:
            self.lists[(row.tenant, row.list_id)] = row

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        self.audit.extend((tenant, e) for e in entries)

    async def known_model_ids(self, tenant: str, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in self.known_models and self.known_models[i][0] == tenant}

    async def upsert_known_model(self, tenant: str, model_id: str, name: str, version: int) -> None:
        known = self.known_models.get(model_id)
        if known is None or known[2] < version:
            self.known_models[model_id] = (tenant, name, version)

    async def security_lists(self, tenant: str, ids: Sequence[str]) -> dict[str, list[str]]:
        return {i: list(self.lists[(tenant, i)].symbols) for i in ids if (tenant, i) in self.lists}

    async def approval_policies(self, account_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        return {
            a: (self.accounts[a].status, self.accounts[a].auto_approve)
            for a in account_ids
            if a in self.accounts
        }

    async def insert_new_proposals(self, proposals: Sequence[Proposal]) -> set[str]:
        new = {p.proposal_id: p for p in proposals if p.proposal_id not in self.proposals}
        self.proposals.update((i, Proposal(**p.model_dump())) for i, p in new.items())
        return set(new)

    async def get_proposal(
        self, tenant: str, proposal_id: str, *, for_update: bool = False
    ) -> Proposal | None:
        proposal = self.proposals.get(proposal_id)
        if proposal is None or self.accounts[proposal.account_id].tenant != tenant:
            return None
        return proposal


@pytest.fixture(scope="module")
async def account_db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


async def seeded(backend: Backend) -> Backend:
    """Published models of tenant demo and of another tenant, and a security list of each
    under the same id."""
    async with backend.transaction() as (_, repo):
        await repo.upsert_known_model(TENANT, MODEL, "Core", 1)
        await repo.upsert_known_model(TENANT, f"{MODEL}-2", "Core 2", 1)
        await repo.upsert_known_model(OTHER, OTHER_MODEL, "Their core", 1)
        for tenant, symbols in ((TENANT, ["XOM"]), (OTHER, ["BP"])):
            if not await repo.security_lists(tenant, ["port-esg"]):
                esg = SecurityList(
                    tenant=tenant, list_id="port-esg", name="ESG", symbols=symbols, updated_by="t"
                )
                await repo.save(esg)
    return backend


@pytest.fixture
async def fake_backend() -> Backend:
    return await seeded(InMemoryBackend(SOURCE, InMemoryAccountRepository()))


@pytest.fixture
async def postgres_backend(account_db: Database) -> Backend:
    return await seeded(PostgresBackend(account_db, SOURCE, PostgresAccountRepository))


@pytest.fixture(params=["fake", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each test runs on the fake, and on Postgres (an integration test)."""
    return request.getfixturevalue(f"{request.param}_backend")


def new_id(prefix: str = "P") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def account(account_id: str, **changes: Any) -> AccountIn:
    fields = {"account_id": account_id, "household_id": "HH-1", "name": "Lee", "model_id": MODEL}
    return AccountIn(**(fields | changes))


def proposal(account_id: str) -> TradesProposedV1:
    """A new proposal for the account (the contract's example otherwise)."""
    return example(
        "trades-proposed",
        proposal_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id=MODEL,
    )


async def open_accounts(backend: Backend, *items: AccountIn, tenant: str = TENANT) -> Any:
    async with backend.transaction() as (uow, repo):
        return await service.open_accounts(uow, repo, tenant, f"advisor@{tenant}", items)


async def receive(backend: Backend, *events: TradesProposedV1) -> int:
    async with backend.transaction() as (uow, repo):
        deliveries = [delivery(e, source="rebalance-svc") for e in events]
        return await service.receive_proposals(uow, repo, deliveries)


async def decide(backend: Backend, event: TradesProposedV1, approve: bool, note: str | None) -> Any:
    async with backend.transaction() as (uow, repo):
        return await service.decide(
            uow, repo, TENANT, "ops@demo", str(event.proposal_id), approve, note
        )


# --- the fake and the adapter are the same port ---------------------------------------------


@pytest.mark.parametrize("adapter", [InMemoryAccountRepository, PostgresAccountRepository])
def test_the_fake_and_the_adapter_have_the_ports_methods(adapter):
    def parameters(function: Any) -> list[tuple[str, Any]]:
        return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]

    port = {n: f for n, f in vars(AccountRepository).items() if inspect.iscoroutinefunction(f)}
    assert len(port) == 12
    for name, method in port.items():
        assert parameters(getattr(adapter, name)) == parameters(method), name


# --- accounts --------------------------------------------------------------------------------


async def test_opening_announces_each_account(backend):
    first, second = new_id(), new_id()
    opened = await open_accounts(backend, account(first), account(second))
    assert [a.status for a in opened] == ["active", "active"]
    for account_id in (first, second):
        [announced] = await backend.announced("account-changed", account_id)
        assert (announced.model_id, announced.status) == (MODEL, "active")


async def test_opening_is_all_or_nothing(backend):
    taken, fresh = new_id(), new_id()
    await open_accounts(backend, account(taken))
    with pytest.raises(Conflict, match=f"account {taken} already exists"):
        await open_accounts(backend, account(fresh), account(taken))
    with pytest.raises(InvalidInput, match="unknown model nope") as error:
        await open_accounts(backend, account(fresh, model_id="nope"))
    assert error.value.errors[0].field == "model_id"
    async with backend.reading() as repo:
        with pytest.raises(NotFound):
            await service.get_account(repo, TENANT, fresh)
    assert await backend.announced("account-changed", fresh) == []


async def test_a_uma_has_sleeves_not_a_model(backend):
    uma = new_id()
    await open_accounts(backend, account(uma))

    def strategy(second_model: str, second_weight: str) -> Strategy:
        sleeves = [("eq", MODEL, "0.6"), ("more", second_model, second_weight)]
        return Strategy.model_validate(
            {"sleeves": [{"sleeve_id": s, "model_id": m, "weight": w} for s, m, w in sleeves]}
        )

    with pytest.raises(InvalidInput) as error:
        async with backend.transaction() as (uow, repo):
            await service.set_strategy(
                uow, repo, TENANT, uma, strategy("nope", "0.3"), actor="advisor-1"
            )
    assert {p.field for p in error.value.errors} == {"sleeves", "sleeves[1].model_id"}
    async with backend.transaction() as (uow, repo):
        await service.set_strategy(
            uow, repo, TENANT, uma, strategy(f"{MODEL}-2", "0.4"), actor="advisor-1"
        )
    with pytest.raises(Conflict, match=f"account {uma} is a UMA"):
        async with backend.transaction() as (uow, repo):
            await service.change_account(
                uow, repo, TENANT, uma, AccountPatch(model_id=MODEL), actor="advisor-1"
            )
    async with backend.reading() as repo:
        stored = await service.get_account(repo, TENANT, uma)
    assert stored.model_id is None and stored.strategy is not None
    announced = await backend.announced("account-changed", uma)
    assert [(e.model_id, e.strategy is not None) for e in announced] == [
        (MODEL, False),
        (None, True),
    ]


async def test_restrictions_keep_who_set_them_and_carry_their_lists_members(backend):
    account_id = new_id()
    await open_accounts(backend, account(account_id))
    esg = RestrictionIn(kind="do_not_buy", scope="list", value="port-esg", reason="screen")
    tobacco = RestrictionIn(kind="do_not_hold", scope="sector", value="Tobacco", reason="client")
    async with backend.transaction() as (uow, repo):
        first = await service.set_restrictions(uow, repo, TENANT, "advisor-1", account_id, [esg])
    async with backend.transaction() as (uow, repo):
        second = await service.set_restrictions(
            uow, repo, TENANT, "advisor-1", account_id, [esg, tobacco]
        )
    assert second[0] == first[0]  # unchanged: when it was set stays
    assert second[1].set_by == "advisor-1" and second[1].set_at >= first[0].set_at
    unknown = RestrictionIn(kind="do_not_buy", scope="list", value="nope", reason="x")
    with pytest.raises(InvalidInput, match="unknown security list nope") as error:
        async with backend.transaction() as (uow, repo):
            await service.set_restrictions(uow, repo, TENANT, "x", account_id, [esg, unknown])
    assert error.value.errors[0].field == "restrictions[1].value"
    last = (await backend.announced("account-changed", account_id))[-1]
    assert [(r.scope, r.value, r.symbols) for r in last.restrictions] == [
        ("list", "port-esg", ["XOM"]),
        ("sector", "Tobacco", []),
    ]


# --- proposals -------------------------------------------------------------------------------


async def test_active_auto_approve_account_is_approved_at_once(backend):
    account_id = new_id()
    await open_accounts(backend, account(account_id))
    event = proposal(account_id)
    assert await receive(backend, event) == 1
    assert await receive(backend, event) == 0  # the same proposal again changes nothing
    [approval] = await backend.announced("trades-approved", account_id)
    assert approval.proposal_id == event.proposal_id
    assert approval.approved_by == service.AUTO_APPROVER


async def test_suspended_account_waits_and_cannot_be_approved(backend):
    account_id = new_id()
    await open_accounts(backend, account(account_id, auto_approve=False))
    async with backend.transaction() as (uow, repo):
        await service.change_account(
            uow, repo, TENANT, account_id, AccountPatch(status="suspended"), actor="advisor-1"
        )
    event = proposal(account_id)
    await receive(backend, event)
    with pytest.raises(Conflict, match=f"account {account_id} is suspended"):
        await decide(backend, event, True, None)
    rejected = await decide(backend, event, False, "client asked to wait")
    assert (rejected.status, rejected.decided_by) == ("rejected", "ops@demo")
    with pytest.raises(Conflict, match="already rejected by ops@demo"):
        await decide(backend, event, True, None)
    assert await backend.announced("trades-approved", account_id) == []
    [announced] = await backend.announced("proposal-rejected", account_id)
    assert (announced.rejected_by, announced.reason) == ("ops@demo", "client asked to wait")


MOVES = [
    CashMovementV1(from_sleeve="income", to_sleeve="core", amount=Decimal("1250.40")),
    CashMovementV1(to_sleeve="core", amount=Decimal("10.00"), purpose="unallocated"),
]


async def test_a_proposals_cash_movements_go_out_with_its_approval_only(backend):
    """A UMA's planned cash movements between sleeves are kept with the proposal and
    announced with its approval (at once by policy, or later by a person), never without."""
    auto, manual, declined = new_id(), new_id(), new_id()
    await open_accounts(
        backend,
        account(auto),
        account(manual, auto_approve=False),
        account(declined, auto_approve=False),
    )
    events = {
        a: proposal(a).model_copy(update={"cash_movements": MOVES})
        for a in (auto, manual, declined)
    }
    assert await receive(backend, *events.values()) == 3
    [approved] = await backend.announced("trades-approved", auto)
    assert approved.cash_movements == MOVES
    assert await backend.announced("trades-approved", manual) == []
    decided = await decide(backend, events[manual], True, None)
    assert decided.cash_movements == [m.model_dump(mode="json") for m in MOVES]
    [approved] = await backend.announced("trades-approved", manual)
    assert approved.cash_movements == MOVES
    await decide(backend, events[declined], False, "not now")
    assert await backend.announced("trades-approved", declined) == []


async def test_proposal_for_unknown_account_is_a_permanent_error(backend):
    ghost = new_id("GHOST")
    with pytest.raises(PermanentMessageError, match=f"unknown account {ghost}"):
        await receive(backend, proposal(ghost))


# --- tenants ---------------------------------------------------------------------------------


async def test_another_tenants_rows_are_as_unknown_as_missing_ones(backend):
    """Accounts, models, lists, households and proposals of another tenant are invisible to
    tenant demo: reads and changes answer as for an id that does not exist."""
    theirs = new_id("EVIL")
    await open_accounts(
        backend, account(theirs, model_id=OTHER_MODEL, household_id=theirs), tenant=OTHER
    )
    async with backend.reading() as repo:
        with pytest.raises(NotFound, match=f"no account {theirs}"):
            await service.get_account(repo, TENANT, theirs)
        assert (await service.get_account(repo, OTHER, theirs)).tenant == OTHER
    with pytest.raises(NotFound, match=f"no account {theirs}"):
        async with backend.transaction() as (uow, repo):
            await service.change_account(
                uow, repo, TENANT, theirs, AccountPatch(name="mine"), actor="advisor-1"
            )
    with pytest.raises(InvalidInput, match=f"unknown model {OTHER_MODEL}"):
        await open_accounts(backend, account(new_id(), model_id=OTHER_MODEL))
    with pytest.raises(InvalidInput, match=f"household {theirs} is another tenant's") as error:
        await open_accounts(backend, account(new_id(), household_id=theirs))
    assert error.value.errors[0].field == "household_id"
    ours = new_id()
    await open_accounts(backend, account(ours))
    esg = RestrictionIn(kind="do_not_buy", scope="list", value="port-esg", reason="screen")
    async with backend.transaction() as (uow, repo):
        await service.set_restrictions(uow, repo, TENANT, "advisor-1", ours, [esg])
    [announced] = (await backend.announced("account-changed", ours))[-1].restrictions
    assert announced.symbols == ["XOM"]  # demo's list, not the other tenant's of the same id
    event = proposal(theirs).model_copy(update={"model_id": OTHER_MODEL})
    await receive(backend, event)
    with pytest.raises(NotFound, match=f"no proposal {event.proposal_id}"):
        await decide(backend, event, False, "not mine")
    assert await backend.announced("proposal-rejected", theirs) == []
