"""reporting-svc's webhook routes: a tenant's subscriptions, their delivery log and
redelivery (docs/webhooks.md). Managing takes the admin permission, reading `read`."""

import uuid
from datetime import timedelta
from typing import Annotated

from ballast_common.app import ReadSession, RuntimeDep, UoW
from ballast_common.auth import CanAdminister, CanRead
from ballast_common.pagination import Offset, Page
from fastapi import APIRouter, Query, Response

from reporting_svc import webhook_service as service
from reporting_svc.schemas import (
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookSecret,
)
from reporting_svc.settings import Settings
from reporting_svc.webhooks import DeliveryStatus

router = APIRouter(tags=["webhooks"])


def _settings(runtime: RuntimeDep) -> Settings:
    settings = runtime.settings
    assert isinstance(settings, Settings)
    return settings


def _grace(runtime: RuntimeDep) -> timedelta:
    return timedelta(seconds=_settings(runtime).webhook_secret_grace_s)


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Subscribe an endpoint to event types; the signing secret is shown only here",
)
async def create_webhook(
    body: WebhookIn, uow: UoW, caller: CanAdminister, runtime: RuntimeDep
) -> WebhookCreated:
    allow_private = _settings(runtime).webhook_allow_private_destinations
    return await service.create_subscription(
        uow, caller.tenant, caller.subject, body, allow_private
    )


@router.get("/webhooks", response_model=Page[WebhookOut], summary="The tenant's subscriptions")
async def list_webhooks(
    session: ReadSession,
    caller: CanRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> Page[WebhookOut]:
    return await service.list_subscriptions(session, caller.tenant, limit, offset)


@router.get("/webhooks/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: uuid.UUID, session: ReadSession, caller: CanRead) -> WebhookOut:
    return await service.get_subscription(session, caller.tenant, webhook_id)


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    summary="Stop a subscription; its pending deliveries are cancelled, its log kept",
)
async def delete_webhook(webhook_id: uuid.UUID, uow: UoW, caller: CanAdminister) -> Response:
    await service.delete_subscription(uow, caller.tenant, webhook_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/secret:rotate",
    response_model=WebhookSecret,
    summary="A new signing secret; the previous one signs alongside for the grace period",
)
async def rotate_webhook_secret(
    webhook_id: uuid.UUID, uow: UoW, runtime: RuntimeDep, caller: CanAdminister
) -> WebhookSecret:
    return await service.rotate_secret(uow, caller.tenant, webhook_id, _grace(runtime))


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=Page[WebhookDeliveryOut],
    summary="A subscription's deliveries, newest first, with every attempt",
)
async def list_webhook_deliveries(
    webhook_id: uuid.UUID,
    session: ReadSession,
    caller: CanRead,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> Page[WebhookDeliveryOut]:
    return await service.list_deliveries(session, caller.tenant, webhook_id, status, limit, offset)


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=WebhookDeliveryOut,
    summary="Send a delivered or failed delivery again, with the same webhook-id",
)
async def redeliver_webhook(
    delivery_id: uuid.UUID, uow: UoW, caller: CanAdminister
) -> WebhookDeliveryOut:
    return await service.redeliver(uow, caller.tenant, delivery_id)
