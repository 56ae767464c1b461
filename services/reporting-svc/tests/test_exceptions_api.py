"""The dashboard's exceptions routes forward to taxlot-svc with the caller's token and pass its
answer back unchanged; taxlot-svc unreachable or not configured is a 503 naming it. Unit level
with an httpx MockTransport standing in for taxlot-svc, then through a real taxlot-svc app on
real PostgreSQL: a break found, listed and accepted through the dashboard's routes."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from ballast_common.app import create_app
from ballast_common.auth import Role
from ballast_common.db import Database
from ballast_common.testing import bearer, migrated_database, unit_of_work, with_test_issuer
from reporting_svc.exceptions_api import TaxlotSvc
from reporting_svc.main import spec
from reporting_svc.settings import Settings

TAXLOT_SVC_URL = "http://taxlot-svc.test"
TENANT = "demo"
OPERATIONS = bearer(TENANT, [Role.OPERATIONS], subject="olga@demo")

Handler = Callable[[httpx.Request], httpx.Response]


def reporting(taxlot: TaxlotSvc, db: Database | None = None) -> httpx.AsyncClient:
    """A client of reporting-svc's app forwarding with `taxlot` (no lifespan; its database
    only where given: the idempotency keys of POSTs are claimed in it)."""
    settings = with_test_issuer(Settings(taxlot_svc_url=TAXLOT_SVC_URL))
    app = create_app(spec, settings)
    app.state.taxlot_svc = taxlot
    if db is not None:
        app.state.runtime = SimpleNamespace(db=db, settings=settings)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://reporting-svc", headers=OPERATIONS
    )


class Recorder:
    """Stands in for taxlot-svc: records each request, answers with `answer`."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer


def mocked(handler: Handler) -> TaxlotSvc:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=TAXLOT_SVC_URL)
    return TaxlotSvc(client, timeout_s=1.0, retry_after_s=3)


@pytest.mark.integration
async def test_the_callers_token_body_and_query_go_on_to_taxlot(db: Database) -> None:
    recorder = Recorder(httpx.Response(200, json={"breaks": [], "next_after": None}))
    async with reporting(mocked(recorder), db) as api:
        listed = await api.get("/custodian/breaks?custodian=ballast&business_date=2026-12-04")
        body = {"resolution": "accept-custodian", "note": "theirs"}
        await api.post("/custodian/breaks/17/resolve", json=body)
        await api.get("/custodian/exceptions?status=resolved&kind=missing")
        await api.post("/custodian/exceptions/3/resolve", json={"resolution": "came late"})
        await api.get("/custodian/unknown-securities?symbol=ZZZ")
        await api.post("/custodian/unknown-securities/4/resolve", json={"resolution": "added"})
    assert listed.status_code == 200 and listed.json() == {"breaks": [], "next_after": None}
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("GET", "/breaks"),
        ("POST", "/breaks/17/resolve"),
        ("GET", "/custodian-days/exceptions"),
        ("POST", "/custodian-days/exceptions/3/resolve"),
        ("GET", "/custodian-days/unknown-securities"),
        ("POST", "/custodian-days/unknown-securities/4/resolve"),
    ]
    first, accept = recorder.requests[:2]
    assert dict(first.url.params) == {
        "status": "open",
        "custodian": "ballast",
        "business_date": "2026-12-04",
        "after": "0",
        "limit": "100",
    }
    assert accept.headers["authorization"] == OPERATIONS["Authorization"]
    assert accept.content == b'{"resolution":"accept-custodian","note":"theirs"}'
    assert dict(recorder.requests[2].url.params)["kind"] == "missing"


async def test_taxlots_problem_is_passed_back_unchanged() -> None:
    problem = {
        "type": "https://ballast.dev/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "break 17 is resolved: only an open break is resolved",
    }
    answer = httpx.Response(
        409, json=problem, headers={"content-type": "application/problem+json", "x-other": "1"}
    )
    async with reporting(mocked(Recorder(answer))) as api:
        body = {"resolution": "keep-ours", "note": "n"}
        response = await api.post("/custodian/breaks/17/resolve", json=body)
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == problem
    assert "x-other" not in response.headers


async def test_a_role_that_cannot_operate_is_refused_here_and_nothing_is_forwarded() -> None:
    recorder = Recorder(httpx.Response(200, json={"breaks": []}))
    advisor = bearer(TENANT, [Role.ADVISOR])
    async with reporting(mocked(recorder)) as api:
        body = {"resolution": "keep-ours", "note": "n"}
        refused = await api.post("/custodian/breaks/17/resolve", json=body, headers=advisor)
        read = await api.get("/custodian/breaks", headers=advisor)
        not_an_id = await api.post("/custodian/breaks/..%2Fbook-loads/resolve", json=body)
    assert refused.status_code == 403
    assert read.status_code == 200
    assert not_an_id.status_code in (404, 422)
    assert [r.url.path for r in recorder.requests] == ["/breaks"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_unavailable(response: httpx.Response, words: str) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    detail = response.json()["detail"]
    assert "taxlot-svc" in detail and words in detail, detail


async def test_taxlot_svc_down_slow_or_not_configured_is_503_naming_it() -> None:
    down = Settings(taxlot_svc_url=f"http://127.0.0.1:{closed_port()}")
    async with reporting(TaxlotSvc.from_settings(down)) as api:
        assert_unavailable(await api.get("/custodian/breaks"), "cannot be reached")

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    async with reporting(mocked(slow)) as api:
        assert_unavailable(await api.get("/custodian/exceptions"), "may or may not have been")
    async with reporting(TaxlotSvc.from_settings(Settings(taxlot_svc_url=""))) as api:
        unset = await api.get("/custodian/unknown-securities")
    assert_unavailable(unset, "REPORTING_SVC_TAXLOT_SVC_URL")


# --- through a real taxlot-svc app ---------------------------------------------------------------


@pytest.fixture(scope="module")
async def taxlot_db(database_url: str) -> AsyncIterator[Database]:
    from taxlot_svc.main import spec as taxlot_spec

    database = await migrated_database(taxlot_spec, database_url)
    yield database
    await database.dispose()


def csv(header: str, rows: list[str]) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


async def _chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def load(db: Database, load_spec: Any, load_id: str, as_of: date, files: Any) -> Any:
    from ballast_common import book_loads as loads
    from ballast_common.book_loads import LoadOptions

    for name, content in files.items():
        async with unit_of_work(db, "taxlot-svc") as uow:
            await loads.stage_file(uow.session, load_spec, TENANT, load_id, name, _chunk(content))
    async with unit_of_work(db, "taxlot-svc") as uow:
        return await loads.apply(uow, load_spec, load_id, LoadOptions(as_of=as_of, tenant=TENANT))


@pytest.mark.integration
async def test_a_break_accepted_through_a_real_taxlot_svc(
    db: Database, taxlot_db: Database
) -> None:
    from ballast_common.testing import api_client
    from taxlot_svc import custodian_day
    from taxlot_svc.book_load import SPEC as BOOK_SPEC
    from taxlot_svc.main import spec as taxlot_spec
    from taxlot_svc.settings import Settings as TaxlotSettings

    run = uuid.uuid4().hex[:6]
    x, sym, custodian = f"RE-{run}", f"E{run.upper()}", f"ecust{run}"
    lots_header = "account_id,symbol,lot_id,quantity,acquired_on,cost_basis"
    book = {
        "prices.csv": csv("symbol,price", [f"{sym},10"]),
        "accounts.csv": csv("account_id,household_id,name", [f"{x},EH-{run},x"]),
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},10"]),
        "lots.csv": csv(lots_header, [f"{x},{sym},L1,10,2024-01-01,100.00"]),
    }
    await load(taxlot_db, BOOK_SPEC, f"book-{run}", date(2026, 11, 30), book)
    day = {
        "cash.csv": csv("account_id,amount", [f"{x},100.00"]),
        "positions.csv": csv("account_id,symbol,quantity", [f"{x},{sym},8"]),
        "lots.csv": csv(lots_header, [f"{x},{sym},L1,8,2024-01-01,100.00"]),
    }
    day_spec = custodian_day.spec(TaxlotSettings())
    await load(taxlot_db, day_spec, f"{custodian}-2026-12-04-abc123", date(2026, 12, 4), day)

    async with api_client(taxlot_spec, taxlot_db) as taxlot:

        async def handler(request: httpx.Request) -> httpx.Response:
            answer = await taxlot.send(request)
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=TAXLOT_SVC_URL)
        async with reporting(TaxlotSvc(client, timeout_s=5.0), db) as api:
            [found] = (await api.get(f"/custodian/breaks?account_id={x}")).json()["breaks"]
            assert (found["kind"], found["ours"]["quantity"], found["theirs"]["quantity"]) == (
                "quantity",
                "10",
                "8",
            )
            url = f"/custodian/breaks/{found['id']}/resolve"
            no_note = await api.post(url, json={"resolution": "accept-custodian"})
            assert no_note.status_code == 422
            assert no_note.json()["errors"][0]["field"] == "note"
            accepted = await api.post(url, json={"resolution": "accept-custodian", "note": "ok"})
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["account_released"] is True
            assert accepted.json()["resolved"]["resolved_by"] == "olga@demo"
            again = await api.post(url, json={"resolution": "accept-custodian", "note": "ok"})
            assert again.status_code == 409
            assert again.headers["content-type"] == "application/problem+json"
            left = (await api.get(f"/custodian/breaks?account_id={x}")).json()["breaks"]
            assert left == []
        lots = (await taxlot.get(f"/accounts/{x}/lots", headers=OPERATIONS)).json()["lots"]
        assert [(lot["lot_id"], lot["quantity"]) for lot in lots] == [("L1", "8")]
