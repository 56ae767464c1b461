"""What model-hub-svc's rules need from storage: the repository port. Its Postgres adapter is
repository.PostgresModelHubRepository; the tests run the rules on an in-memory fake too."""

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from ballast_common.audit import AuditEntry

from model_hub_svc.tables import EquivalenceSet, Model, ModelTarget, ModelVersion, Security


class ModelHubRepository(Protocol):
    """The security master and equivalence sets (both shared by every tenant), and models with
    their versions and targets (each of one tenant: a method taking `tenant` never reads or
    changes another tenant's rows; ids are unique platform-wide).

    Rows read are the stored objects of the transaction: a change to one is stored with it
    (as the ORM does); `for_update` locks the row until the transaction ends."""

    async def upsert_securities(self, securities: Sequence[Security]) -> None: ...

    async def get_security(self, symbol: str) -> Security | None: ...

    async def get_securities(self, symbols: Sequence[str]) -> list[Security]: ...

    async def known_symbols(self, symbols: Sequence[str]) -> set[str]: ...

    async def get_model(
        self, tenant: str, model_id: str, *, for_update: bool = False
    ) -> Model | None: ...

    async def model_id_taken(self, model_id: str) -> bool: ...

    async def get_version(
        self, tenant: str, model_id: str, version: int
    ) -> ModelVersion | None: ...

    async def targets_of(self, tenant: str, model_id: str, version: int) -> list[ModelTarget]: ...

    async def add_version(
        self, model: Model, version: ModelVersion, targets: Sequence[ModelTarget]
    ) -> None: ...

    async def taken_model_ids(self, model_ids: Sequence[str]) -> set[str]: ...

    async def add_models(self, models: Sequence[Model]) -> None: ...

    async def ancestors_of(self, tenant: str, model_id: str) -> list[str]: ...

    async def children_of(
        self, tenant: str, parent_ids: Sequence[str]
    ) -> list[tuple[Model, ModelVersion]]: ...

    async def targets_of_versions(self, keys: Sequence[tuple[str, int]]) -> list[ModelTarget]: ...

    async def add_versions(
        self, versions: Sequence[ModelVersion], targets: Sequence[ModelTarget]
    ) -> None: ...

    async def allocation_weights(
        self, tenant: str, allocation_ids: Sequence[str]
    ) -> dict[str, dict[str, Decimal]]: ...

    async def models_holding(self, symbol: str) -> list[Model]: ...

    async def get_equivalence_set(
        self, set_id: str, *, for_update: bool = False
    ) -> EquivalenceSet | None: ...

    async def list_equivalence_sets(
        self, include_removed: bool, limit: int, offset: int
    ) -> list[EquivalenceSet]: ...

    async def equivalence_sets_holding(
        self, symbols: Sequence[str], *, except_set: str | None = None
    ) -> list[EquivalenceSet]: ...

    async def sets_with_member(
        self, symbol: str, *, for_update: bool = False
    ) -> list[EquivalenceSet]: ...

    async def save_equivalence_set(self, row: EquivalenceSet) -> None: ...

    async def append_audit(self, tenant: str, entries: Sequence[AuditEntry]) -> None: ...
