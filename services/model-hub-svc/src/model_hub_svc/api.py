"""model-hub-svc's REST routes: parse, call the service layer, return. The caller (tenant,
actor, roles) is the bearer token's; the security master and the equivalence sets are shared
by every tenant, models are the caller's tenant's."""

from typing import Annotated

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.audit import (
    AfterQuery,
    AuditLimit,
    AuditRecordOut,
)
from ballast_common.auth import CanManageModels, CanManagePlatform, CanRead
from ballast_common.openapi import CREATES_RESOURCE
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Path, Query, Response

from model_hub_svc import repository, service
from model_hub_svc.repository import PostgresModelHubRepository
from model_hub_svc.schemas import (
    AllocationIn,
    AllocationOut,
    AllocationPublished,
    EquivalenceSetIn,
    EquivalenceSetOut,
    EquivalenceSetPublished,
    ModelIn,
    ModelOut,
    ModelPublished,
    ModelSummary,
    SecuritiesIn,
    SecurityOut,
)
from model_hub_svc.settings import Settings

router = APIRouter()
SHARED = (
    "The security master is platform-wide reference data, shared by every tenant: every "
    "tenant reads it, only a platform operator (platform:write) changes it."
)
SETS_SHARED = (
    "Equivalence sets are platform-wide, like the security master: rebalancing and wash-sale "
    "checks apply every live set to every tenant's book, so every tenant reads them and only "
    "a platform operator (platform:write) changes them (a new set is kept under its tenant)."
)
ID_TAKEN = (
    " Ids are unique across the platform: an id another tenant has is refused with 409 "
    "(which says nothing more about it); another tenant's id is otherwise 404, as an unknown one."
)
Limit = Annotated[int, Query(ge=1, le=5000)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version of the model")]


@router.put(
    "/securities",
    tags=["securities"],
    summary="Add or update securities (up to 10,000)",
    description=SHARED,
    max_body_size=8 * 1024 * 1024,
)
async def put_securities(body: SecuritiesIn, uow: UoW, caller: CanManagePlatform) -> dict[str, int]:
    return {
        "upserted": await service.upsert_securities(
            uow,
            PostgresModelHubRepository(uow.session),
            body.securities,
            tenant=caller.tenant,
            actor=caller.subject,
        )
    }


@router.get(
    "/securities",
    tags=["securities"],
    response_model=Page[SecurityOut],
    summary="By symbol",
    description=SHARED,
)
async def list_securities(
    session: ReadSession,
    caller: CanRead,
    limit: Limit = 500,
    offset: Offset = 0,
) -> Page[SecurityOut]:
    rows = await repository.list_securities(session, limit + 1, offset)
    securities = [SecurityOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[SecurityOut].of(securities, limit, offset)


@router.get(
    "/securities/{symbol}", tags=["securities"], response_model=SecurityOut, description=SHARED
)
async def get_security(symbol: str, session: ReadSession, caller: CanRead) -> SecurityOut:
    row = await service.get_security(PostgresModelHubRepository(session), symbol)
    return SecurityOut.model_validate(row, from_attributes=True)


@router.put(
    "/models/{model_id}",
    tags=["models"],
    summary="Publish a new version of a model",
    description="The model is the caller's tenant's; the version is recorded as made by the "
    "token's subject." + ID_TAKEN,
    response_model=ModelPublished,
    openapi_extra=CREATES_RESOURCE,
)
async def put_model(
    model_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")],
    body: ModelIn,
    uow: UoW,
    runtime: RuntimeDep,
    response: Response,
    caller: CanManageModels,
) -> ModelPublished:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    published = await service.publish_model(
        uow,
        PostgresModelHubRepository(uow.session),
        caller.tenant,
        model_id,
        body,
        caller.subject,
        settings.weight_sum_tolerance,
        settings.allocation_tolerance,
    )
    response.status_code = 201 if published.created else 200
    return published


@router.get(
    "/models", tags=["models"], response_model=Page[ModelSummary], summary="The tenant's, by id"
)
async def list_models(
    session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[ModelSummary]:
    rows = await repository.list_models(session, caller.tenant, limit + 1, offset)
    models = [ModelSummary.model_validate(m, from_attributes=True) for m in rows]
    return Page[ModelSummary].of(models, limit, offset)


@router.get("/models/{model_id}", tags=["models"], response_model=ModelOut)
async def get_model(model_id: str, session: ReadSession, caller: CanRead) -> ModelOut:
    return await service.get_model(PostgresModelHubRepository(session), caller.tenant, model_id)


@router.get("/models/{model_id}/versions/{version}", tags=["models"], response_model=ModelOut)
async def get_model_version(
    model_id: str, version: Version, session: ReadSession, caller: CanRead
) -> ModelOut:
    return await service.get_model(
        PostgresModelHubRepository(session), caller.tenant, model_id, version
    )


SetId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


@router.put(
    "/equivalence-sets/{set_id}",
    tags=["equivalence sets"],
    summary="Define or replace an equivalence set",
    description=SETS_SHARED + " The version is recorded as made by the token's subject. A "
    "security can be in one live set only.",
    response_model=EquivalenceSetPublished,
    openapi_extra=CREATES_RESOURCE,
)
async def put_equivalence_set(
    set_id: SetId, body: EquivalenceSetIn, uow: UoW, response: Response, caller: CanManagePlatform
) -> EquivalenceSetPublished:
    published = await service.put_equivalence_set(
        uow, PostgresModelHubRepository(uow.session), caller.tenant, set_id, body, caller.subject
    )
    response.status_code = 201 if published.created else 200
    return published


@router.delete(
    "/equivalence-sets/{set_id}",
    tags=["equivalence sets"],
    response_model=EquivalenceSetOut,
    description=SETS_SHARED,
)
async def delete_equivalence_set(
    set_id: SetId, uow: UoW, caller: CanManagePlatform
) -> EquivalenceSetOut:
    return await service.remove_equivalence_set(
        uow, PostgresModelHubRepository(uow.session), set_id, caller.subject
    )


@router.get(
    "/equivalence-sets",
    tags=["equivalence sets"],
    response_model=Page[EquivalenceSetOut],
    summary="By id",
    description=SETS_SHARED,
)
async def list_equivalence_sets(
    session: ReadSession,
    caller: CanRead,
    include_removed: bool = False,
    limit: Limit = 500,
    offset: Offset = 0,
) -> Page[EquivalenceSetOut]:
    sets = await service.list_equivalence_sets(
        PostgresModelHubRepository(session), include_removed, limit + 1, offset
    )
    return Page[EquivalenceSetOut].of(sets, limit, offset)


@router.get(
    "/equivalence-sets/{set_id}",
    tags=["equivalence sets"],
    response_model=EquivalenceSetOut,
    description=SETS_SHARED,
)
async def get_equivalence_set(
    set_id: str, session: ReadSession, caller: CanRead
) -> EquivalenceSetOut:
    return await service.get_equivalence_set(PostgresModelHubRepository(session), set_id)


@router.get(
    "/models/{model_id}/audit",
    tags=["audit"],
    response_model=Page[AuditRecordOut],
    summary="A model's audit trail, in order",
)
async def list_model_audit_records(
    model_id: str,
    session: ReadSession,
    caller: CanRead,
    after: AfterQuery = None,
    limit: AuditLimit = 100,
    offset: Offset = 0,
) -> Page[AuditRecordOut]:
    records = await service.model_audit_trail(
        session, caller.tenant, model_id, after, limit + 1, offset
    )
    return Page[AuditRecordOut].of(records, limit, offset)


AllocationId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


@router.put(
    "/allocations/{allocation_id}",
    tags=["allocations"],
    summary="Publish a new version of an asset allocation",
    description="Asset-class weights (summing to 1) of the caller's tenant; a model naming "
    "the allocation is refused when its asset-class weights stray from them." + ID_TAKEN,
    response_model=AllocationPublished,
    openapi_extra=CREATES_RESOURCE,
)
async def put_allocation(
    allocation_id: AllocationId,
    body: AllocationIn,
    uow: UoW,
    runtime: RuntimeDep,
    response: Response,
    caller: CanManageModels,
) -> AllocationPublished:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    published = await service.put_allocation(
        uow, caller.tenant, allocation_id, body, caller.subject, settings.weight_sum_tolerance
    )
    response.status_code = 201 if published.created else 200
    return published


@router.get(
    "/allocations",
    tags=["allocations"],
    response_model=Page[AllocationOut],
    summary="The tenant's, by id",
)
async def list_allocations(
    session: ReadSession, caller: CanRead, limit: Limit = 500, offset: Offset = 0
) -> Page[AllocationOut]:
    rows = await service.list_allocations(session, caller.tenant, limit + 1, offset)
    return Page[AllocationOut].of(rows, limit, offset)


@router.get("/allocations/{allocation_id}", tags=["allocations"], response_model=AllocationOut)
async def get_allocation(
    allocation_id: str, session: ReadSession, caller: CanRead
) -> AllocationOut:
    return await service.get_allocation(session, caller.tenant, allocation_id)


@router.get(
    "/allocations/{allocation_id}/versions/{version}",
    tags=["allocations"],
    response_model=AllocationOut,
)
async def get_allocation_version(
    allocation_id: str, version: Version, session: ReadSession, caller: CanRead
) -> AllocationOut:
    return await service.get_allocation(session, caller.tenant, allocation_id, version)


@router.get(
    "/allocations/{allocation_id}/audit",
    tags=["audit"],
    response_model=Page[AuditRecordOut],
    summary="An allocation's audit trail, in order",
)
async def list_allocation_audit_records(
    allocation_id: str,
    session: ReadSession,
    caller: CanRead,
    after: AfterQuery = None,
    limit: AuditLimit = 100,
    offset: Offset = 0,
) -> Page[AuditRecordOut]:
    records = await service.allocation_audit_trail(
        session, caller.tenant, allocation_id, after, limit + 1, offset
    )
    return Page[AuditRecordOut].of(records, limit, offset)
