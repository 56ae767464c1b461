"""model-hub-svc's rules: the security master and publishing model versions."""

from collections.abc import Sequence
from decimal import Decimal

from ballast_common.contracts.events import (
    ModelChangedV1,
    ModelTargetV1,
    SecuritiesChangedV1,
    SecurityV1,
)
from ballast_common.errors import FieldProblem, InvalidInput, NotFound
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from model_hub_svc import repository as repo
from model_hub_svc.schemas import ModelIn, ModelOut, ModelPublished, SecurityIn, TargetOut
from model_hub_svc.tables import Model, ModelTarget, ModelVersion, Security

SECURITY_MASTER_KEY = "security-master"


async def upsert_securities(uow: UnitOfWork, items: Sequence[SecurityIn]) -> int:
    """Add or update securities and tell the other services (prices included)."""
    duplicates = _duplicates([s.symbol for s in items])
    if duplicates:
        raise InvalidInput(
            f"symbol {duplicates[0][1]} appears more than once",
            [FieldProblem(f"securities[{i}].symbol", "duplicate symbol") for i, _ in duplicates],
        )
    await repo.upsert_securities(uow.session, [Security(**s.model_dump()) for s in items])
    uow.publish(
        SecuritiesChangedV1(securities=[SecurityV1(**s.model_dump()) for s in items]),
        key=SECURITY_MASTER_KEY,
        tenant="global",
    )
    return len(items)


async def publish_model(
    uow: UnitOfWork, model_id: str, body: ModelIn, changed_by: str, tolerance: float
) -> ModelPublished:
    """Store a new version of the model (unless the targets are unchanged) and announce it."""
    _check_weights(body, tolerance)
    symbols = [t.symbol for t in body.targets]
    known = await repo.known_symbols(uow.session, symbols)
    unknown = [(i, s) for i, s in enumerate(symbols) if s not in known]
    if unknown:
        raise InvalidInput(
            f"unknown security {unknown[0][1]}: add it to the security master first",
            [FieldProblem(f"targets[{i}].symbol", f"unknown security {s}") for i, s in unknown],
        )
    model = await repo.get_model(uow.session, model_id, for_update=True)
    new_targets = {t.symbol: t.weight for t in body.targets}
    if model is not None:
        if model.tenant != body.tenant:
            raise InvalidInput(
                f"model {model_id} belongs to another tenant",
                [FieldProblem("tenant", "does not match the model's tenant")],
            )
        current = await repo.targets_of(uow.session, model_id, model.current_version)
        if {t.symbol: t.weight for t in current} == new_targets and model.name == body.name:
            view = await get_model(uow.session, model_id)
            return ModelPublished(**view.model_dump(), created=False)
        model.current_version += 1
        model.name = body.name
    else:
        model = Model(model_id=model_id, tenant=body.tenant, name=body.name, current_version=1)
    version = ModelVersion(model_id=model_id, version=model.current_version, changed_by=changed_by)
    targets = [
        ModelTarget(model_id=model_id, version=model.current_version, symbol=s, weight=w)
        for s, w in new_targets.items()
    ]
    await repo.add_version(uow.session, model, version, targets)
    uow.publish(
        ModelChangedV1(
            model_id=model_id,
            name=body.name,
            version=model.current_version,
            targets=[ModelTargetV1(symbol=s, weight=w) for s, w in sorted(new_targets.items())],
            changed_by=changed_by,
        ),
        key=model_id,
        tenant=body.tenant,
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


async def get_model(session: AsyncSession, model_id: str, version: int | None = None) -> ModelOut:
    model = await repo.get_model(session, model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    number = version or model.current_version
    stored = await repo.get_version(session, model_id, number)
    if stored is None:
        raise NotFound(f"model {model_id} has no version {number}")
    targets = await repo.targets_of(session, model_id, number)
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
