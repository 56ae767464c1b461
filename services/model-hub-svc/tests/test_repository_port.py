"""model-hub-svc's rules (the security master, model versions, equivalence sets, following
corporate actions) through its repository port, each test run twice: on an in-memory fake
(no database) and on the Postgres adapter on real PostgreSQL (ballast_common.testing's
InMemoryBackend and PostgresBackend). What was announced is read back decoded, as other
services receive it: from the fake's committed events, or from the outbox."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.audit import AuditEntry
from ballast_common.contracts.events import CorporateActionRecordedV1
from ballast_common.db import Database
from ballast_common.errors import Conflict, InvalidInput, NotFound
from ballast_common.testing import InMemoryBackend, PostgresBackend, migrated_database
from model_hub_svc import service
from model_hub_svc.main import spec
from model_hub_svc.ports import ModelHubRepository
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import EquivalenceSetIn, ModelIn, SecurityIn, TargetIn
from model_hub_svc.tables import EquivalenceSet, Model, ModelTarget, ModelVersion, Security

SOURCE = "model-hub-svc"
TENANT = "acme"
PRICES = {
    "AAPL": "190",
    "MSFT": "415",
    "NVDA": "135",
    "SPY": "600",
    "IVV": "602",
    "VOO": "551",
    "XOM": "110",
    "FB": "500",
    "ACME": "40",
}


class InMemoryModelHubRepository:
    """ports.ModelHubRepository in dicts. Rows given to it are kept as they are and rows read
    are the kept objects (as an ORM session's identity map), so a change to a row read is
    stored; `for_update` has nothing to lock."""

    def __init__(self) -> None:
        self.securities: dict[str, Security] = {}
        self.models: dict[str, Model] = {}
        self.versions: dict[tuple[str, int], ModelVersion] = {}
        self.targets: dict[tuple[str, int], list[ModelTarget]] = {}
        self.sets: dict[str, EquivalenceSet] = {}
        self.audit: list[tuple[str, AuditEntry]] = []

    async def upsert_securities(self, securities: Sequence[Security]) -> None:
        for given in securities:
            kept = self.securities.setdefault(given.symbol, Security(**given.model_dump()))
            for field, value in given.model_dump(exclude={"symbol"}).items():
                setattr(kept, field, value)

    async def get_security(self, symbol: str) -> Security | None:
        return self.securities.get(symbol)

    async def get_securities(self, symbols: Sequence[str]) -> list[Security]:
        return [self.securities[s] for s in symbols if s in self.securities]

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None:
        self.audit.extend((tenant, e) for e in entries)

    async def known_symbols(self, symbols: Sequence[str]) -> set[str]:
        return {s for s in symbols if s in self.securities}

    def _model_of(self, tenant: str, model_id: str) -> Model | None:
        model = self.models.get(model_id)
        return model if model is not None and model.tenant == tenant else None

    async def get_model(
        self, tenant: str, model_id: str, *, for_update: bool = False
    ) -> Model | None:
        return self._model_of(tenant, model_id)

    async def model_id_taken(self, model_id: str) -> bool:
        return model_id in self.models

    async def get_version(self, tenant: str, model_id: str, version: int) -> ModelVersion | None:
        if self._model_of(tenant, model_id) is None:
            return None
        return self.versions.get((model_id, version))

    async def targets_of(self, tenant: str, model_id: str, version: int) -> list[ModelTarget]:
        if self._model_of(tenant, model_id) is None:
            return []
        return sorted(self.targets.get((model_id, version), []), key=lambda t: t.symbol)

    async def add_version(
        self, model: Model, version: ModelVersion, targets: Sequence[ModelTarget]
    ) -> None:
        key = (version.model_id, version.version)
        if key in self.versions:
            raise ValueError(f"model {key[0]} has a version {key[1]} already")
        self.models[model.model_id] = model
        self.versions[key] = version
        self.targets[key] = list(targets)

    async def taken_model_ids(self, model_ids: Sequence[str]) -> set[str]:
        return {m for m in model_ids if m in self.models}

    async def add_models(self, models: Sequence[Model]) -> None:
        for model in models:
            self.models[model.model_id] = model

    async def ancestors_of(self, tenant: str, model_id: str) -> list[str]:
        out: list[str] = []
        parent = self._parent_of(tenant, model_id)
        while parent is not None and parent not in out and parent != model_id:
            out.append(parent)
            parent = self._parent_of(tenant, parent)
        return out

    def _parent_of(self, tenant: str, model_id: str) -> str | None:
        model = self._model_of(tenant, model_id)
        if model is None:
            return None
        return self.versions[(model_id, model.current_version)].parent_model_id

    async def children_of(
        self, tenant: str, parent_ids: Sequence[str]
    ) -> list[tuple[Model, ModelVersion]]:
        return [
            (model, self.versions[(model_id, model.current_version)])
            for model_id, model in sorted(self.models.items())
            if model.tenant == tenant
            and self.versions[(model_id, model.current_version)].parent_model_id in parent_ids
        ]

    async def targets_of_versions(self, keys: Sequence[tuple[str, int]]) -> list[ModelTarget]:
        return [
            t for key in sorted(keys) for t in sorted(self.targets[key], key=lambda t: t.symbol)
        ]

    async def add_versions(
        self, versions: Sequence[ModelVersion], targets: Sequence[ModelTarget]
    ) -> None:
        for version in versions:
            await self.add_version(
                self.models[version.model_id],
                version,
                [t for t in targets if t.model_id == version.model_id],
            )
            self.models[version.model_id].current_version = version.version

    async def allocation_weights(
        self, tenant: str, allocation_ids: Sequence[str]
    ) -> dict[str, dict[str, Decimal]]:
        return {}  # allocations are Postgres-only (test_model_settings.py)

    async def models_holding(self, symbol: str) -> list[Model]:
        return [
            model
            for model_id, model in sorted(self.models.items())
            if any(t.symbol == symbol for t in self.targets[(model_id, model.current_version)])
        ]

    async def get_equivalence_set(
        self, set_id: str, *, for_update: bool = False
    ) -> EquivalenceSet | None:
        return self.sets.get(set_id)

    async def list_equivalence_sets(
        self, include_removed: bool, limit: int, offset: int
    ) -> list[EquivalenceSet]:
        rows = [r for _, r in sorted(self.sets.items()) if include_removed or not r.removed]
        return rows[offset : offset + limit]

    async def equivalence_sets_holding(
        self, symbols: Sequence[str], *, except_set: str | None = None
    ) -> list[EquivalenceSet]:
        return [
            r
            for set_id, r in sorted(self.sets.items())
            if not r.removed and set_id != except_set and set(r.members) & set(symbols)
        ]

    async def sets_with_member(
        self, symbol: str, *, for_update: bool = False
    ) -> list[EquivalenceSet]:
        return [r for _, r in sorted(self.sets.items()) if not r.removed and symbol in r.members]

    async def save_equivalence_set(self, row: EquivalenceSet) -> None:
        self.sets[row.set_id] = row


Hub = InMemoryBackend[ModelHubRepository] | PostgresBackend[ModelHubRepository]


@pytest.fixture(scope="module")
async def model_hub_db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


async def seeded(backend: Hub) -> Hub:
    async with backend.transaction() as (uow, repo):
        await service.upsert_securities(
            uow,
            repo,
            [
                SecurityIn(symbol=s, name=s, asset_class="US Equity", sector="X", price=Decimal(p))
                for s, p in PRICES.items()
            ],
            tenant=TENANT,
            actor="pm",
        )
    return backend


@pytest.fixture
async def fake_hub() -> Hub:
    return await seeded(InMemoryBackend(SOURCE, InMemoryModelHubRepository()))


@pytest.fixture
async def postgres_hub(model_hub_db: Database) -> Hub:
    return await seeded(PostgresBackend(model_hub_db, SOURCE, PostgresModelHubRepository))


@pytest.fixture(params=["fake", pytest.param("postgres", marks=pytest.mark.integration)])
def hub(request: pytest.FixtureRequest) -> Hub:
    """Each test runs on the fake, and on Postgres (an integration test)."""
    return request.getfixturevalue(f"{request.param}_hub")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def model(name: str = "Core", **weights: str) -> ModelIn:
    return ModelIn(
        name=name, targets=[TargetIn(symbol=s, weight=Decimal(w)) for s, w in weights.items()]
    )


async def publish(hub: Hub, model_id: str, body: ModelIn, tenant: str = TENANT) -> Any:
    async with hub.transaction() as (uow, repo):
        return await service.publish_model(uow, repo, tenant, model_id, body, "pm", 1e-6)


async def put_set(hub: Hub, set_id: str, *members: str, tenant: str = TENANT, **extra: Any) -> Any:
    async with hub.transaction() as (uow, repo):
        body = EquivalenceSetIn(name="Set", members=list(members), **extra)
        return await service.put_equivalence_set(uow, repo, tenant, set_id, body, "pm")


async def remove_set(hub: Hub, set_id: str) -> Any:
    async with hub.transaction() as (uow, repo):
        return await service.remove_equivalence_set(uow, repo, set_id, "pm")


async def follow(hub: Hub, kind: str, symbol: str, **fields: Any) -> str:
    action = CorporateActionRecordedV1(
        action_id=new_id("CA"),
        type=kind,
        symbol=symbol,
        on=date(2026, 11, 20),
        accounts_affected=3,
        **fields,
    )
    async with hub.transaction() as (uow, repo):
        await service.follow_corporate_action(uow, repo, action)
    return action.action_id


# --- the fake and the adapter are the same port ---------------------------------------------


@pytest.mark.parametrize("adapter", [InMemoryModelHubRepository, PostgresModelHubRepository])
def test_the_fake_and_the_adapter_have_the_ports_methods(adapter):
    def parameters(function: Any) -> list[tuple[str, Any]]:
        return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]

    port = {n: f for n, f in vars(ModelHubRepository).items() if inspect.iscoroutinefunction(f)}
    assert len(port) == 23
    for name, method in port.items():
        assert parameters(getattr(adapter, name)) == parameters(method), name


# --- models ----------------------------------------------------------------------------------


async def test_versions_increase_and_unchanged_targets_make_no_version(hub):
    model_id = new_id("core")
    first = await publish(hub, model_id, model(AAPL="0.5", MSFT="0.5"))
    same = await publish(hub, model_id, model(AAPL="0.5", MSFT="0.5"))
    second = await publish(hub, model_id, model(AAPL="0.4", NVDA="0.6"))
    assert (first.version, first.created) == (1, True)
    assert (same.version, same.created) == (1, False)
    assert (second.version, second.created) == (2, True)
    async with hub.reading() as repo:
        old = await service.get_model(repo, TENANT, model_id, 1)
        assert [t.symbol for t in old.targets] == ["AAPL", "MSFT"]
        with pytest.raises(NotFound):
            await service.get_model(repo, TENANT, model_id, 3)
    announced = await hub.announced("model-changed", model_id)
    assert [(e.version, [t.symbol for t in e.targets]) for e in announced] == [
        (1, ["AAPL", "MSFT"]),
        (2, ["AAPL", "NVDA"]),
    ]


@pytest.mark.parametrize(
    ("weights", "message", "field"),
    [
        ({"AAPL": "0.5", "MSFT": "0.6"}, "sum to 110", "targets"),
        ({"AAPL": "0.5", "ZZZZ": "0.5"}, "unknown security ZZZZ", "targets[1].symbol"),
    ],
)
async def test_bad_models_are_refused_naming_the_field_and_change_nothing(
    hub, weights, message, field
):
    model_id = new_id("bad")
    with pytest.raises(InvalidInput, match=message) as error:
        await publish(hub, model_id, model(**weights))
    assert error.value.errors[0].field == field
    async with hub.reading() as repo:
        with pytest.raises(NotFound):
            await service.get_model(repo, TENANT, model_id)
    assert await hub.announced("model-changed", model_id) == []


async def test_duplicate_security_in_a_model_is_refused(hub):
    body = ModelIn(
        name="Dup",
        targets=[
            TargetIn(symbol="AAPL", weight=Decimal("0.5")),
            TargetIn(symbol="AAPL", weight=Decimal("0.5")),
        ],
    )
    with pytest.raises(InvalidInput, match="AAPL appears more than once"):
        await publish(hub, new_id("dup"), body)


async def test_a_failed_unit_of_work_stores_and_announces_nothing(hub):
    model_id = new_id("undone")
    with pytest.raises(RuntimeError, match="after the model"):
        async with hub.transaction() as (uow, repo):
            await service.publish_model(uow, repo, TENANT, model_id, model(AAPL="1"), "pm", 1e-6)
            raise RuntimeError("something failed after the model was written")
    async with hub.reading() as repo:
        with pytest.raises(NotFound):
            await service.get_model(repo, TENANT, model_id)
    assert await hub.announced("model-changed", model_id) == []


# --- equivalence sets ------------------------------------------------------------------------


async def test_set_versions_and_unchanged_set_makes_no_version(hub):
    set_id = new_id("set")
    first = await put_set(hub, set_id, "SPY", "IVV", identical=True)
    same = await put_set(hub, set_id, "SPY", "IVV", identical=True)
    removed = await remove_set(hub, set_id)
    assert (first.version, first.created, same.created, removed.version) == (1, True, False, 2)
    events = await hub.announced("equivalence-set-changed", set_id)
    assert [(e.version, e.members, e.identical, e.removed) for e in events] == [
        (1, ["SPY", "IVV"], True, False),
        (2, [], True, True),
    ]
    with pytest.raises(NotFound):
        await remove_set(hub, set_id)


@pytest.mark.parametrize(
    ("members", "message", "field"),
    [
        (("SPY", "NOPE"), "unknown security NOPE", "members[1]"),
        (("SPY", "SPY"), "SPY appears more than once", "members[1]"),
    ],
)
async def test_bad_sets_are_refused_naming_the_field(hub, members, message, field):
    with pytest.raises(InvalidInput, match=message) as error:
        await put_set(hub, new_id("set"), *members)
    assert error.value.errors[0].field == field


async def test_a_security_is_in_one_equivalence_set_only(hub):
    taken = new_id("set")
    await put_set(hub, taken, "VOO", "IVV")
    with pytest.raises(InvalidInput, match=f"IVV is already in equivalence set {taken}") as e:
        await put_set(hub, new_id("set"), "SPY", "IVV")
    assert e.value.errors[0].field == "members[1]"
    await remove_set(hub, taken)
    again = await put_set(hub, new_id("set"), "SPY", "IVV")  # its members are free again
    assert again.created
    async with hub.reading() as repo:
        live = await service.list_equivalence_sets(repo, False, 50_000, 0)
        everything = await service.list_equivalence_sets(repo, True, 50_000, 0)
    assert again.set_id in [s.set_id for s in live] and taken not in [s.set_id for s in live]
    assert taken in [s.set_id for s in everything]
    await remove_set(hub, again.set_id)


# --- tenants ---------------------------------------------------------------------------------


async def test_an_id_of_another_tenant_is_refused_and_its_model_stays_as_it_was(hub):
    model_id = new_id("m")
    await publish(hub, model_id, model(AAPL="1"), tenant="evil")
    with pytest.raises(Conflict, match=f"model id {model_id} is not available") as refused:
        await publish(hub, model_id, model(MSFT="1"))
    assert "evil" not in refused.value.detail
    async with hub.reading() as repo:
        with pytest.raises(NotFound):
            await service.get_model(repo, TENANT, model_id)
        theirs = await service.get_model(repo, "evil", model_id)
    assert [t.symbol for t in theirs.targets] == ["AAPL"] and theirs.version == 1
    assert len(await hub.announced("model-changed", model_id)) == 1


async def test_equivalence_sets_are_the_platforms_read_and_changed_from_any_tenant(hub):
    set_id = new_id("set")
    made = await put_set(hub, set_id, "NVDA", "MSFT", tenant="evil")
    async with hub.reading() as repo:
        seen = await service.get_equivalence_set(repo, set_id)
        listed = await service.list_equivalence_sets(repo, False, 50_000, 0)
    assert (seen.tenant, seen.members) == ("evil", ["NVDA", "MSFT"])
    assert set_id in [s.set_id for s in listed]
    # another tenant's platform operator changes the same set: a new version, still evil's
    changed = await put_set(hub, set_id, "NVDA", "AAPL")
    assert (changed.version, changed.tenant, changed.created) == (made.version + 1, "evil", True)
    with pytest.raises(InvalidInput, match=f"NVDA is already in equivalence set {set_id}"):
        await put_set(hub, new_id("set"), "SPY", "NVDA")
    events = await hub.announced("equivalence-set-changed", set_id)
    assert [(e.version, e.members) for e in events] == [
        (1, ["NVDA", "MSFT"]),
        (2, ["NVDA", "AAPL"]),
    ]
    await remove_set(hub, set_id)


async def test_a_corporate_action_changes_every_tenants_models_under_their_own_tenant(hub):
    ours, theirs = new_id("m"), new_id("m")
    await publish(hub, ours, model(FB="0.5", XOM="0.5"))
    await publish(hub, theirs, model(FB="1"), tenant="evil")
    await follow(hub, "symbol-change", "FB", new_symbol="META")
    async with hub.reading() as repo:
        renamed = await service.get_model(repo, TENANT, ours)
        their_renamed = await service.get_model(repo, "evil", theirs)
    assert (renamed.tenant, [t.symbol for t in renamed.targets]) == (TENANT, ["META", "XOM"])
    assert (their_renamed.tenant, [t.symbol for t in their_renamed.targets]) == ("evil", ["META"])
    # undo the rename for the other tests
    await follow(hub, "symbol-change", "META", new_symbol="FB")


# --- corporate actions -----------------------------------------------------------------------


async def test_symbol_change_renames_the_security_in_models_and_sets(hub):
    model_id, set_id = new_id("m"), new_id("set")
    await publish(hub, model_id, model(model_id, FB="0.4", XOM="0.6"))
    await put_set(hub, set_id, "FB", "XOM")
    action_id = await follow(hub, "symbol-change", "FB", new_symbol="META")
    async with hub.reading() as repo:
        renamed = await service.get_model(repo, TENANT, model_id)
        meta = await service.get_security(repo, "META")
        security_set = await service.get_equivalence_set(repo, set_id)
    assert renamed.version == 2 and renamed.changed_by == f"corporate-action:{action_id}"
    assert {t.symbol: t.weight for t in renamed.targets} == {
        "META": Decimal("0.4"),
        "XOM": Decimal("0.6"),
    }
    assert meta.price == Decimal("500")
    assert security_set.members == ["XOM", "META"] and security_set.version == 2
    securities = await hub.announced("securities-changed", service.SECURITY_MASTER_KEY)
    assert any(s.symbol == "META" for e in securities for s in e.securities)
    await remove_set(hub, set_id)


async def test_cash_merger_spreads_the_weight_pro_rata_and_keeps_100_percent(hub):
    model_id = new_id("m")
    await publish(hub, model_id, model(model_id, ACME="0.1", SPY="0.3", XOM="0.6"))
    await follow(hub, "cash-merger", "ACME", cash_per_share=Decimal("52"))
    async with hub.reading() as repo:
        merged = await service.get_model(repo, TENANT, model_id)
    weights = {t.symbol: t.weight for t in merged.targets}
    assert set(weights) == {"SPY", "XOM"} and sum(weights.values()) == 1
    assert weights["SPY"] == Decimal("0.3333333333") and weights["XOM"] == Decimal("0.6666666667")


async def test_split_restates_the_price_and_leaves_models_alone(hub):
    model_id = new_id("m")
    await publish(hub, model_id, model(model_id, VOO="1"))
    await follow(hub, "split", "VOO", numerator=4, denominator=1)
    async with hub.reading() as repo:
        voo = await service.get_security(repo, "VOO")
        unchanged = await service.get_model(repo, TENANT, model_id)
    assert voo.price == Decimal("137.75")
    assert unchanged.version == 1
