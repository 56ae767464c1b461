"""The dashboard's approval routes forward to account-svc with the caller's token and pass its
answer back unchanged; account-svc unreachable or not configured is a 503 naming it. Unit
level with an httpx MockTransport standing in for account-svc, then through a real
account-svc app on real PostgreSQL."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from ballast_common.app import create_app
from ballast_common.auth import Role
from ballast_common.db import Database
from ballast_common.testing import bearer, migrated_database, with_test_issuer
from reporting_svc.approvals_api import AccountSvc
from reporting_svc.main import spec
from reporting_svc.settings import Settings

ACCOUNT_SVC_URL = "http://account-svc.test"
PROPOSAL = uuid.UUID("8a0c1f9e-3c55-4d6e-9b1a-0d8f3e2c7b11")

Handler = Callable[[httpx.Request], httpx.Response]


def reporting(account_svc: AccountSvc, db: Database | None = None) -> httpx.AsyncClient:
    """A client of reporting-svc's app forwarding with `account_svc` (no lifespan; its
    database only where given: the idempotency keys of POSTs are claimed in it)."""
    settings = with_test_issuer(Settings(account_svc_url=ACCOUNT_SVC_URL))
    app = create_app(spec, settings)
    app.state.account_svc = account_svc
    if db is not None:
        app.state.runtime = SimpleNamespace(db=db, settings=settings)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://reporting-svc",
        headers=bearer("demo", [Role.OVERLAY_MANAGER]),
    )


def mocked(handler: Handler) -> AccountSvc:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=ACCOUNT_SVC_URL)
    return AccountSvc(client, timeout_s=1.0, retry_after_s=3)


class Recorder:
    """Stands in for account-svc: records each request, answers with `answer`."""

    def __init__(self, answer: httpx.Response) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer


@pytest.mark.integration
async def test_the_callers_token_body_and_query_go_on_and_the_answer_comes_back(
    db: Database,
) -> None:
    recorder = Recorder(httpx.Response(200, json={"proposal_id": str(PROPOSAL), "x": "1.50"}))
    token = bearer("demo", [Role.COMPLIANCE], subject="carol@demo")
    async with reporting(mocked(recorder), db) as api:
        approved = await api.post(
            f"/approvals/proposals/{PROPOSAL}/approve",
            json={"note": "fine"},
            headers={**token, "Idempotency-Key": "k-1"},
        )
        await api.get("/approvals/proposals?routed_by=filter:big@2&held=true&limit=5")
    assert approved.status_code == 200
    assert approved.json() == {"proposal_id": str(PROPOSAL), "x": "1.50"}
    sent, listing = recorder.requests
    assert (sent.method, sent.url.path) == ("POST", f"/proposals/{PROPOSAL}/approve")
    assert sent.headers["authorization"] == token["Authorization"]
    assert sent.headers["idempotency-key"] == "k-1"
    assert sent.content == b'{"note":"fine"}'
    assert listing.url.path == "/proposals"
    assert dict(listing.url.params) == {
        "status": "pending",
        "routed_by": "filter:big@2",
        "held": "true",
        "limit": "5",
        "offset": "0",
    }


@pytest.mark.parametrize("action", ["approve", "reject", "edit"])
async def test_account_svcs_problem_is_passed_back_unchanged(action: str) -> None:
    problem = {
        "type": "https://ballast.dev/problems/invalid-input",
        "title": "Invalid input",
        "status": 422,
        "detail": "the proposal's trades cannot be edited so",
        "errors": [{"field": "trades[1].quantity", "message": "not whole shares"}],
    }
    answer = httpx.Response(
        422, json=problem, headers={"content-type": "application/problem+json", "x-other": "1"}
    )
    async with reporting(mocked(Recorder(answer))) as api:
        response = await api.post(f"/approvals/proposals/{PROPOSAL}/{action}", json={})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == problem
    assert "x-other" not in response.headers


async def test_a_role_that_cannot_decide_is_refused_here_and_nothing_is_forwarded() -> None:
    recorder = Recorder(httpx.Response(200, json={}))
    advisor = bearer("demo", [Role.ADVISOR])
    async with reporting(mocked(recorder)) as api:
        refused = await api.post(
            f"/approvals/proposals/{PROPOSAL}/approve", json={}, headers=advisor
        )
        read = await api.get(f"/approvals/proposals/{PROPOSAL}", headers=advisor)
        anonymous = await api.get("/approvals/proposals", headers={"Authorization": ""})
        not_an_id = await api.get("/approvals/proposals/..%2Faccounts")
    assert refused.status_code == 403 and "proposals:decide" in refused.json()["detail"]
    assert read.status_code == 200
    assert anonymous.status_code == 401
    assert not_an_id.status_code in (404, 422)
    assert [r.url.path for r in recorder.requests] == [f"/proposals/{PROPOSAL}"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_unavailable(response: httpx.Response, words: str) -> None:
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    detail = response.json()["detail"]
    assert "account-svc" in detail and words in detail, detail


async def test_account_svc_down_is_503_naming_it() -> None:
    settings = Settings(account_svc_url=f"http://127.0.0.1:{closed_port()}")
    async with reporting(AccountSvc.from_settings(settings)) as api:
        down = await api.post(f"/approvals/proposals/{PROPOSAL}/approve", json={})
    assert_unavailable(down, "cannot be reached")


async def test_account_svc_too_slow_or_not_configured_is_503_naming_it() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    async with reporting(mocked(slow)) as api:
        assert_unavailable(await api.get("/approvals/counts"), "may or may not have been")
    async with reporting(AccountSvc.from_settings(Settings(account_svc_url=""))) as api:
        unset = await api.get("/approvals/proposals")
    assert_unavailable(unset, "REPORTING_SVC_ACCOUNT_SVC_URL")


# --- through a real account-svc app ------------------------------------------------------------


@pytest.fixture(scope="module")
async def account_db(database_url: str) -> AsyncIterator[Database]:
    from account_svc.main import spec as account_spec

    database = await migrated_database(account_spec, database_url)
    yield database
    await database.dispose()


async def held_proposal(db: Database, account_id: str) -> dict[str, Any]:
    """An account that waits for review, and a proposal of two trades for it."""
    from account_svc import service
    from account_svc.handlers import subscriptions
    from account_svc.repository import PostgresAccountRepository
    from account_svc.schemas import AccountIn
    from account_svc.settings import Settings as AccountSettings
    from ballast_common.contracts.events import ModelChangedV1, ModelTargetV1
    from ballast_common.testing import deliver, example, unit_of_work

    model = ModelChangedV1(
        model_id="ra-core",
        name="Core",
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol="AAPL", weight=Decimal(1))],
    )
    async with unit_of_work(db, "test") as uow:
        await service.remember_model(uow, "demo", model)
        await service.open_accounts(
            uow,
            PostgresAccountRepository(uow.session),
            "demo",
            "advisor@demo",
            [
                AccountIn(
                    account_id=account_id,
                    household_id="RA-H",
                    name="RA",
                    model_id="ra-core",
                    auto_approve=False,
                )
            ],
        )
    proposal = example("trades-proposed", proposal_id=uuid.uuid4(), account_id=account_id)
    await deliver(db, subscriptions(AccountSettings()), proposal)
    return dict(proposal.model_dump(mode="json"))


@pytest.mark.integration
async def test_review_through_a_real_account_svc(account_db: Database) -> None:
    from account_svc.main import spec as account_spec
    from ballast_common.testing import api_client

    proposal = await held_proposal(account_db, "RA-HELD")
    proposal_id = proposal["proposal_id"]
    async with api_client(account_spec, account_db) as account_svc:

        async def handler(request: httpx.Request) -> httpx.Response:
            answer = await account_svc.send(request)
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )

        client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url=ACCOUNT_SVC_URL)
        async with reporting(AccountSvc(client, timeout_s=5.0)) as api:
            pending = (await api.get("/approvals/proposals?account_id=RA-HELD")).json()["items"]
            assert [p["proposal_id"] for p in pending] == [proposal_id]
            trade_id = proposal["trades"][0]["trade_id"]
            bad = await api.post(
                f"/approvals/proposals/{proposal_id}/edit",
                json={"trades": [{"trade_id": trade_id, "quantity": "0.5"}]},
            )
            assert bad.status_code == 422
            assert bad.json()["errors"][0]["field"] == "trades[0].quantity"
            approved = await api.post(f"/approvals/proposals/{proposal_id}/approve", json={})
            assert approved.status_code == 200 and approved.json()["status"] == "approved"
            again = await api.post(f"/approvals/proposals/{proposal_id}/approve", json={})
            assert again.status_code == 409
            assert again.headers["content-type"] == "application/problem+json"
            history = (await api.get(f"/approvals/proposals/{proposal_id}/history")).json()
            assert [(r["action"], r["actor"]) for r in history["items"]] == [
                ("approve", "overlay-manager@demo")
            ]
            other = bearer("ra-other", [Role.ADMIN])
            theirs = await api.get(f"/approvals/proposals/{proposal_id}", headers=other)
            assert theirs.status_code == 404
