"""reporting-svc's webhook service functions: subscriptions, queuing deliveries in the
consumers' transactions, the delivery log and redelivery (rules in webhooks.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from ballast_common.consumer import Delivery
from ballast_common.errors import Conflict, FieldProblem, InvalidInput, NotFound
from ballast_common.pagination import Page
from ballast_common.uow import UnitOfWork
from sqlmodel.ext.asyncio.session import AsyncSession

from reporting_svc import repository as repo
from reporting_svc.schemas import (
    WebhookAttemptOut,
    WebhookCreated,
    WebhookDeliveryOut,
    WebhookIn,
    WebhookOut,
    WebhookSecret,
)
from reporting_svc.webhooks import (
    EVENT_TYPES,
    NOTIFY_CHANNEL,
    DeliveryStatus,
    literal_host_refusal,
    new_secret,
    webhook_body,
)

# --- consumers: one set-based insert per batch ------------------------------------------------


async def enqueue(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> int:
    """Queue one webhook delivery per event of the batch and subscription of its tenant to
    its type, in the consumer's transaction; returns how many were queued."""
    if not deliveries:
        return 0
    event_type = deliveries[0].envelope.type
    if event_type not in EVENT_TYPES:
        return 0
    tenants = sorted({d.envelope.tenant for d in deliveries})
    subscribed = await repo.tenants_subscribed(uow.session, event_type, tenants)
    if not subscribed:
        return 0
    # only the events someone subscribed to are turned into bodies
    chosen = [d for d in deliveries if d.envelope.tenant in subscribed]
    return await repo.insert_webhook_deliveries(
        uow.session,
        event_type,
        message_ids=[d.envelope.id for d in chosen],
        tenants=[d.envelope.tenant for d in chosen],
        bodies=[webhook_body(d) for d in chosen],
        channel=NOTIFY_CHANNEL,
    )


# --- subscriptions ----------------------------------------------------------------------------


async def create_subscription(
    uow: UnitOfWork, tenant: str, actor: str, request: WebhookIn, allow_private: bool = False
) -> WebhookCreated:
    """Store a subscription with a new secret, shown to the caller this once; a URL whose
    host is a non-public address is refused (a name is checked before each delivery)."""
    refusal = None if allow_private else literal_host_refusal(request.url)
    if refusal is not None:
        raise InvalidInput(f"url: {refusal}", [FieldProblem("url", refusal)])
    row = await repo.insert_webhook_subscription(
        uow.session,
        id=uuid.uuid4(),
        tenant=tenant,
        url=request.url,
        event_types=sorted(set(request.event_types)),
        description=request.description,
        secret=new_secret(),
        created_by=actor,
    )
    return WebhookCreated(**_subscription_out(row).model_dump(), secret=row["secret"])


async def list_subscriptions(
    session: AsyncSession, tenant: str, limit: int, offset: int
) -> Page[WebhookOut]:
    """The tenant's subscriptions, oldest first."""
    rows = await repo.webhook_subscriptions(session, tenant, limit + 1, offset)
    return Page[WebhookOut].of([_subscription_out(r) for r in rows], limit, offset)


async def get_subscription(session: AsyncSession, tenant: str, id: uuid.UUID) -> WebhookOut:
    """One of the tenant's subscriptions; NotFound for another tenant's or a deleted one."""
    return _subscription_out(await _subscription(session, tenant, id))


async def delete_subscription(uow: UnitOfWork, tenant: str, id: uuid.UUID) -> None:
    """Stop a subscription: nothing more is queued for it and its pending deliveries are
    cancelled; its delivery log stays."""
    if not await repo.delete_webhook_subscription(uow.session, tenant, id):
        raise NotFound(f"webhook {id} not found")


async def rotate_secret(
    uow: UnitOfWork, tenant: str, id: uuid.UUID, grace: timedelta
) -> WebhookSecret:
    """Give a subscription a new secret; the current one keeps signing alongside for
    `grace` (a secret rotated out before replaces the older one)."""
    row = await repo.rotate_webhook_secret(uow.session, tenant, id, new_secret(), grace)
    if row is None:
        raise NotFound(f"webhook {id} not found")
    return WebhookSecret(
        id=row["id"], secret=row["secret"], previous_secret_expires_at=row["previous_secret_until"]
    )


async def _subscription(session: AsyncSession, tenant: str, id: uuid.UUID) -> dict[str, object]:
    row = await repo.webhook_subscription(session, tenant, id)
    if row is None:
        raise NotFound(f"webhook {id} not found")
    return row


def _subscription_out(row: dict[str, object]) -> WebhookOut:
    return WebhookOut.model_validate(
        {**row, "previous_secret_expires_at": row["previous_secret_until"]}
    )


# --- deliveries -------------------------------------------------------------------------------


async def list_deliveries(
    session: AsyncSession,
    tenant: str,
    subscription_id: uuid.UUID,
    status: DeliveryStatus | None,
    limit: int,
    offset: int,
) -> Page[WebhookDeliveryOut]:
    """A subscription's deliveries, newest first, each with its attempts."""
    await _subscription(session, tenant, subscription_id)
    rows = await repo.webhook_deliveries(
        session, tenant, subscription_id, status, limit + 1, offset
    )
    page = rows[:limit]
    attempts = await repo.webhook_attempts(session, [r["id"] for r in page])
    items = [
        WebhookDeliveryOut.model_validate(
            {
                **r,
                "webhook_id": r["message_id"],
                "attempt_log": [WebhookAttemptOut.model_validate(a) for a in attempts[r["id"]]],
            }
        )
        for r in page
    ]
    return Page[WebhookDeliveryOut](
        items=items,
        limit=limit,
        offset=offset,
        next_offset=offset + limit if len(rows) > limit else None,
    )


async def redeliver(uow: UnitOfWork, tenant: str, delivery_id: uuid.UUID) -> WebhookDeliveryOut:
    """Queue a delivered or failed delivery again, now, with the same webhook-id and a
    fresh budget of attempts."""
    state = await repo.webhook_delivery_status(uow.session, tenant, delivery_id)
    if state is None:
        raise NotFound(f"webhook delivery {delivery_id} not found")
    if state not in ("delivered", "failed"):
        raise Conflict(
            f"webhook delivery {delivery_id} is {state}: only a delivered or failed one is sent "
            "again"
        )
    row = await repo.requeue_webhook_delivery(uow.session, tenant, delivery_id, NOTIFY_CHANNEL)
    attempts = await repo.webhook_attempts(uow.session, [delivery_id])
    return WebhookDeliveryOut.model_validate(
        {
            **row,
            "webhook_id": row["message_id"],
            "attempt_log": [WebhookAttemptOut.model_validate(a) for a in attempts[delivery_id]],
        }
    )
