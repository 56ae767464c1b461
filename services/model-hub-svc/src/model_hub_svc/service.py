"""model-hub-svc's rules: the security master, publishing model versions (a child's derived
from its parent's, cascading), equivalence sets, corporate actions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common import audit
from ballast_common.audit import AuditEntry, AuditRecordOut
from ballast_common.book_loads import LoadProblem, StagedLoad
from ballast_common.contracts.events import (
    CorporateActionRecordedV1,
    DirectIndexV1,
    EquivalenceSetChangedV1,
    ModelChangedV1,
    ModelParentV1,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc import repository
from model_hub_svc.model_rules import (
    OverrideProblem,
    Target,
    allocation_problems,
    direct_index_problems,
    duplicates,
    effective_targets,
    implied_weights,
    limit_problems,
    limits_problems_of_parent,
    referenced_symbols,
    renamed_limits,
    renamed_overrides,
    renamed_targets,
    target_problems,
    weight_problems,
)
from model_hub_svc.ports import ModelHubRepository
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import (
    AllocationIn,
    AllocationOut,
    AllocationPublished,
    ChildOutsideLimits,
    DirectIndexIn,
    EquivalenceSetIn,
    EquivalenceSetOut,
    EquivalenceSetPublished,
    LimitsIn,
    ModelIn,
    ModelOut,
    ModelPublished,
    OverridesIn,
    ParentOut,
    SecurityIn,
)
from model_hub_svc.tables import (
    Allocation,
    AllocationVersion,
    EquivalenceSet,
    Model,
    ModelTarget,
    ModelVersion,
    Security,
)

SECURITY_MASTER_KEY = "security-master"
SHARED_TENANT = "global"  # the tenant of shared changes no tenant asked for


async def upsert_securities(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    items: Sequence[SecurityIn],
    *,
    tenant: str,
    actor: str,
) -> int:
    """Add or update securities and tell the other services (prices included); recorded in
    the audit trail of `tenant`, whose `actor` made the change."""
    duplicates = _duplicates([s.symbol for s in items])
    if duplicates:
        raise InvalidInput(
            f"symbol {duplicates[0][1]} appears more than once",
            [FieldProblem(f"securities[{i}].symbol", "duplicate symbol") for i, _ in duplicates],
        )
    before = {
        s.symbol: s.model_dump() for s in await repo.get_securities([s.symbol for s in items])
    }
    rows = [Security(**s.model_dump()) for s in items]
    await repo.upsert_securities(rows)
    await repo.append_audit(
        tenant,
        [
            AuditEntry(
                actor,
                "update" if row.symbol in before else "create",
                "security",
                row.symbol,
                before.get(row.symbol),
                row.model_dump(),
            )
            for row in rows
        ],
    )
    uow.publish(
        SecuritiesChangedV1(securities=[SecurityV1(**s.model_dump()) for s in items]),
        key=SECURITY_MASTER_KEY,
        tenant="global",
    )
    return len(items)


# --- book loads (securities.csv, prices.csv; docs/book-files.md) ----------------------------

SECURITIES_PER_EVENT = 500


async def check_book_load(session: AsyncSession, staged: StagedLoad) -> list[LoadProblem]:
    """A price of a security the master does not know (nor securities.csv brings), and a new
    security without a price, are refused."""
    problems = [
        LoadProblem(
            "prices.csv",
            line,
            "symbol",
            f"unknown security {symbol}: add it to securities.csv or the security master",
        )
        for line, symbol in await repository.unknown_priced_symbols(session, staged)
    ]
    problems += [
        LoadProblem(
            "securities.csv", line, "symbol", f"new security {symbol} has no price in prices.csv"
        )
        for line, symbol in await repository.unpriced_new_symbols(session, staged)
    ]
    return problems


async def apply_book_load(uow: UnitOfWork, staged: StagedLoad) -> dict[str, Any]:
    """Securities and prices into the master; securities-changed for what changed, in
    events of SECURITIES_PER_EVENT. One audit record sums the load up (a load may change
    every security of the master)."""
    changed = sorted(await repository.load_securities(uow.session, staged))
    await PostgresModelHubRepository(uow.session).append_audit(
        staged.tenant,
        [
            AuditEntry(
                f"book-load:{staged.load_id}",
                "apply",
                "book-load",
                staged.load_id,
                None,
                {"as_of": staged.as_of, "rows": staged.rows, "securities_changed": changed},
            )
        ],
    )
    for start in range(0, len(changed), SECURITIES_PER_EVENT):
        page = await repository.securities_page(
            uow.session, changed[start : start + SECURITIES_PER_EVENT]
        )
        uow.publish(
            SecuritiesChangedV1(
                securities=[SecurityV1.model_validate(s, from_attributes=True) for s in page]
            ),
            key=SECURITY_MASTER_KEY,
            tenant="global",
        )
    return {"securities_changed": len(changed)}


async def publish_model(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    tenant: str,
    model_id: str,
    body: ModelIn,
    changed_by: str,
    tolerance: float,
    allocation_tolerance: float | None = 0.01,
) -> ModelPublished:
    """Store a new version of the tenant's model (unless nothing of it changed) and announce
    it; each child whose effective targets change gets a version of its own, announced too
    (and so on down). An id another tenant has is refused (409). `allocation_tolerance`
    None: the models are not held to their allocations (a corporate action's change)."""
    _check_shape(body)
    known = await repo.known_symbols(sorted(_symbols_named(body)))
    parent: _Derived | None = None
    if body.parent_model_id is None:
        assert body.targets is not None
        _refuse(target_problems(body.targets, body.kind, "targets", known))
        _refuse(weight_problems(body.targets, body.kind, Decimal(str(tolerance))))
        _refuse(direct_index_problems(body.direct_index, body.targets))
        targets = [Target.given(t) for t in body.targets]
    else:
        overrides = body.overrides or OverridesIn()
        _refuse(target_problems(overrides.add, "weights", "overrides.add", known))
        parent = await _parent_for(repo, tenant, body.parent_model_id, child_id=model_id)
        try:
            targets = effective_targets(parent.targets, overrides)
        except OverrideProblem as problem:
            _refuse(problem.problems)
        _refuse(limit_problems(parent.targets, parent.limits, overrides))
    if body.limits is not None:
        own = {t.symbol for t in targets}
        _refuse(limits_problems_of_parent(body.limits, own, known))
    allocation_check = _AllocationCheck(
        None if allocation_tolerance is None else Decimal(str(allocation_tolerance))
    )
    if body.allocation_id is not None:
        await allocation_check.load(repo, tenant, [(body.allocation_id, targets)])
        _refuse(allocation_check.problems(body.allocation_id, targets))
    model = await repo.get_model(tenant, model_id, for_update=True)
    before: dict[str, Any] | None = None
    if model is not None:
        stored = await repo.get_version(tenant, model_id, model.current_version)
        assert stored is not None
        current = await repo.targets_of(tenant, model_id, model.current_version)
        before = _version_doc(model.name, stored, [Target.stored(t) for t in current])
    elif await repo.model_id_taken(model_id):
        raise _id_taken("model", model_id)
    version = ModelVersion(
        model_id=model_id,
        version=1 if model is None else model.current_version + 1,
        changed_by=changed_by,
        kind=body.kind,
        swap_back=body.swap_back,
        parent_model_id=body.parent_model_id,
        parent_version=parent.version if parent is not None else None,
        overrides=_json(body.overrides or OverridesIn()) if parent is not None else None,
        limits=_json(body.limits) if body.limits is not None else None,
        allocation_id=body.allocation_id,
        direct_index=_json(body.direct_index) if body.direct_index is not None else None,
    )
    after = _version_doc(body.name, version, targets)
    if model is not None and before is not None and _same(before, after):
        view = await get_model(repo, tenant, model_id)
        return ModelPublished(**view.model_dump(), created=False)
    if model is None:
        model = Model(model_id=model_id, tenant=tenant, name=body.name, current_version=1)
    else:
        model.current_version, model.name = version.version, body.name
    await repo.add_version(model, version, [t.row(model_id, version.version) for t in targets])
    action = "create" if before is None else "update"
    await repo.append_audit(
        tenant, [AuditEntry(changed_by, action, "model", model_id, before, after)]
    )
    prices = await _prices_for(repo, version.kind, targets)
    uow.publish(_model_event(model.name, version, targets, prices), key=model_id, tenant=tenant)
    changed, outside = await _cascade(
        uow, repo, tenant, {model_id: _Derived.of(version, targets)}, changed_by, allocation_check
    )
    return ModelPublished(
        **_view(model, version, targets).model_dump(),
        created=True,
        children_changed=changed,
        children_outside_limits=outside,
    )


@dataclass(frozen=True)
class _Derived:
    """A model version children derive from: its targets and limits."""

    version: int
    kind: str
    targets: list[Target]
    limits: LimitsIn | None

    @classmethod
    def of(cls, version: ModelVersion, targets: list[Target]) -> _Derived:
        limits = LimitsIn.model_validate(version.limits) if version.limits else None
        return cls(version.version, version.kind, targets, limits)


async def _parent_for(
    repo: ModelHubRepository, tenant: str, parent_id: str, *, child_id: str | None
) -> _Derived:
    """The current version of the parent a child names (locked while the child derives from
    it: a parent is always locked before its children); cycles are refused (a new child,
    `child_id` None, has no descendants to make one)."""
    parent = await repo.get_model(tenant, parent_id, for_update=True)
    field = "parent_model_id"
    if parent is None:
        _refuse([FieldProblem(field, f"no model {parent_id}")])
    assert parent is not None
    if parent_id == child_id:
        _refuse([FieldProblem(field, f"{child_id} cannot inherit from itself: a cycle")])
    if child_id is not None and child_id in await repo.ancestors_of(tenant, parent_id):
        _refuse([FieldProblem(field, f"{parent_id} derives from {child_id}: a cycle")])
    stored = await repo.get_version(tenant, parent_id, parent.current_version)
    assert stored is not None
    if stored.kind != "weights":
        _refuse([FieldProblem(field, f"{parent_id} is a share model: a child needs weights")])
    targets = await repo.targets_of(tenant, parent_id, parent.current_version)
    return _Derived.of(stored, [Target.stored(t) for t in targets])


async def _cascade(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    tenant: str,
    changed_parents: dict[str, _Derived],
    actor: str,
    allocation_check: _AllocationCheck,
) -> tuple[list[str], list[ChildOutsideLimits]]:
    """New effective versions of the children of `changed_parents`, level by level: per
    level one read of the children, one of their targets, one insert of the versions, one of
    their targets, one audit append, one model-changed per child that changed. A child the
    new parent version breaks (its limits, or overrides that no longer apply) keeps its last
    effective version and is reported (so does one its allocation no longer fits)."""
    changed: list[str] = []
    outside: list[ChildOutsideLimits] = []
    seen = set(changed_parents)
    level = changed_parents
    while level:
        children = [
            (m, v)
            for m, v in await repo.children_of(tenant, sorted(level))
            if m.model_id not in seen
        ]
        seen.update(m.model_id for m, _ in children)
        current: dict[str, list[Target]] = {m.model_id: [] for m, _ in children}
        keys = [(m.model_id, m.current_version) for m, _ in children]
        for row in await repo.targets_of_versions(keys):
            current[row.model_id].append(Target.stored(row))
        versions: list[ModelVersion] = []
        rows: list[ModelTarget] = []
        audits: list[AuditEntry] = []
        events: list[tuple[str, ModelChangedV1]] = []
        next_level: dict[str, _Derived] = {}
        derived = {m.model_id: _derive(level[v.parent_model_id or ""], v) for m, v in children}
        to_check = [(v.allocation_id, derived[m.model_id][0]) for m, v in children]
        await allocation_check.load(repo, tenant, [(a, t) for a, t in to_check if a is not None])
        for model, stored in children:
            parent = level[stored.parent_model_id or ""]
            targets, problems = derived[model.model_id]
            if not problems and stored.allocation_id is not None:
                problems = allocation_check.problems(stored.allocation_id, targets)
            if problems:
                first = problems[0]
                outside.append(
                    ChildOutsideLimits(
                        model_id=model.model_id, problem=f"{first.field}: {first.message}"
                    )
                )
                continue
            if targets == current[model.model_id]:
                continue
            version = ModelVersion(
                model_id=model.model_id,
                version=model.current_version + 1,
                changed_by=actor,
                kind=stored.kind,
                swap_back=stored.swap_back,
                parent_model_id=stored.parent_model_id,
                parent_version=parent.version,
                overrides=stored.overrides,
                limits=stored.limits,
                allocation_id=stored.allocation_id,
            )
            versions.append(version)
            rows += [t.row(model.model_id, version.version) for t in targets]
            before = _version_doc(model.name, stored, current[model.model_id])
            after = _version_doc(model.name, version, targets)
            audits.append(AuditEntry(actor, "update", "model", model.model_id, before, after))
            events.append((model.model_id, _model_event(model.name, version, targets, {})))
            next_level[model.model_id] = _Derived.of(version, targets)
            changed.append(model.model_id)
        await repo.add_versions(versions, rows)
        await repo.append_audit(tenant, audits)
        for key, event in events:
            uow.publish(event, key=key, tenant=tenant)
        level = next_level
    return changed, outside


async def publish_children(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    tenant: str,
    parent_id: str,
    children: Sequence[tuple[str, str, OverridesIn]],
    changed_by: str,
) -> int:
    """Create many new children (model id, name, overrides) of one parent at once, in a
    bounded number of statements (a book's worth of children, e.g. for a benchmark); each
    is checked as a PUT checks it, and one bad child refuses them all (naming it)."""
    ids = [model_id for model_id, _, _ in children]
    repeated = duplicates(ids)
    if repeated:
        i, model_id = repeated[0]
        _refuse([FieldProblem(f"children[{i}].model_id", f"model {model_id} appears twice")])
    taken = await repo.taken_model_ids(ids)
    if taken:
        raise _id_taken("model", sorted(taken)[0])
    known = await repo.known_symbols(
        sorted({s for _, _, o in children for s in referenced_symbols(o.add)})
    )
    parent = await _parent_for(repo, tenant, parent_id, child_id=None)
    models, versions, rows, audits = [], [], [], []
    for i, (model_id, name, overrides) in enumerate(children):
        problems = target_problems(overrides.add, "weights", "overrides.add", known)
        try:
            targets = effective_targets(parent.targets, overrides)
        except OverrideProblem as problem:
            problems += problem.problems
        else:
            problems += limit_problems(parent.targets, parent.limits, overrides)
        _refuse([FieldProblem(f"children[{i}].{p.field}", p.message) for p in problems])
        models.append(Model(model_id=model_id, tenant=tenant, name=name, current_version=1))
        version = ModelVersion(
            model_id=model_id,
            version=1,
            changed_by=changed_by,
            parent_model_id=parent_id,
            parent_version=parent.version,
            overrides=_json(overrides),
        )
        versions.append(version)
        rows += [t.row(model_id, 1) for t in targets]
        after = _version_doc(name, version, targets)
        audits.append(AuditEntry(changed_by, "create", "model", model_id, None, after))
        uow.publish(_model_event(name, version, targets, {}), key=model_id, tenant=tenant)
    await repo.add_models(models)
    await repo.add_versions(versions, rows)
    await repo.append_audit(tenant, audits)
    return len(children)


class _AllocationCheck:
    """Models against the asset allocations they name: the allocations and the securities'
    asset classes read once for many models."""

    def __init__(self, tolerance: Decimal | None) -> None:
        self.tolerance = tolerance
        self.allocations: dict[str, dict[str, Decimal]] = {}
        self.securities: dict[str, Security] = {}

    async def load(
        self,
        repo: ModelHubRepository,
        tenant: str,
        models: Sequence[tuple[str, Sequence[Target]]],
    ) -> None:
        if self.tolerance is None:
            return
        ids = sorted({a for a, _ in models} - set(self.allocations))
        symbols = sorted({t.symbol for _, ts in models for t in ts} - set(self.securities))
        if ids:
            self.allocations.update(await repo.allocation_weights(tenant, ids))
        if symbols:
            self.securities.update({s.symbol: s for s in await repo.get_securities(symbols)})

    def problems(self, allocation_id: str, targets: Sequence[Target]) -> list[FieldProblem]:
        if self.tolerance is None:
            return []
        allocation = self.allocations.get(allocation_id)
        if allocation is None:
            return [FieldProblem("allocation_id", f"no allocation {allocation_id}")]
        prices = {s: row.price for s, row in self.securities.items()}
        weights = (
            {t.symbol: t.weight or Decimal(0) for t in targets}
            if all(t.weight is not None for t in targets)
            else implied_weights(targets, prices)
        )
        classes = {s: row.asset_class for s, row in self.securities.items()}
        return allocation_problems(weights, classes, allocation_id, allocation, self.tolerance)


def _derive(parent: _Derived, child: ModelVersion) -> tuple[list[Target], list[FieldProblem]]:
    """A child's effective targets under a new parent version, or why it cannot follow it."""
    if parent.kind != "weights":
        return [], [FieldProblem("parent_model_id", "the parent is now a share model")]
    overrides = OverridesIn.model_validate(child.overrides or {})
    try:
        targets = effective_targets(parent.targets, overrides, strict=False)
    except OverrideProblem as problem:
        return [], problem.problems
    return targets, limit_problems(parent.targets, parent.limits, overrides)


def _check_shape(body: ModelIn) -> None:
    if body.parent_model_id is None:
        if body.targets is None:
            _refuse([FieldProblem("targets", "a model needs targets, or a parent_model_id")])
        if body.overrides is not None:
            _refuse([FieldProblem("overrides", "overrides need a parent_model_id")])
        if body.direct_index is not None and body.kind != "weights":
            _refuse([FieldProblem("direct_index", "a direct index is a weights model")])
        return
    if body.targets is not None:
        _refuse([FieldProblem("targets", "a child model has overrides of its parent, not targets")])
    if body.direct_index is not None:
        _refuse([FieldProblem("direct_index", "a direct index has targets of its own, no parent")])
    if body.kind != "weights":
        _refuse([FieldProblem("kind", "a child model inherits weights: kind must be weights")])


def _symbols_named(body: ModelIn) -> set[str]:
    overrides = body.overrides or OverridesIn()
    symbols = referenced_symbols([*(body.targets or []), *overrides.add])
    if body.limits is not None:
        symbols.update(body.limits.allowed_additions or [])
    return symbols


def _refuse(problems: Sequence[FieldProblem]) -> None:
    if problems:
        raise InvalidInput(problems[0].message, list(problems))


def _json(body: BaseModel) -> dict[str, Any]:
    doc: dict[str, Any] = body.model_dump(mode="json")
    return doc


def _version_doc(name: str, version: ModelVersion, targets: Sequence[Target]) -> dict[str, Any]:
    """A model version as the audit trail records it (what is not the default only)."""
    doc: dict[str, Any] = {
        "name": name,
        "version": version.version,
        "targets": {t.symbol: t.doc() for t in sorted(targets, key=lambda t: t.symbol)},
    }
    if version.kind != "weights":
        doc["kind"] = version.kind
    if version.swap_back:
        doc["swap_back"] = True
    if version.parent_model_id is not None:
        doc["parent"] = {"model_id": version.parent_model_id, "version": version.parent_version}
        doc["overrides"] = version.overrides
    if version.limits is not None:
        doc["limits"] = version.limits
    if version.allocation_id is not None:
        doc["allocation_id"] = version.allocation_id
    if version.direct_index is not None:
        doc["direct_index"] = version.direct_index
    return doc


def _same(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether two versions are one: the same but for their numbers (a child derived from a
    newer parent version with the same effective targets is the same model)."""

    def essence(doc: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in doc.items() if k != "version"}
        if "parent" in out:
            out["parent"] = out["parent"]["model_id"]
        return out

    return essence(before) == essence(after)


async def _prices_for(
    repo: ModelHubRepository, kind: str, targets: Sequence[Target]
) -> dict[str, Decimal]:
    if kind != "shares" or all(t.weight is not None for t in targets):
        return {}
    return {s.symbol: s.price for s in await repo.get_securities([t.symbol for t in targets])}


def _model_event(
    name: str, version: ModelVersion, targets: Sequence[Target], prices: dict[str, Decimal]
) -> ModelChangedV1:
    """model-changed of a version; a share model given no weights publishes the weights its
    shares imply at the master's prices."""
    implied = implied_weights(targets, prices) if prices else {}
    parent = (
        ModelParentV1(model_id=version.parent_model_id, version=version.parent_version)
        if version.parent_model_id is not None and version.parent_version is not None
        else None
    )
    return ModelChangedV1(
        model_id=version.model_id,
        name=name,
        version=version.version,
        targets=[t.event(implied.get(t.symbol)) for t in sorted(targets, key=lambda t: t.symbol)],
        changed_by=version.changed_by,
        kind="shares" if version.kind == "shares" else "weights",
        swap_back=version.swap_back,
        parent=parent,
        direct_index=(
            DirectIndexV1.model_validate(version.direct_index) if version.direct_index else None
        ),
    )


def _view(model: Model, version: ModelVersion, targets: Sequence[Target]) -> ModelOut:
    parent = (
        ParentOut(model_id=version.parent_model_id, version=version.parent_version)
        if version.parent_model_id is not None and version.parent_version is not None
        else None
    )
    return ModelOut(
        model_id=model.model_id,
        tenant=model.tenant,
        name=model.name,
        version=version.version,
        changed_by=version.changed_by,
        created_at=version.created_at,
        kind=version.kind,
        swap_back=version.swap_back,
        parent=parent,
        overrides=OverridesIn.model_validate(version.overrides) if version.overrides else None,
        limits=LimitsIn.model_validate(version.limits) if version.limits else None,
        allocation_id=version.allocation_id,
        direct_index=(
            DirectIndexIn.model_validate(version.direct_index) if version.direct_index else None
        ),
        targets=[t.out() for t in sorted(targets, key=lambda t: t.symbol)],
    )


async def get_security(repo: ModelHubRepository, symbol: str) -> Security:
    """A security of the master."""
    row = await repo.get_security(symbol)
    if row is None:
        raise NotFound(f"no security {symbol}")
    return row


def _id_taken(kind: str, resource_id: str) -> Conflict:
    # Ids are unique platform-wide (the services that follow models and sets key them by
    # id alone): one another tenant holds is refused without saying more about it.
    return Conflict(
        f"{kind} id {resource_id} is not available: ids are unique across the platform; "
        "choose another id"
    )


async def get_model(
    repo: ModelHubRepository, tenant: str, model_id: str, version: int | None = None
) -> ModelOut:
    """A version of the tenant's model (its current one by default): a child's overrides
    and its effective targets."""
    model = await repo.get_model(tenant, model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    number = version or model.current_version
    stored = await repo.get_version(tenant, model_id, number)
    if stored is None:
        raise NotFound(f"model {model_id} has no version {number}")
    targets = await repo.targets_of(tenant, model_id, number)
    return _view(model, stored, [Target.stored(t) for t in targets])


def _duplicates(values: Sequence[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    out = []
    for i, value in enumerate(values):
        if value in seen:
            out.append((i, value))
        seen.add(value)
    return out


# --- equivalence sets -------------------------------------------------------------------------


def _set_event(row: EquivalenceSet) -> EquivalenceSetChangedV1:
    return EquivalenceSetChangedV1(
        set_id=row.set_id,
        name=row.name,
        members=[] if row.removed else list(row.members),
        identical=row.identical,
        removed=row.removed,
        version=row.version,
    )


async def put_equivalence_set(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    tenant: str,
    set_id: str,
    body: EquivalenceSetIn,
    changed_by: str,
) -> EquivalenceSetPublished:
    """Define or replace a set of the platform (a new version unless nothing changed; a new
    one is kept under `tenant`) and announce it."""
    duplicates = _duplicates(body.members)
    if duplicates:
        raise InvalidInput(
            f"security {duplicates[0][1]} appears more than once in the set",
            [FieldProblem(f"members[{i}]", "duplicate security") for i, _ in duplicates],
        )
    known = await repo.known_symbols(body.members)
    unknown = [(i, s) for i, s in enumerate(body.members) if s not in known]
    if unknown:
        raise InvalidInput(
            f"unknown security {unknown[0][1]}: add it to the security master first",
            [FieldProblem(f"members[{i}]", f"unknown security {s}") for i, s in unknown],
        )
    row = await repo.get_equivalence_set(set_id, for_update=True)
    for other in await repo.equivalence_sets_holding(body.members, except_set=set_id):
        shared = sorted(set(other.members) & set(body.members))
        i = body.members.index(shared[0])
        which = f"equivalence set {other.set_id}"
        raise InvalidInput(
            f"{shared[0]} is already in {which}: a security can be in one equivalence set only",
            [FieldProblem(f"members[{i}]", f"already in {which}")],
        )
    if row is not None and (row.name, row.members, row.identical, row.removed) == (
        body.name,
        body.members,
        body.identical,
        False,
    ):
        return EquivalenceSetPublished(**_set_out(row).model_dump(), created=False)
    if row is None:
        row = EquivalenceSet(
            set_id=set_id,
            tenant=tenant,
            name=body.name,
            members=list(body.members),
            version=0,
            changed_by=changed_by,
        )
    before = None if row.version == 0 else _set_doc(row)
    row.name, row.members = body.name, list(body.members)
    row.identical, row.removed = body.identical, False
    await _save_new_set_version(uow, repo, row, changed_by, before)
    return EquivalenceSetPublished(**_set_out(row).model_dump(), created=True)


async def remove_equivalence_set(
    uow: UnitOfWork, repo: ModelHubRepository, set_id: str, changed_by: str
) -> EquivalenceSetOut:
    """Mark the set removed (a new version) and announce it."""
    row = await repo.get_equivalence_set(set_id, for_update=True)
    if row is None or row.removed:
        raise NotFound(f"no equivalence set {set_id}")
    before = _set_doc(row)
    row.removed = True
    await _save_new_set_version(uow, repo, row, changed_by, before)
    return _set_out(row)


async def _save_new_set_version(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    row: EquivalenceSet,
    changed_by: str,
    before: dict[str, Any] | None,
) -> None:
    row.version += 1
    row.changed_by = changed_by
    row.updated_at = datetime.now(UTC)
    await repo.save_equivalence_set(row)
    action = "create" if before is None else "remove" if row.removed else "update"
    after = None if row.removed else _set_doc(row)
    await repo.append_audit(
        row.tenant, [AuditEntry(changed_by, action, "equivalence-set", row.set_id, before, after)]
    )
    uow.publish(_set_event(row), key=row.set_id, tenant=row.tenant)


def _set_doc(row: EquivalenceSet) -> dict[str, Any]:
    return row.model_dump(exclude={"updated_at", "changed_by"})


def _set_out(row: EquivalenceSet) -> EquivalenceSetOut:
    return EquivalenceSetOut.model_validate(row, from_attributes=True)


async def get_equivalence_set(repo: ModelHubRepository, set_id: str) -> EquivalenceSetOut:
    """One of the platform's equivalence sets."""
    row = await repo.get_equivalence_set(set_id)
    if row is None:
        raise NotFound(f"no equivalence set {set_id}")
    return _set_out(row)


async def list_equivalence_sets(
    repo: ModelHubRepository, include_removed: bool, limit: int, offset: int
) -> list[EquivalenceSetOut]:
    """A page of the platform's equivalence sets, by id (removed ones too if asked)."""
    rows = await repo.list_equivalence_sets(include_removed, limit, offset)
    return [_set_out(r) for r in rows]


# --- corporate actions ------------------------------------------------------------------------


async def follow_corporate_action(
    uow: UnitOfWork, repo: ModelHubRepository, action: CorporateActionRecordedV1
) -> None:
    """Keep the security master, models and equivalence sets true to a corporate action.

    - split / reverse split: the price is restated per new share (models are weights, so
      they do not change);
    - symbol change, stock merger: the new symbol replaces the old one in every model
      (weights add up if the model already holds it) and in every equivalence set; the new
      security is added to the master from the old one if unknown (price divided by the
      ratio);
    - cash merger: the security leaves every model (its weight goes to the other targets
      pro rata) and every equivalence set;
    - spin-off, cash dividend: nothing to do here (the book of record has the new shares
      or cash; a spun-off security outside the model is sold by the next rebalance).
    Each model and set touched, of every tenant (securities are shared), gets a new version
    by `corporate-action:<action id>`.
    (Restriction lists live in account-svc, which follows the same event.)
    """
    actor = f"corporate-action:{action.action_id}"
    # the security master is shared: its changes go to the chain of the action's tenant
    tenant = uow.causation.tenant if uow.causation is not None else SHARED_TENANT
    old = await repo.get_security(action.symbol)
    if action.type in ("split", "reverse-split"):
        if old is not None and action.numerator and action.denominator:
            old.price = _price(old.price * action.denominator / action.numerator)
            await _republish_securities(uow, repo, [old], tenant, actor)
        return
    if action.type in ("symbol-change", "stock-merger") and action.new_symbol:
        ratio = action.ratio if action.type == "stock-merger" and action.ratio else Decimal(1)
        if old is not None and await repo.get_security(action.new_symbol) is None:
            new = Security(**{**old.model_dump(), "symbol": action.new_symbol})
            new.price = _price(old.price / ratio)
            if action.type == "symbol-change":
                old.cusip = None  # the CUSIP moves with the security
            await _republish_securities(uow, repo, [new], tenant, actor)
        await _replace_in_models(uow, repo, action.symbol, action.new_symbol, actor, ratio)
        await _replace_in_sets(uow, repo, action.symbol, action.new_symbol, actor)
    elif action.type == "cash-merger":
        await _replace_in_models(uow, repo, action.symbol, None, actor)
        await _replace_in_sets(uow, repo, action.symbol, None, actor)


def _price(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.000001"))


async def _republish_securities(
    uow: UnitOfWork, repo: ModelHubRepository, rows: Sequence[Security], tenant: str, actor: str
) -> None:
    await upsert_securities(
        uow,
        repo,
        [SecurityIn.model_validate(r.model_dump(exclude={"updated_at"})) for r in rows],
        tenant=tenant,
        actor=actor,
    )


async def _replace_in_models(
    uow: UnitOfWork,
    repo: ModelHubRepository,
    symbol: str,
    new_symbol: str | None,
    actor: str,
    ratio: Decimal = Decimal(1),
) -> None:
    """A new version of each model holding `symbol`, with `new_symbol` in its place (None:
    out, its weight spread pro rata), settings kept. Models of their own first: a new parent
    version cascades to its children; a child whose own overrides name the security follows
    with them rewritten (a child they no longer fit keeps its version)."""
    children: list[tuple[Model, ModelVersion]] = []
    for held in await repo.models_holding(symbol):
        model = await repo.get_model(held.tenant, held.model_id, for_update=True)
        assert model is not None
        stored = await repo.get_version(model.tenant, model.model_id, model.current_version)
        assert stored is not None
        if stored.parent_model_id is not None:
            children.append((model, stored))
            continue
        current = await repo.targets_of(model.tenant, model.model_id, model.current_version)
        targets = renamed_targets(
            [Target.stored(t) for t in current], symbol, new_symbol, ratio, stored.kind
        )
        if not targets:
            continue  # a one-security model bought out for cash: the manager decides
        body = ModelIn(
            name=model.name,
            kind="shares" if stored.kind == "shares" else "weights",
            targets=targets,
            swap_back=stored.swap_back,
            limits=renamed_limits(stored.limits, symbol, new_symbol),
            allocation_id=stored.allocation_id,
            direct_index=(
                DirectIndexIn.model_validate(stored.direct_index) if stored.direct_index else None
            ),
        )
        await publish_model(
            uow, repo, model.tenant, model.model_id, body, actor, 1e-9, allocation_tolerance=None
        )
    for model, stored in children:
        fresh = await repo.get_model(model.tenant, model.model_id, for_update=True)
        assert fresh is not None and stored.parent_model_id is not None
        overrides = OverridesIn.model_validate(stored.overrides or {})
        rewritten = renamed_overrides(overrides, symbol, new_symbol)
        if rewritten is None:
            continue  # inherited: its parent's new version has cascaded
        body = ModelIn(
            name=fresh.name,
            parent_model_id=stored.parent_model_id,
            overrides=rewritten,
            swap_back=stored.swap_back,
            limits=renamed_limits(stored.limits, symbol, new_symbol),
            allocation_id=stored.allocation_id,
        )
        try:
            await publish_model(
                uow,
                repo,
                fresh.tenant,
                fresh.model_id,
                body,
                actor,
                1e-9,
                allocation_tolerance=None,
            )
        except InvalidInput:
            continue  # the manager decides; the child keeps its last effective version


async def _replace_in_sets(
    uow: UnitOfWork, repo: ModelHubRepository, symbol: str, new_symbol: str | None, actor: str
) -> None:
    for row in await repo.sets_with_member(symbol, for_update=True):
        members = [m for m in row.members if m != symbol]
        if new_symbol is not None and new_symbol not in members:
            members.append(new_symbol)
        before = _set_doc(row)
        row.members = members
        if len(members) < 2:
            row.removed = True  # nothing left to be equivalent to
        await _save_new_set_version(uow, repo, row, actor, before)


# --- asset allocations ------------------------------------------------------------------------


async def put_allocation(
    uow: UnitOfWork,
    tenant: str,
    allocation_id: str,
    body: AllocationIn,
    changed_by: str,
    tolerance: float,
) -> AllocationPublished:
    """Store a new version of the tenant's asset allocation (unless it is unchanged),
    audited; its weights sum to 1 over asset classes of the security master. An id another
    tenant has is refused (409). Models naming it are checked when they are published."""
    session = uow.session
    total = sum(body.weights.values(), Decimal(0))
    problems = [
        FieldProblem(f"weights.{cls}", f"no security of the master has asset class {cls}")
        for cls in sorted(
            set(body.weights) - await repository.known_asset_classes(session, list(body.weights))
        )
    ]
    if abs(total - 1) > Decimal(str(tolerance)):
        problems.append(
            FieldProblem("weights", f"asset-class weights sum to {total * 100:f}%, not 100%")
        )
    _refuse(problems)
    allocation = await repository.get_allocation(session, tenant, allocation_id, for_update=True)
    before: dict[str, Any] | None = None
    if allocation is not None:
        current = await repository.get_allocation_version(
            session, tenant, allocation_id, allocation.current_version
        )
        assert current is not None
        before = _allocation_doc(current)
        if current.name == body.name and _weights(current) == body.weights:
            return AllocationPublished(
                **_allocation_out(allocation, current).model_dump(), created=False
            )
        allocation.current_version += 1
        allocation.name = body.name
        allocation.updated_at = datetime.now(UTC)
    elif await repository.allocation_id_taken(session, allocation_id):
        raise _id_taken("allocation", allocation_id)
    else:
        allocation = Allocation(
            allocation_id=allocation_id, tenant=tenant, name=body.name, current_version=1
        )
    version = AllocationVersion(
        allocation_id=allocation_id,
        version=allocation.current_version,
        name=body.name,
        weights={cls: format(w, "f") for cls, w in sorted(body.weights.items())},
        changed_by=changed_by,
    )
    await repository.add_allocation_version(session, allocation, version)
    await audit.append(
        session,
        tenant,
        [
            AuditEntry(
                changed_by,
                "create" if before is None else "update",
                "allocation",
                allocation_id,
                before,
                _allocation_doc(version),
            )
        ],
    )
    return AllocationPublished(**_allocation_out(allocation, version).model_dump(), created=True)


async def get_allocation(
    session: AsyncSession, tenant: str, allocation_id: str, version: int | None = None
) -> AllocationOut:
    """A version of the tenant's asset allocation (its current one by default)."""
    allocation = await repository.get_allocation(session, tenant, allocation_id)
    if allocation is None:
        raise NotFound(f"no allocation {allocation_id}")
    number = version or allocation.current_version
    stored = await repository.get_allocation_version(session, tenant, allocation_id, number)
    if stored is None:
        raise NotFound(f"allocation {allocation_id} has no version {number}")
    return _allocation_out(allocation, stored)


async def list_allocations(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> list[AllocationOut]:
    """A page of the tenant's asset allocations (current versions), by id."""
    rows = await repository.list_allocations(session, tenant, limit, offset)
    return [_allocation_out(a, v) for a, v in rows]


def _weights(version: AllocationVersion) -> dict[str, Decimal]:
    return {cls: Decimal(w) for cls, w in version.weights.items()}


def _allocation_doc(version: AllocationVersion) -> dict[str, Any]:
    return {"name": version.name, "version": version.version, "weights": version.weights}


def _allocation_out(allocation: Allocation, version: AllocationVersion) -> AllocationOut:
    return AllocationOut(
        allocation_id=allocation.allocation_id,
        tenant=allocation.tenant,
        name=version.name,
        version=version.version,
        weights=_weights(version),
        changed_by=version.changed_by,
        created_at=version.created_at,
    )


# --- the audit trail --------------------------------------------------------------------------


async def allocation_audit_trail(
    session: AsyncSession,
    tenant: str,
    allocation_id: str,
    after: int | None,
    limit: int,
    offset: int,
) -> list[AuditRecordOut]:
    """A page of the audit records of one of the tenant's allocations."""
    if await repository.get_allocation(session, tenant, allocation_id) is None:
        raise NotFound(f"no allocation {allocation_id}")
    return await audit.read(
        session,
        tenant,
        subject_type="allocation",
        subject_id=allocation_id,
        after=after,
        limit=limit,
        offset=offset,
    )


async def model_audit_trail(
    session: AsyncSession, tenant: str, model_id: str, after: int | None, limit: int, offset: int
) -> list[AuditRecordOut]:
    """A page of the audit records of one of the tenant's models (another's: not found)."""
    if await PostgresModelHubRepository(session).get_model(tenant, model_id) is None:
        raise NotFound(f"no model {model_id}")
    return await audit.read(
        session,
        tenant,
        subject_type="model",
        subject_id=model_id,
        after=after,
        limit=limit,
        offset=offset,
    )
