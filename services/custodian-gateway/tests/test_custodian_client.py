"""Unit tests of the custodian HTTP client, the settings and the back-off (no database)."""

import httpx
import pytest
from custodian_gateway.custodian import (
    CustodianClient,
    CustodianRefused,
    CustodianUnavailable,
    OrderRequest,
)
from custodian_gateway.settings import Settings
from custodian_gateway.workers import Backoff

ORDER = OrderRequest(
    client_order_id="BAL-1",
    account_id="ACC-1",
    symbol="MSFT",
    side="buy",
    quantity="12",
    reference_price="415.20",
)


def _client(handler: object) -> CustodianClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return CustodianClient(httpx.AsyncClient(transport=transport, base_url="http://c"))


async def test_submit_sends_decimal_strings_and_the_trace_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"accepted": ["BAL-1"], "duplicates": []})

    ack = await _client(handler).submit_orders([ORDER], headers={"traceparent": "00-ab-cd-01"})
    assert ack.accepted == ["BAL-1"]
    assert seen[0].headers["traceparent"] == "00-ab-cd-01"
    assert b'"quantity":"12"' in seen[0].content.replace(b" ", b"")


@pytest.mark.parametrize("status", [500, 503, 429, 404, 401])
async def test_server_and_configuration_errors_mean_unavailable(status: int) -> None:
    client = _client(lambda r: httpx.Response(status, text="nope"))
    with pytest.raises(CustodianUnavailable, match=str(status)):
        await client.submit_orders([ORDER])


@pytest.mark.parametrize("status", [400, 409, 422])
async def test_refusals_carry_the_custodians_detail(status: int) -> None:
    body = {"title": "Invalid request", "detail": "orders[0].symbol: unknown"}
    client = _client(lambda r: httpx.Response(status, json=body))
    with pytest.raises(CustodianRefused) as info:
        await client.submit_orders([ORDER])
    assert info.value.status == status
    assert info.value.detail == "orders[0].symbol: unknown"


async def test_connection_errors_mean_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(CustodianUnavailable, match="ConnectError"):
        await _client(handler).executions_after(0, 10)


async def test_answers_outside_the_contract_mean_unavailable() -> None:
    client = _client(lambda r: httpx.Response(200, json={"executions": [{"seq": "x"}]}))
    with pytest.raises(CustodianUnavailable, match="outside the contract"):
        await client.executions_after(0, 10)
    client = _client(lambda r: httpx.Response(200, content=b"<html>"))
    with pytest.raises(CustodianUnavailable, match="invalid JSON"):
        await client.executions_after(0, 10)
    client = _client(lambda r: httpx.Response(200, json={"orders": 3}))
    with pytest.raises(CustodianUnavailable, match="last_seq"):
        await client.last_seq()


async def test_executions_page_keeps_loose_fields_for_the_service_to_judge() -> None:
    page = {
        "executions": [{"seq": 1, "execution_id": "X1", "quantity": 1.5, "kind": "fill"}],
        "last_seq": 1,
    }
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=page)

    result = await _client(handler).executions_after(7, 50)
    assert result.executions[0].quantity == 1.5
    assert dict(seen[0].url.params) == {"after": "7", "limit": "50"}


def test_settings_read_the_service_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTODIAN_GATEWAY_CUSTODIAN_URL", "http://custodian:9000")
    monkeypatch.setenv("CUSTODIAN_GATEWAY_SEND_BATCH_SIZE", "50")
    monkeypatch.setenv("BALLAST_TOPIC_PREFIX", "demo.")
    settings = Settings()
    assert settings.custodian_url == "http://custodian:9000"
    assert settings.send_batch_size == 50
    assert settings.topic_prefix == "demo."
    assert Settings.model_fields["poll_interval_s"].default == 0.2


def test_backoff_doubles_up_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.2, 1.0)
    assert [backoff.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next() == 0.2


def test_block_settings_and_trades_approved_handled_as_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from custodian_gateway.handlers import subscriptions

    monkeypatch.setenv("CUSTODIAN_GATEWAY_BLOCK_WINDOW_S", "0.1")
    monkeypatch.setenv("CUSTODIAN_GATEWAY_BLOCK_ACCOUNT_ID", "OMNI-7")
    settings = Settings()
    assert (settings.block_window_s, settings.block_account_id) == (0.1, "OMNI-7")
    assert Settings.model_fields["block_window_s"].default < 1
    (subscription,) = subscriptions(settings)
    assert subscription.event_type == "trades-approved"
    assert subscription.batch_handler is not None and subscription.handler is None
    monkeypatch.setenv("CUSTODIAN_GATEWAY_BLOCK_ACCOUNT_ID", " OMNI")
    with pytest.raises(ValueError, match="block_account_id"):
        Settings()
