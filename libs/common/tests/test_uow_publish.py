"""What `UnitOfWork.publish` writes is a valid envelope of its contract, naming its cause."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from ballast_common.contracts.envelope import Envelope, decode_envelope
from ballast_common.contracts.events import FillsReceivedV1
from ballast_common.telemetry import current_trace_headers
from ballast_common.uow import Cause, UnitOfWork
from opentelemetry.sdk.trace import TracerProvider

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


def test_an_event_published_later_from_a_stored_cause_names_it_and_continues_its_trace():
    stored = Cause(
        uuid.uuid4(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=1"
    )
    uow = UnitOfWork(session=None, source="taxlot-svc")  # type: ignore[arg-type]
    uow.publish(FILL, key="ACC-1", tenant="acme", cause=stored)
    [message] = uow._pending
    envelope, _ = decode_envelope(message.value)
    assert envelope.causation_id == stored.id and envelope.tenant == "acme"
    assert (envelope.traceparent, envelope.tracestate) == (stored.traceparent, stored.tracestate)
    assert message.headers["traceparent"] == stored.traceparent


def test_a_cause_without_an_event_continues_its_trace_and_names_no_event():
    stored = Cause(None, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    uow = UnitOfWork(session=None, source="taxlot-svc")  # type: ignore[arg-type]
    uow.publish(FILL, key="ACC-1", cause=stored)
    envelope, _ = decode_envelope(uow._pending[0].value)
    assert envelope.causation_id is None and envelope.tenant == "default"
    assert envelope.traceparent == stored.traceparent


def test_a_cause_kept_here_holds_the_current_span_and_wins_over_another_trace_later():
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("apply fills") as span:
        kept = Cause.here(uuid.uuid4())
        trace_id = span.get_span_context().trace_id
        assert kept.traceparent == current_trace_headers()["traceparent"]
    assert kept.traceparent and kept.traceparent.split("-")[1] == f"{trace_id:032x}"
    assert Cause.here().traceparent is None  # outside a span there is no trace
    uow = UnitOfWork(session=None, source="taxlot-svc")  # type: ignore[arg-type]
    with provider.get_tracer("t").start_as_current_span("snapshot", context=None) as other:
        uow.publish(FILL, key="ACC-1", cause=kept)  # another trace is current: the cause's wins
    envelope, _ = decode_envelope(uow._pending[0].value)
    assert other.get_span_context().trace_id != trace_id
    assert envelope.traceparent == kept.traceparent
