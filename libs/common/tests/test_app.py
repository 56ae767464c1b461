"""The app factory's guard on every request, through a probe app on the real database: a
body limit (413), text the database cannot store and integers beyond 64 bits refused (422
naming the field), request decimals exact and bounded, unknown fields and explicit nulls
refused, and 503 with Retry-After (not 500) while the database cannot be reached."""

import json
import socket
from dataclasses import replace
from typing import Annotated, Any

import pytest
from ballast_common import idempotency
from ballast_common.app import ReadSession, UoW, field_path
from ballast_common.auth import Permission, requires
from ballast_common.contracts.types import (
    Omittable,
    PriceIn,
    QuantityIn,
    RequestBody,
    WeightIn,
)
from ballast_common.db import Database
from ballast_common.pagination import Offset
from ballast_common.settings import ServiceSettings
from ballast_common.testing import api_client, migrated_database
from fastapi import APIRouter, Body, Depends, Path, Query
from probe_svc import make_spec
from pydantic import Field
from sqlalchemy import text

router = APIRouter(dependencies=[Depends(requires(Permission.READ))])  # any caller
PROBLEM_JSON = "application/problem+json"


class OrderIn(RequestBody):
    price: PriceIn
    weight: WeightIn
    quantity: QuantityIn = 0
    note: str = ""
    tags: list[str] = Field(default_factory=list)


class OrderPatch(RequestBody):
    note: Omittable[str] = None
    comment: str | None = None  # null means "no comment": allowed


@router.post("/orders")
async def post_order(body: OrderIn) -> dict[str, Any]:
    return body.model_dump(mode="json")


@router.patch("/orders/{order_id}")
async def patch_order(order_id: str, body: OrderPatch) -> dict[str, Any]:
    return {"order_id": order_id, **body.model_dump(mode="json", exclude_unset=True)}


@router.get("/orders/{order_id}/versions/{version}")
async def get_version(
    order_id: str, version: Annotated[int, Path(ge=1)], q: str = ""
) -> dict[str, Any]:
    return {"order_id": order_id, "version": version, "q": q}


@router.get("/pages")
async def get_page(
    session: ReadSession,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=10)] = 5,
) -> dict[str, int]:
    rows = await session.execute(
        text("SELECT g FROM generate_series(1, 3) g OFFSET :o"), {"o": offset}
    )
    return {"offset": offset, "rows": len(rows.all())}


@router.post("/big", max_body_size=4 * 1024 * 1024)
async def post_big(body: Annotated[dict[str, Any], Body()]) -> dict[str, int]:
    return {"keys": len(body)}


@router.post("/terminate")
async def terminate(uow: UoW) -> dict[str, str]:
    await uow.session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    return {"survived": "yes"}


def problem_fields(response) -> list[str]:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    return [e["field"] for e in response.json()["errors"]]


def test_problem_field_paths_read_like_the_service_rules():
    assert field_path(("body", "accounts", 3, "positions", 0, "quantity")) == (
        "accounts[3].positions[0].quantity"
    )
    assert field_path(("query", "limit")) == "query.limit"
    assert field_path(("body",)) == "body"
    assert field_path(("body", "bad\ud800")) == "bad\\ud800"  # shown escaped, still sendable


@pytest.fixture(scope="module")
async def db(database_url):
    spec = replace(make_spec("probe_guard"), routers=[router])
    database = await migrated_database(spec, database_url)
    async with database.engine.begin() as conn:  # a service's migrations create it
        await conn.run_sync(idempotency.idempotency_keys.create, checkfirst=True)
    yield spec, database
    await database.dispose()


@pytest.fixture
async def api(db):
    spec, database = db
    async with api_client(spec, database, ServiceSettings(retry_after_s=7)) as client:
        yield client


ORDER = {"price": "12.5", "weight": "0.25"}

pytestmark = pytest.mark.integration


async def test_a_body_over_the_limit_is_413_naming_the_limit(api):
    big = {**ORDER, "note": "x" * (1024 * 1024)}
    response = await api.post("/orders", json=big)
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM_JSON
    assert "1048576 bytes" in response.json()["detail"]

    async def chunks():  # no Content-Length: counted as it streams
        yield b'{"note": "'
        for _ in range(300):
            yield b"y" * 4096
        yield b'"}'

    streamed = await api.post(
        "/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    # A route may take more than the default
    allowed = await api.post("/big", json={"blob": "z" * (2 * 1024 * 1024)})
    assert allowed.status_code == 200 and allowed.json() == {"keys": 1}


async def test_nul_and_unpaired_surrogates_are_refused_naming_the_field(api):
    response = await api.post("/orders", json={**ORDER, "tags": ["ok", "bad\x00tag"]})
    assert response.status_code == 422 and problem_fields(response) == ["tags[1]"]
    assert "NUL" in response.json()["errors"][0]["message"]
    raw = '{"price": "1", "weight": "0.1", "note": "half \\ud800 a pair"}'
    response = await api.post("/orders", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and problem_fields(response) == ["note"]
    assert "surrogate" in response.json()["errors"][0]["message"]
    response = await api.get("/orders/a%00b/versions/1")
    assert response.status_code == 422 and problem_fields(response) == ["path.order_id"]
    response = await api.get("/orders/a/versions/1", params={"q": "x\x00"})
    assert response.status_code == 422 and problem_fields(response) == ["query.q"]
    fine = await api.post("/orders", json={**ORDER, "note": "a pair \U0001f600 is text"})
    assert fine.status_code == 200 and fine.json()["note"] == "a pair \U0001f600 is text"


async def test_integers_beyond_64_bits_are_refused_where_an_integer_is_declared(api):
    huge = "99999999999999999999"
    response = await api.get("/pages", params={"offset": huge})
    assert response.status_code == 422 and problem_fields(response) == ["query.offset"]
    response = await api.get(f"/orders/x/versions/{huge}")
    assert response.status_code == 422 and problem_fields(response) == ["path.version"]
    largest = await api.get("/pages", params={"offset": str(2**63 - 1)})
    assert largest.status_code == 200 and largest.json()["rows"] == 0
    as_text = await api.get(f"/orders/{huge}/versions/1", params={"q": huge})
    assert as_text.status_code == 200 and as_text.json()["order_id"] == huge


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"price": 1e308, "weight": "0.1"}', "price"),  # a float: not exact
        ('{"price": "1e308", "weight": "0.1"}', "price"),  # no exponents
        ('{"price": "12.5", "weight": 1e999999999}', "weight"),  # inf as JSON parses it
        ('{"price": "12.5", "weight": 0.5}', "weight"),
        ('{"price": "1000000000", "weight": "0.1"}', "price"),  # beyond the bound
        ('{"price": "0", "weight": "0.1"}', "price"),  # must be positive
        ('{"price": "12.5", "weight": "0.12345678901"}', "weight"),  # 11 decimals
        ('{"price": "12.5", "weight": "1.5"}', "weight"),  # a fraction of 1
        ('{"price": "12.5", "weight": "0.1", "quantity": true}', "quantity"),
        ('{"price": "12.5", "weight": "0.1", "quantity": "NaN"}', "quantity"),
        ('{"price": "12.5", "weight": "0.1", "quantity": "' + "1" * 41 + '"}', "quantity"),
        ('{"price": "12.5", "weight": "0.1", "colour": "red"}', "colour"),  # unknown
        ('{"price": null, "weight": "0.1"}', "price"),
    ],
)
async def test_request_decimals_are_exact_and_bounded(api, body, field):
    response = await api.post("/orders", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert problem_fields(response) == [field]


async def test_request_decimals_are_taken_and_echoed_as_sent(api):
    body = {"price": "999999999.999999", "weight": "0.1234567890", "quantity": "0.00000001"}
    response = await api.post("/orders", json=body)
    assert response.status_code == 200, response.text
    assert response.json() | body == response.json()  # nothing lost, nothing added
    integer = await api.post("/orders", json={**ORDER, "quantity": 12})
    assert integer.status_code == 200 and integer.json()["quantity"] == "12"


async def test_explicit_nulls_are_refused_where_a_field_may_only_be_left_out(api):
    refused = await api.patch("/orders/o1", json={"note": None})
    assert refused.status_code == 422 and problem_fields(refused) == ["note"]
    assert "not null" in refused.json()["errors"][0]["message"]
    left_out = await api.patch("/orders/o1", json={"comment": None})
    assert left_out.status_code == 200 and left_out.json() == {"order_id": "o1", "comment": None}
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]["OrderPatch"]
    assert schema["properties"]["note"]["type"] == "string"  # not documented as nullable
    assert schema["additionalProperties"] is False


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_database_is_503_with_retry_after(db):
    spec, _ = db
    down = Database(f"postgresql://ballast:ballast@127.0.0.1:{closed_port()}/x", spec.schema)
    async with api_client(spec, down, ServiceSettings(retry_after_s=7)) as api:
        read = await api.get("/pages")
        keyed = await api.post("/orders", json=ORDER, headers={"Idempotency-Key": "k-down"})
    for response in (read, keyed):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["Retry-After"] == "7"
        assert "the database cannot be reached" in response.json()["detail"]
    await down.dispose()


@pytest.mark.parametrize("keyed", [False, True])
async def test_a_connection_lost_mid_request_is_503(api, keyed):
    headers = {"Idempotency-Key": f"terminate-{keyed}-{id(api)}"} if keyed else {}
    response = await api.post("/terminate", headers=headers)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "7"
    again = await api.get("/pages")  # the pool recovers on its own
    assert again.status_code == 200


async def test_the_first_error_of_a_json_body_is_a_clear_422(api):
    response = await api.post(
        "/orders", content=b'{"price": "1",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert json.loads(response.text)["title"] == "Invalid request"
