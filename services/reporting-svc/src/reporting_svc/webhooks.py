"""Webhooks out, per the Standard Webhooks spec (docs/webhooks.md): which events a platform
may subscribe to, URLs and secrets, what a delivery's body and headers are, and the retry
schedule. Pure rules: the service functions are in webhook_service.py."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import random
import secrets
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, get_args
from urllib.parse import urlsplit

import pydantic_core
from ballast_common.consumer import Delivery
from pydantic import BaseModel
from standardwebhooks import Webhook

# The events a sponsor or manager platform may subscribe to: topics reporting-svc consumes
# whose facts concern one tenant (the security master is the platform's, not a tenant's).
WebhookEventType = Literal[
    "model-changed",
    "account-changed",
    "drift-detected",
    "trades-proposed",
    "trades-approved",
    "proposal-rejected",
    "fills-received",
    "order-rejected",
    "holdings-reconciled",
    "rebalance-chunk-completed",
]
EVENT_TYPES: tuple[str, ...] = get_args(WebhookEventType)
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
MAX_URL_LENGTH = 2048
MAX_ERROR_CHARS = 500
NOTIFY_CHANNEL = "reporting_webhook_deliveries"  # NOTIFY'd when deliveries become due

DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]


def check_url(url: str) -> str:
    """The URL if a webhook may be sent to it: http or https, a host, no credentials, no
    fragment; ValueError saying what is wrong otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        raise ValueError("a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number or out of range raises here
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL (every request is signed)")
    if parts.fragment:
        raise ValueError("a URL with a #fragment is not sent to a server")
    return url


def address_refusal(address: str) -> str | None:
    """Why a webhook may not be sent to this IP address (None: a public address). Private,
    loopback, link-local (cloud metadata), shared, reserved and multicast addresses reach
    the platform's own network, not a subscriber's (server-side request forgery)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    return f"{address} is not a public address (private, loopback, link-local or reserved)"


def literal_host_refusal(url: str) -> str | None:
    """For a URL whose host is an IP address: why it may not be a webhook's destination."""
    host = urlsplit(url).hostname or ""
    try:
        return address_refusal(host)
    except ValueError:
        return None  # a name: checked when it is resolved, before each delivery


async def destination_refusal(url: str) -> str | None:
    """Resolve the URL's host now and refuse it if any of its addresses is not public (a name
    that resolves to the internal network is refused like the address itself)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    for *_, sockaddr in infos:
        refusal = address_refusal(str(sockaddr[0]))
        if refusal is not None:
            return f"refused: {host} resolves to {refusal}"
    return None


def new_secret() -> str:
    """A fresh signing secret: `whsec_` and 32 random bytes in base64 (the spec's form)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def webhook_body(delivery: Delivery) -> str:
    """What a receiver gets for an event: its type, contract version, time and data, as
    JSON; the data is the payload as it was published (the message's own bytes of it)."""
    envelope = delivery.envelope
    if delivery.raw is not None:
        data = published_payload(delivery.raw)
    else:  # a delivery made without its message (a test kit's): its decoded payload
        payload = delivery.payload
        data = (
            payload.__pydantic_serializer__.to_json(payload)
            if isinstance(payload, BaseModel)
            else pydantic_core.to_json(payload)
        ).decode()
    return (
        f'{{"type":"{envelope.type}","version":{envelope.version},'
        f'"timestamp":"{envelope.time.isoformat()}","data":{data}}}'
    )


_JSON = json.JSONDecoder()
_SPACE = " \t\n\r"


def published_payload(message: bytes) -> str:
    """The JSON text of an envelope's `payload` exactly as it stands in `message`;
    ValueError if the message is no JSON object with a payload."""
    text = message.decode()
    at = _skip_space(text, 0)
    if text[at : at + 1] != "{":
        raise ValueError("the message is not a JSON object")
    found = None
    at = _skip_space(text, at + 1)
    while text[at : at + 1] == '"':
        key, at = _JSON.raw_decode(text, at)
        at = _skip_space(text, at)
        if text[at : at + 1] != ":":
            raise ValueError(f"no ':' after the key {key!r}")
        start = _skip_space(text, at + 1)
        _, at = _JSON.raw_decode(text, start)
        if key == "payload":  # the last one, as the envelope's decoding takes it
            found = text[start:at]
        at = _skip_space(text, at)
        if text[at : at + 1] == ",":
            at = _skip_space(text, at + 1)
    if found is None:
        raise ValueError("the message has no payload")
    return found


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in _SPACE:
        at += 1
    return at


def signature_headers(
    message_id: str, body: bytes, secrets_in_use: Sequence[str], now: datetime
) -> dict[str, str]:
    """The spec's headers for one attempt: id, timestamp, and a `v1,` signature per secret
    in use (the current one first, then one rotated out less than the grace period ago)."""
    signatures = " ".join(Webhook(s).sign(message_id, now, body) for s in secrets_in_use)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
    }


@dataclass(frozen=True)
class RetryPolicy:
    """Attempt n (1-based) that failed is followed by one after base * 2^(n-1) seconds,
    capped, drawn within +-jitter of it; after `max_attempts` the delivery has failed."""

    base_s: float
    cap_s: float
    jitter: float
    max_attempts: int

    def delay(self, attempts: int, rand: random.Random | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        nominal = min(self.cap_s, self.base_s * 2 ** (attempts - 1))
        spread = (rand or random).uniform(-self.jitter, self.jitter)
        return max(0.0, nominal * (1 + spread))


@dataclass(frozen=True)
class Outcome:
    """One attempt's result and what follows from it."""

    delivery_id: uuid.UUID
    status: DeliveryStatus
    next_attempt_at: datetime | None
    status_code: int | None
    error: str | None
    attempted_at: datetime
    duration_ms: int


def outcome_of(
    delivery_id: uuid.UUID,
    attempts: int,
    status_code: int | None,
    error: str | None,
    attempted_at: datetime,
    duration_ms: int,
    policy: RetryPolicy,
) -> Outcome:
    """A 2xx answer delivers; anything else waits for the next attempt, or fails the
    delivery once `attempts` reached the policy's maximum."""
    if status_code is not None and 200 <= status_code < 300:
        status: DeliveryStatus = "delivered"
        next_at = None
    elif attempts >= policy.max_attempts:
        status, next_at = "failed", None
    else:
        status = "pending"
        next_at = attempted_at + timedelta(seconds=policy.delay(attempts))
    if error is not None:
        error = error[:MAX_ERROR_CHARS]
    return Outcome(delivery_id, status, next_at, status_code, error, attempted_at, duration_ms)
