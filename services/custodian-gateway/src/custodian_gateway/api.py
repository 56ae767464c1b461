"""custodian-gateway's REST routes: parse, call the service layer, return."""

from typing import Annotated

from ballast_common.app import ReadSession
from fastapi import APIRouter, Query

from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.orders import OrderStatus
from custodian_gateway.schemas import ExecutionOut, OrderDetail, OrderOut, OrdersPage, Stats

router = APIRouter()


@router.get("/orders", tags=["orders"], response_model=OrdersPage, summary="List orders")
async def list_orders(
    session: ReadSession,
    account_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    status: OrderStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> OrdersPage:
    rows = await repo.list_orders(
        session, account_id=account_id, status=status, limit=limit + 1, offset=offset
    )
    return OrdersPage(
        orders=[OrderOut.model_validate(r, from_attributes=True) for r in rows[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


@router.get(
    "/orders/{client_order_id}",
    tags=["orders"],
    response_model=OrderDetail,
    summary="One order with its executions",
)
async def get_order(client_order_id: str, session: ReadSession) -> OrderDetail:
    order, executions = await service.get_order(session, client_order_id)
    return OrderDetail(
        **OrderOut.model_validate(order, from_attributes=True).model_dump(),
        executions=[ExecutionOut.model_validate(e, from_attributes=True) for e in executions],
    )


@router.get("/stats", tags=["stats"], response_model=Stats, summary="Counts and the poll cursor")
async def stats(session: ReadSession) -> Stats:
    return Stats(**await service.stats(session))
