"""model-hub-svc's rules: the security master and publishing model versions."""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ballast_common import audit
from ballast_common.audit import AuditEntry, AuditRecordOut
from ballast_common.book_loads import LoadProblem, StagedLoad
from ballast_common.contracts.events import (
    CorporateActionRecordedV1,
    EquivalenceSetChangedV1,
    ModelChangedV1,
    ModelTargetV1,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc import repository
from model_hub_svc.ports import ModelHubRepository
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import (
    EquivalenceSetIn,
    EquivalenceSetOut,
    EquivalenceSetPublished,
    ModelIn,
    ModelOut,
    ModelPublished,
    SecurityIn,
    TargetIn,
    TargetOut,
)
from model_hub_svc.tables import EquivalenceSet, Model, ModelTarget, ModelVersion, Security

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
) -> ModelPublished:
    """Store a new version of the tenant's model (unless the targets are unchanged) and
    announce it; an id another tenant has is refused (409)."""
    _check_weights(body, tolerance)
    symbols = [t.symbol for t in body.targets]
    known = await repo.known_symbols(symbols)
    unknown = [(i, s) for i, s in enumerate(symbols) if s not in known]
    if unknown:
        raise InvalidInput(
            f"unknown security {unknown[0][1]}: add it to the security master first",
            [FieldProblem(f"targets[{i}].symbol", f"unknown security {s}") for i, s in unknown],
        )
    model = await repo.get_model(tenant, model_id, for_update=True)
    new_targets = {t.symbol: t.weight for t in body.targets}
    before: dict[str, Any] | None = None
    if model is not None:
        current = await repo.targets_of(tenant, model_id, model.current_version)
        before = _model_doc(
            model.name, model.current_version, {t.symbol: t.weight for t in current}
        )
        if {t.symbol: t.weight for t in current} == new_targets and model.name == body.name:
            view = await get_model(repo, tenant, model_id)
            return ModelPublished(**view.model_dump(), created=False)
        model.current_version += 1
        model.name = body.name
    elif await repo.model_id_taken(model_id):
        raise _id_taken("model", model_id)
    else:
        model = Model(model_id=model_id, tenant=tenant, name=body.name, current_version=1)
    version = ModelVersion(model_id=model_id, version=model.current_version, changed_by=changed_by)
    targets = [
        ModelTarget(model_id=model_id, version=model.current_version, symbol=s, weight=w)
        for s, w in new_targets.items()
    ]
    await repo.add_version(model, version, targets)
    after = _model_doc(model.name, model.current_version, new_targets)
    action = "create" if before is None else "update"
    await repo.append_audit(
        tenant, [AuditEntry(changed_by, action, "model", model_id, before, after)]
    )
    uow.publish(
        ModelChangedV1(
            model_id=model_id,
            name=body.name,
            version=model.current_version,
            targets=[ModelTargetV1(symbol=s, weight=w) for s, w in sorted(new_targets.items())],
            changed_by=changed_by,
        ),
        key=model_id,
        tenant=tenant,
    )
    return ModelPublished(
        model_id=model_id,
        tenant=model.tenant,
        name=model.name,
        version=model.current_version,
        changed_by=changed_by,
        created_at=version.created_at,
        targets=[TargetOut(symbol=t.symbol, weight=t.weight) for t in targets],
        created=True,
    )


def _model_doc(name: str, version: int, targets: dict[str, Decimal]) -> dict[str, Any]:
    """A model version as stored (weights at the column's scale)."""
    weights = {s: w.quantize(WEIGHT_PLACES) for s, w in sorted(targets.items())}
    return {"name": name, "version": version, "targets": weights}


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
    """A version of the tenant's model (its current one by default)."""
    model = await repo.get_model(tenant, model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    number = version or model.current_version
    stored = await repo.get_version(tenant, model_id, number)
    if stored is None:
        raise NotFound(f"model {model_id} has no version {number}")
    targets = await repo.targets_of(tenant, model_id, number)
    return ModelOut(
        model_id=model_id,
        tenant=model.tenant,
        name=model.name,
        version=number,
        changed_by=stored.changed_by,
        created_at=stored.created_at,
        targets=[TargetOut(symbol=t.symbol, weight=t.weight) for t in targets],
    )


def _check_weights(body: ModelIn, tolerance: float) -> None:
    duplicates = _duplicates([t.symbol for t in body.targets])
    if duplicates:
        raise InvalidInput(
            f"security {duplicates[0][1]} appears more than once in the model",
            [FieldProblem(f"targets[{i}].symbol", "duplicate security") for i, _ in duplicates],
        )
    total = sum((t.weight for t in body.targets), Decimal(0))
    if abs(total - 1) > Decimal(str(tolerance)):
        raise InvalidInput(
            f"model weights sum to {total * 100:.6f}%, not 100%",
            [FieldProblem("targets", f"weights sum to {total}, expected 1")],
        )


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

WEIGHT_PLACES = Decimal("0.0000000001")  # the model_targets column's scale


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
        await _replace_in_models(uow, repo, action.symbol, action.new_symbol, actor)
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
    uow: UnitOfWork, repo: ModelHubRepository, symbol: str, new_symbol: str | None, actor: str
) -> None:
    for model in await repo.models_holding(symbol):
        current = await repo.targets_of(model.tenant, model.model_id, model.current_version)
        weights = {t.symbol: t.weight for t in current}
        moved = weights.pop(symbol)
        if new_symbol is not None:
            weights[new_symbol] = weights.get(new_symbol, Decimal(0)) + moved
        elif weights:
            weights = _pro_rata(weights, moved)
        else:
            continue  # a one-security model bought out for cash: the manager decides
        body = ModelIn(
            name=model.name,
            targets=[TargetIn(symbol=s, weight=w) for s, w in sorted(weights.items())],
        )
        await publish_model(uow, repo, model.tenant, model.model_id, body, actor, tolerance=1e-9)


def _pro_rata(weights: dict[str, Decimal], freed: Decimal) -> dict[str, Decimal]:
    """Spread `freed` over the weights in proportion; the rounding rest goes to the largest."""
    total = sum(weights.values(), Decimal(0))
    out = {
        s: (w + freed * w / total).quantize(WEIGHT_PLACES) if total > 0 else w
        for s, w in weights.items()
    }
    largest = max(sorted(out), key=lambda s: out[s])
    out[largest] += total + freed - sum(out.values(), Decimal(0))
    return out


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


# --- the audit trail --------------------------------------------------------------------------


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
