"""Calls that ride out a restart: transient failures retried, the rest answered at once."""

import httpx
import pytest
from ballast_cli.retrying import RetryPolicy, send

QUICK = RetryPolicy(budget_s=5.0, first_delay_s=0.001, max_delay_s=0.002)


def scripted(*answers):
    """A transport answering each request with the next answer (an exception is raised)."""
    sent: list[bytes] = []
    queue = list(answers)

    async def handle(request: httpx.Request) -> httpx.Response:
        sent.append(await request.aread())
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), sent


async def stream():
    yield b"a,b"


async def test_a_restart_and_an_outage_are_waited_out_with_a_fresh_body_each_time():
    unavailable = httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "db down"})
    transport, sent = scripted(
        httpx.ConnectError("refused"), unavailable, httpx.Response(201, json={"ok": 1})
    )
    said: list[str] = []
    async with httpx.AsyncClient(transport=transport) as http:
        answer = await send(
            http, "PUT", "http://svc:8004/x", policy=QUICK, say=said.append, body=stream
        )
    assert answer.status_code == 201
    assert sent == [b"a,b"] * 3  # the body was made again for every attempt
    assert len(said) == 2 and said[0].startswith("waiting for svc:8004: ConnectError refused")
    assert "503 db down" in said[1] and "attempt 2" in said[1]


async def test_other_answers_are_not_retried():
    transport, sent = scripted(httpx.Response(422, json={"detail": "bad"}))
    async with httpx.AsyncClient(transport=transport) as http:
        answer = await send(http, "POST", "http://svc/x", policy=QUICK)
    assert answer.status_code == 422 and len(sent) == 1


async def test_without_a_budget_the_failure_is_the_callers_at_once():
    transport, sent = scripted(httpx.ConnectError("refused"))
    async with httpx.AsyncClient(transport=transport) as http:
        with pytest.raises(httpx.ConnectError):
            await send(http, "GET", "http://svc/x", policy=RetryPolicy(budget_s=0))
    transport, sent = scripted(httpx.Response(503, json={"detail": "down"}))
    async with httpx.AsyncClient(transport=transport) as http:
        answer = await send(http, "GET", "http://svc/x", policy=RetryPolicy(budget_s=0))
    assert answer.status_code == 503 and len(sent) == 1
