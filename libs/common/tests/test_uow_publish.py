"""What `UnitOfWork.publish` writes is a valid envelope of its contract, naming its cause."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ballast_common.contracts.envelope import Envelope, decode_envelope
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.uow import UnitOfWork

FILL = FillsReceivedV1(
    fill_id="F-1",
    client_order_id="BLK-1",
    trade_id=uuid.uuid4(),
    proposal_id=uuid.uuid4(),
    account_id="ACC-1",
    symbol="MSFT",
    side="sell",
    quantity=Decimal("12.5"),
    price=Decimal("415.18"),
    executed_at=datetime(2026, 12, 4, 15, 30, tzinfo=UTC),
    lot_ids=["L1"],
)


def test_a_published_event_decodes_to_its_payload_with_its_cause_and_trace():
    cause = Envelope(
        type="trades-approved",
        version=1,
        tenant="acme",
        key="ACC-1",
        source="account-svc",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        payload={},
    )
    uow = UnitOfWork(session=None, source="custodian-gateway")  # type: ignore[arg-type]
    event_id = uow.publish(FILL, key="ACC-1", cause=cause)
    [message] = uow._pending
    envelope, payload = decode_envelope(message.value)
    assert payload == FILL and envelope.id == event_id
    assert (envelope.type, envelope.version, envelope.tenant, envelope.key) == (
        "fills-received",
        1,
        "acme",
        "ACC-1",
    )
    assert envelope.causation_id == cause.id and envelope.source == "custodian-gateway"
    assert envelope.traceparent == cause.traceparent  # no span here: the cause's trace goes on
    assert message.topic == "fills-received" and message.key == "ACC-1"
    assert message.headers["event-id"] == str(event_id)
    assert message.headers["traceparent"] == cause.traceparent


def test_without_a_cause_the_tenant_defaults_and_nothing_is_traced():
    uow = UnitOfWork(session=None, source="x")  # type: ignore[arg-type]
    uow.publish(FILL, key="ACC-1")
    envelope, _ = decode_envelope(uow._pending[0].value)
    assert envelope.tenant == "default" and envelope.causation_id is None
    assert envelope.traceparent is None and "traceparent" not in uow._pending[0].headers


def test_an_envelope_whose_payload_comes_first_still_decodes_to_its_own_type():
    """Another producer may write the payload (with a "type" of its own) before the
    envelope's fields: the envelope's type and version still decide."""
    body = (
        '{"payload": {"action_id": "CA-1", "type": "split", "symbol": "X", "on": "2026-06-09",'
        ' "numerator": 2, "denominator": 1, "accounts_affected": 0},'
        ' "type": "corporate-action-recorded", "version": 1, "tenant": "global",'
        ' "key": "corporate-actions", "source": "elsewhere"}'
    )
    envelope, payload = decode_envelope(body.encode())
    assert envelope.type == "corporate-action-recorded"
    assert payload.type == "split" and payload.numerator == 2  # type: ignore[attr-defined]
