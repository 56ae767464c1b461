"""Every route of reporting-svc against two tenants and every role (real PostgreSQL): each
read covers the caller's tenant only, another tenant's ids answer 404 like unknown ones, every
role reads, the dashboard's page shell is public and holds no data, and a tenant's summary
summed over its rows agrees with what the book's tallies counted for it.

The route table below must name every route of the app (checked first)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.app import create_app
from ballast_common.auth import Role, operations_of
from ballast_common.contracts.envelope import Envelope
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, envelope, example, with_test_issuer
from reporting_events import (
    approved,
    at,
    chunk_done,
    deliver,
    drift,
    fill,
    holdings,
    new_account,
    new_model,
    proposed,
    trade,
)
from reporting_svc import repository as repo
from reporting_svc.main import spec

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"
TALLIED = (
    "accounts",
    "accounts_measured",
    "accounts_out_of_tolerance",
    "market_value",
    "proposals",
    "proposals_approved",
    "trades",
    "trades_proposed",
    "trades_approved",
    "trades_filled",
    "taxed_trades",
    "estimated_tax",
    "fills",
    "fills_reflected",
)


def of(tenant: str, *envelopes: Envelope) -> list[Envelope]:
    return [e.model_copy(update={"tenant": tenant}) for e in envelopes]


@dataclass(frozen=True)
class Side:
    """One tenant's model, account and run."""

    model: str
    account: str
    run: uuid.UUID


async def book_of(db: Database, tenant: str) -> Side:
    """A model and an account following it, its holdings, a run that measured it and
    proposed, approved and partly filled a trade: every table a report reads."""
    model, account, run, proposal = new_model(), new_account(), uuid.uuid4(), uuid.uuid4()
    targets = [{"symbol": "ZZA", "weight": "0.5"}, {"symbol": "ZZB", "weight": "0.5"}]
    buy = trade("ZZB", "buy", "25", "20")
    events = of(
        tenant,
        envelope(example("securities-changed"), key="security-master", time=at(0)),
        envelope(
            example("model-changed", model_id=model, version=1, targets=targets),
            key=model,
            time=at(1),
        ),
        envelope(
            example("account-changed", account_id=account, model_id=model), key=account, time=at(2)
        ),
        holdings(account, at(3), "1000", {"ZZA": "100"}, cause="opening-balance"),
        drift(account, model, run, at(4)),
        proposed(account, model, run, proposal, [buy], at(5)),
        chunk_done(run, at(6), model=model),
        approved(account, proposal, [buy], at(7)),
        fill(account, buy, proposal, f"F-{uuid.uuid4().hex[:8]}", "10", "20", at(8)),
    )
    for e in events:
        await deliver(db, e)
    return Side(model, account, run)


@dataclass(frozen=True)
class Book:
    acme: Side
    evil: Side
    acme_counted_by_tallies: dict[str, Any]


async def tallied(db: Database) -> dict[str, Any]:
    async with db.sessions() as session:
        counts = await repo.tenant_summary_counts(session, ACME, from_tallies=True)
    return {k: counts[k] for k in TALLIED}


@pytest.fixture(scope="module")
async def book(db: Database) -> Book:
    before = await tallied(db)
    acme = await book_of(db, ACME)
    after = await tallied(db)
    evil = await book_of(db, EVIL)
    return Book(acme, evil, {k: after[k] - before[k] for k in TALLIED})


@pytest.fixture(scope="module")
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app, called as a sponsor (read only) of acme unless a request says otherwise."""
    async with api_client(spec, db, tenant=ACME, roles=[Role.SPONSOR]) as client:
        yield client


def with_ids(book: Book) -> dict[tuple[str, str], str]:
    """For each route that names an id: acme's id in its path."""
    a = book.acme
    return {
        ("GET", "/accounts/{account_id}"): f"/accounts/{a.account}",
        ("GET", "/accounts/{account_id}/holdings"): f"/accounts/{a.account}/holdings",
        ("GET", "/accounts/{account_id}/lots"): f"/accounts/{a.account}/lots",
        ("GET", "/accounts/{account_id}/trades"): f"/accounts/{a.account}/trades",
        ("GET", "/runs/{run_id}"): f"/runs/{a.run}",
        ("GET", "/runs/{run_id}/accounts"): f"/runs/{a.run}/accounts",
    }


LISTS = {  # route -> what identifies a tenant's row in it
    ("GET", "/summary"): "",
    ("GET", "/accounts"): "account_id",
    ("GET", "/runs"): "run_id",
    ("GET", "/models"): "model_id",
}
PUBLIC = {("GET", "/")}
# Webhook routes: tenants and roles are tested in test_webhook_api.py
WEBHOOKS = {
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", "/webhooks/{webhook_id}"),
    ("DELETE", "/webhooks/{webhook_id}"),
    ("POST", "/webhooks/{webhook_id}/secret:rotate"),
    ("GET", "/webhooks/{webhook_id}/deliveries"),
    ("POST", "/webhook-deliveries/{delivery_id}/redeliver"),
}
# Approval routes forward to account-svc, whose tenants and roles decide: test_approvals_api.py
APPROVALS = {
    ("GET", "/approvals/counts"),
    ("GET", "/approvals/proposals"),
    ("POST", "/approvals/proposals/approve"),
    ("GET", "/approvals/proposals/{proposal_id}"),
    ("GET", "/approvals/proposals/{proposal_id}/history"),
    ("POST", "/approvals/proposals/{proposal_id}/approve"),
    ("POST", "/approvals/proposals/{proposal_id}/reject"),
    ("POST", "/approvals/proposals/{proposal_id}/edit"),
}
# Exceptions routes forward to taxlot-svc, whose tenants and roles decide: test_exceptions_api.py
EXCEPTIONS = {
    ("GET", "/custodian/breaks"),
    ("POST", "/custodian/breaks/{break_id}/resolve"),
    ("GET", "/custodian/exceptions"),
    ("POST", "/custodian/exceptions/{exception_id}/resolve"),
    ("GET", "/custodian/unknown-securities"),
    ("POST", "/custodian/unknown-securities/{exception_id}/resolve"),
}


def routes() -> dict[tuple[str, str], bool]:
    """Every route of the app, and whether it is public."""
    app = create_app(spec, with_test_issuer(spec.settings_type()))
    documentation = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
    return {
        (method, op.path): op.public
        for op in operations_of(app)
        if op.path not in documentation | {"/healthz", "/readyz", "/metrics"}
        for method in op.methods
    }


async def test_the_tables_name_every_route(book: Book) -> None:
    found = routes()
    expected = set(with_ids(book)) | set(LISTS) | PUBLIC | WEBHOOKS | APPROVALS | EXCEPTIONS
    assert set(found) == expected
    assert {r for r, public in found.items() if public} == PUBLIC


async def test_another_tenants_ids_answer_404_like_unknown_ones(
    api: httpx.AsyncClient, book: Book
) -> None:
    for key, path in with_ids(book).items():
        assert (await api.get(path)).status_code == 200, key
        theirs = await api.get(path, headers=bearer(EVIL))
        assert theirs.status_code == 404, (key, theirs.text)
        assert set(theirs.json()) == {"type", "title", "status", "detail", "instance"}
        unknown_path = path.replace(book.acme.account, new_account()).replace(
            str(book.acme.run), str(uuid.uuid4())
        )
        unknown = await api.get(unknown_path, headers=bearer(EVIL))
        assert (unknown.status_code, unknown.json()["title"]) == (404, theirs.json()["title"])


async def test_lists_and_the_summary_cover_the_callers_tenant(
    api: httpx.AsyncClient, book: Book
) -> None:
    def ids(page: dict[str, Any], field: str) -> set[str]:
        return {str(item[field]) for item in page["items"]}

    for tenant, mine, theirs in ((ACME, book.acme, book.evil), (EVIL, book.evil, book.acme)):
        headers = bearer(tenant, [Role.SPONSOR])
        accounts = (await api.get("/accounts?limit=1000", headers=headers)).json()
        assert mine.account in ids(accounts, "account_id")
        assert theirs.account not in ids(accounts, "account_id")
        assert accounts["total"] == len(accounts["items"])
        runs = (await api.get("/runs?limit=500", headers=headers)).json()
        assert str(mine.run) in ids(runs, "run_id") and str(theirs.run) not in ids(runs, "run_id")
        models = (await api.get("/models?limit=1000", headers=headers)).json()
        assert ids(models, "model_id") == {mine.model}
        summary = (await api.get("/summary", headers=headers)).json()
        assert (summary["accounts"], summary["models"], summary["runs"]) == (1, 1, 1)
        assert (summary["proposals"], summary["trades"], summary["fills"]) == (1, 1, 1)
        assert Decimal(summary["total_market_value"]) > 0


async def test_a_tenants_summary_summed_over_its_rows_is_what_the_tallies_counted(
    db: Database, book: Book
) -> None:
    async with db.sessions() as session:
        summed = await repo.tenant_summary_counts(session, ACME, from_tallies=False)
    assert {k: summed[k] for k in TALLIED} == book.acme_counted_by_tallies
    assert book.acme_counted_by_tallies["trades"] == 1


async def test_every_role_reads_and_the_page_shell_is_public(
    api: httpx.AsyncClient, db: Database, book: Book
) -> None:
    paths = [*with_ids(book).values(), *(path for _, path in LISTS)]
    for role in Role:
        for path in paths:
            response = await api.get(path, headers=bearer(ACME, [role]))
            assert response.status_code == 200, (role, path, response.text)
    async with api_client(spec, db) as anonymous:
        del anonymous.headers["Authorization"]
        page = await anonymous.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert book.acme.account not in page.text
        assert (await anonymous.get("/summary")).status_code == 401


async def test_headers_that_claim_a_tenant_or_an_actor_are_refused(api: httpx.AsyncClient) -> None:
    for header in ("X-Tenant", "X-Actor"):
        response = await api.get("/summary", headers={header: EVIL})
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [header]
