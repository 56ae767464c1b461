"""custodian-gateway's REST routes: parse, call the service layer, return. Every route reads
the caller's tenant's block orders and allocations only (the tenant is the bearer token's)."""

import uuid
from typing import Annotated

from ballast_common.app import ReadSession, RuntimeDep
from ballast_common.auth import CanRead
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query

from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.orders import AllocationStatus, OrderStatus
from custodian_gateway.schemas import (
    AllocationOut,
    ExecutionOut,
    OrderDetail,
    OrderOut,
    Stats,
)
from custodian_gateway.settings import Settings

router = APIRouter()


@router.get("/orders", tags=["orders"], response_model=Page[OrderOut], summary="List block orders")
async def list_orders(
    session: ReadSession,
    caller: CanRead,
    status: OrderStatus | None = None,
    symbol: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Page[OrderOut]:
    rows = await repo.list_orders(
        session, caller.tenant, status=status, symbol=symbol, limit=limit + 1, offset=offset
    )
    orders = [OrderOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[OrderOut].of(orders, limit, offset)


@router.get(
    "/orders/{client_order_id}",
    tags=["orders"],
    response_model=OrderDetail,
    summary="One block order with (a page of) its allocations and its executions",
)
async def get_order(
    client_order_id: str,
    session: ReadSession,
    caller: CanRead,
    allocation_limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    allocation_offset: Offset = 0,
) -> OrderDetail:
    view = await service.get_order(
        session,
        caller.tenant,
        client_order_id,
        allocation_limit=allocation_limit + 1,
        allocation_offset=allocation_offset,
    )
    allocations = [AllocationOut.model_validate(a, from_attributes=True) for a in view.allocations]
    return OrderDetail(
        **OrderOut.model_validate(view.order, from_attributes=True).model_dump(),
        allocations=Page[AllocationOut].of(allocations, allocation_limit, allocation_offset),
        executions=[ExecutionOut.model_validate(e, from_attributes=True) for e in view.executions],
    )


@router.get(
    "/allocations",
    tags=["allocations"],
    response_model=Page[AllocationOut],
    summary="List approved trades' allocations",
)
async def list_allocations(
    session: ReadSession,
    caller: CanRead,
    account_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    status: AllocationStatus | None = None,
    client_order_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> Page[AllocationOut]:
    rows = await repo.list_allocations(
        session,
        caller.tenant,
        account_id=account_id,
        status=status,
        client_order_id=client_order_id,
        limit=limit + 1,
        offset=offset,
    )
    allocations = [AllocationOut.model_validate(r, from_attributes=True) for r in rows]
    return Page[AllocationOut].of(allocations, limit, offset)


@router.get(
    "/trades/{trade_id}",
    tags=["allocations"],
    response_model=AllocationOut,
    summary="An approved trade's allocation: its block and its share of the fills",
)
async def get_trade(trade_id: uuid.UUID, session: ReadSession, caller: CanRead) -> AllocationOut:
    allocation = await service.get_allocation(session, caller.tenant, trade_id)
    return AllocationOut.model_validate(allocation, from_attributes=True)


@router.get(
    "/stats",
    tags=["stats"],
    response_model=Stats,
    summary="The tenant's counts (and the custodian's, for operations)",
)
async def stats(session: ReadSession, runtime: RuntimeDep, caller: CanRead) -> Stats:
    custodian = (
        runtime.settings.custodian_id
        if isinstance(runtime.settings, Settings)
        else service.DEFAULT_CUSTODIAN
    )
    return Stats(**await service.stats(session, caller, custodian))
