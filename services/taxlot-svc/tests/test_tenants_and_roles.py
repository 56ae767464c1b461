"""Every route of taxlot-svc against two tenants and every role (real PostgreSQL): another
tenant's ids answer 404 and change nothing, a role without the route's permission gets 403
and changes nothing, a body that names a tenant is refused naming the field.

The route table below must name every route of the app (checked first), so a new route
cannot be left out."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from ballast_common import testing
from ballast_common.app import create_app
from ballast_common.auth import PERMISSIONS, Permission, Role, operations_of
from ballast_common.contracts.events import AccountChangedV1
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, outbox_events, with_test_issuer
from sqlalchemy import text
from taxlot_svc.handlers import subscriptions
from taxlot_svc.main import spec
from taxlot_svc.settings import Settings
from taxlot_svc.tables import metadata

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"


def opening(symbol: str = "VTI") -> dict[str, Any]:
    return {
        "as_of": "2026-01-15",
        "cash": "2500.00",
        "sleeve_cash": [{"sleeve_id": "core", "amount": "100.00"}],
        "positions": [
            {
                "symbol": symbol,
                "lots": [
                    {
                        "quantity": "20",
                        "cost_basis": "4000.00",
                        "acquired_on": "2024-06-03",
                        "sleeve_id": "core",
                    }
                ],
            }
        ],
    }


@dataclass(frozen=True)
class Book:
    """Accounts with a ledger: one of each tenant."""

    acme: str
    evil: str


@pytest.fixture(scope="module")
async def api(taxlot_db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app, called as an admin of acme unless a request says otherwise."""
    async with api_client(spec, taxlot_db, tenant=ACME) as client:
        yield client


@pytest.fixture(scope="module")
async def book(api: httpx.AsyncClient) -> Book:
    acme, evil = (f"T-{uuid.uuid4().hex[:10]}" for _ in range(2))
    assert (await api.post(f"/accounts/{acme}/holdings", json=opening())).status_code == 201
    evil_opened = await api.post(f"/accounts/{evil}/holdings", json=opening(), headers=bearer(EVIL))
    assert evil_opened.status_code == 201, evil_opened.text
    return Book(acme, evil)


@dataclass(frozen=True)
class Call:
    """A request to a route with acme's ids, and what the route requires."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    tenant_field: str | None = None  # where a `tenant` put into the body is named
    platform_wide: bool = False  # shared reference data: no tenant's own rows
    own_list: bool = False  # lists the caller's tenant's rows, whoever calls


def calls(book: Book) -> dict[tuple[str, str], Call]:
    """One call per route, keyed by (method, route path)."""
    a = book.acme
    transfer = {"transfer_id": "x-1", "symbol": "VTI", "quantity": "1", "to_sleeve": "core"}
    cash = {"transfer_id": "c-1", "amount": "1.00", "from_sleeve": "core"}
    split = {"type": "split", "action_id": uuid.uuid4().hex, "symbol": "VTI", "on": "2026-02-02"}
    split |= {"numerator": 2, "denominator": 1}
    batch = {"accounts": [{"account_id": a, **opening()}]}
    load = f"/book-loads/{uuid.uuid4().hex[:12]}"
    day = f"/custodian-days/acme-2026-01-15-{uuid.uuid4().hex[:12]}"
    rejected_set = {"custodian": "acme", "business_date": "2026-01-15", "kind": "invalid"}
    kept = f"/custodian-days/kept{uuid.uuid4().hex[:8]}/2026-01-15"
    rejected_set["detail"] = "no manifest"
    table = [
        Call("POST", f"/accounts/{a}/holdings", opening(), "tenant"),
        Call("POST", "/holdings:batch", batch, "accounts[0].tenant"),
        Call("GET", f"/accounts/{a}/holdings"),
        Call("GET", f"/accounts/{a}/lots"),
        Call("GET", f"/accounts/{a}/tax-settings"),
        Call("GET", f"/accounts/{a}/realized-gains"),
        Call("GET", f"/accounts/{a}/form8949.csv"),
        Call("GET", f"/accounts/{a}/unrealized"),
        Call("GET", f"/households/account:{a}/wash-sale-blocks"),
        Call("POST", "/corporate-actions", split, "tenant", platform_wide=True),
        Call("POST", f"/accounts/{a}/sleeve-transfers", transfer, "tenant"),
        Call("POST", f"/accounts/{a}/sleeve-cash-transfers", cash, "tenant"),
        Call("PUT", f"{load}/files/accounts.csv"),
        Call("POST", f"{load}/validate", {"as_of": "2026-01-15"}, "tenant"),
        Call("POST", f"{load}/apply", {"as_of": "2026-01-15"}, "tenant"),
        Call("GET", load),
        Call("DELETE", load),
        Call("GET", "/audit", own_list=True),
        Call("PUT", f"{day}/files/cash.csv"),
        Call("POST", f"{day}/validate", {"as_of": "2026-01-15"}, "tenant"),
        Call("POST", f"{day}/apply", {"as_of": "2026-01-15"}, "tenant"),
        Call("GET", day),
        Call("DELETE", day),
        Call("GET", "/reconciliations/acme/2026-01-15", own_list=True),
        Call("GET", "/breaks", own_list=True),
        Call("GET", f"/accounts/{a}/breaks"),
        Call("POST", "/breaks/1/resolve", {"resolution": "keep-ours", "note": "n"}, "tenant"),
        Call("GET", "/custodian-days/exceptions", own_list=True),
        Call("POST", "/custodian-days/exceptions", rejected_set, "tenant"),
        Call("POST", "/custodian-days/exceptions/1/resolve", {"resolution": "x"}, "tenant"),
        Call("GET", "/custodian-days/unknown-securities", own_list=True),
        Call("POST", "/custodian-days/unknown-securities/1/resolve", {"resolution": "x"}, "tenant"),
        Call("PUT", f"{kept}/files/manifest.csv"),
        Call("GET", f"{kept}/files"),
        Call("GET", f"{kept}/files/manifest.csv"),
    ]
    routes = [
        "/accounts/{account_id}/holdings",
        "/holdings:batch",
        "/accounts/{account_id}/holdings",
        "/accounts/{account_id}/lots",
        "/accounts/{account_id}/tax-settings",
        "/accounts/{account_id}/realized-gains",
        "/accounts/{account_id}/form8949.csv",
        "/accounts/{account_id}/unrealized",
        "/households/{household_id}/wash-sale-blocks",
        "/corporate-actions",
        "/accounts/{account_id}/sleeve-transfers",
        "/accounts/{account_id}/sleeve-cash-transfers",
        "/book-loads/{load_id}/files/{name}",
        "/book-loads/{load_id}/validate",
        "/book-loads/{load_id}/apply",
        "/book-loads/{load_id}",
        "/book-loads/{load_id}",
        "/audit",
        "/custodian-days/{load_id}/files/{name}",
        "/custodian-days/{load_id}/validate",
        "/custodian-days/{load_id}/apply",
        "/custodian-days/{load_id}",
        "/custodian-days/{load_id}",
        "/reconciliations/{custodian}/{business_date}",
        "/breaks",
        "/accounts/{account_id}/breaks",
        "/breaks/{break_id}/resolve",
        "/custodian-days/exceptions",
        "/custodian-days/exceptions",
        "/custodian-days/exceptions/{exception_id}/resolve",
        "/custodian-days/unknown-securities",
        "/custodian-days/unknown-securities/{exception_id}/resolve",
        "/custodian-days/{custodian}/{business_date}/files/{name}",
        "/custodian-days/{custodian}/{business_date}/files",
        "/custodian-days/{custodian}/{business_date}/files/{name}",
    ]
    return {(c.method, r): c for c, r in zip(table, routes, strict=True)}


def guarded_routes() -> dict[tuple[str, str], Permission]:
    """Every route of the app that needs a token, with the permission it requires."""
    app = create_app(spec, with_test_issuer(spec.settings_type()))
    return {
        (method, op.path): op.permission
        for op in operations_of(app)
        if not op.public and op.permission is not None
        for method in op.methods
    }


async def fingerprint(db: Database) -> dict[str, str]:
    """A digest of every row of the service's tables and its outbox."""
    out = {}
    async with db.sessions() as session:
        for table in [*metadata.sorted_tables, "outbox"]:
            name = getattr(table, "name", table)
            digest = await session.execute(
                text(
                    f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                    f" FROM {name} t"
                )
            )
            out[str(name)] = digest.scalar_one()
    return out


async def send(api: httpx.AsyncClient, call: Call, headers: dict[str, str]) -> httpx.Response:
    if call.method == "PUT":
        content = (
            b"account_id,amount,as_of\n"
            if call.path.endswith("/cash.csv")
            else b"account_id,household_id,name,account_type\n"
        )
        headers = {**headers, "content-type": "text/csv"}
        return await api.request(call.method, call.path, content=content, headers=headers)
    return await api.request(call.method, call.path, json=call.body, headers=headers)


async def test_the_table_names_every_route(api: httpx.AsyncClient, book: Book) -> None:
    assert set(calls(book)) == set(guarded_routes())


async def test_another_tenants_ids_are_not_found_and_nothing_changes(
    api: httpx.AsyncClient, taxlot_db: Database, book: Book
) -> None:
    before = await fingerprint(taxlot_db)
    answers = {}
    for key, call in calls(book).items():
        loads = call.path.startswith(("/book-loads", "/custodian-days", "/breaks/"))
        if call.platform_wide or call.own_list or loads:
            # shared reference data; book loads and custodian days: see the last test; a
            # break: test_break_resolution_integration.py
            continue
        response = await send(api, call, bearer(EVIL, [Role.ADMIN]))
        answers[key] = response.status_code
        if key == ("POST", "/accounts/{account_id}/holdings") or key[1] == "/holdings:batch":
            # ids are the platform's: an id taken by another tenant cannot be opened, and
            # the answer says only that (nothing of the other tenant's ledger)
            assert response.status_code == 409, response.text
            assert "2500" not in response.text
            continue
        assert response.status_code == 404, (key, response.text)
        assert book.acme in response.json()["detail"] or "household" in response.json()["detail"]
    assert await fingerprint(taxlot_db) == before
    assert answers  # the loop ran


async def test_a_role_without_the_permission_is_forbidden_and_nothing_changes(
    api: httpx.AsyncClient, taxlot_db: Database, book: Book
) -> None:
    before = await fingerprint(taxlot_db)
    routes = guarded_routes()
    tried = 0
    for key, call in calls(book).items():
        permission = routes[key]
        for role in Role:
            if permission in PERMISSIONS[role]:
                continue
            response = await send(api, call, bearer(ACME, [role]))
            assert response.status_code == 403, (key, role, response.text)
            assert permission.value in response.json()["detail"]
            tried += 1
    assert await fingerprint(taxlot_db) == before
    assert tried >= 30


async def test_a_body_naming_a_tenant_is_refused_naming_the_field(
    api: httpx.AsyncClient, taxlot_db: Database, book: Book
) -> None:
    before = await fingerprint(taxlot_db)
    for key, call in calls(book).items():
        if call.tenant_field is None:
            continue
        assert call.body is not None
        body = dict(call.body)
        if key[1] == "/holdings:batch":
            body = {"accounts": [{**body["accounts"][0], "tenant": ACME}]}
        else:
            body["tenant"] = ACME
        response = await api.request(call.method, call.path, json=body)
        assert response.status_code == 422, (key, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert call.tenant_field in fields, (key, fields)
    assert await fingerprint(taxlot_db) == before


async def test_headers_that_claim_a_tenant_or_an_actor_are_refused(
    api: httpx.AsyncClient, book: Book
) -> None:
    for header in ("X-Tenant", "X-Actor"):
        response = await api.get(f"/accounts/{book.acme}/holdings", headers={header: ACME})
        assert response.status_code == 422
        assert [e["field"] for e in response.json()["errors"]] == [header]


async def test_each_tenant_reads_its_own_ledger(api: httpx.AsyncClient, book: Book) -> None:
    own = await api.get(f"/accounts/{book.acme}/holdings")
    assert (own.status_code, own.json()["tenant"]) == (200, ACME)
    theirs = await api.get(f"/accounts/{book.evil}/holdings", headers=bearer(EVIL))
    assert (theirs.status_code, theirs.json()["tenant"]) == (200, EVIL)
    # a sponsor reads, an advisor moves cash between sleeves of its tenant's account
    assert (
        await api.get(f"/accounts/{book.acme}/lots", headers=bearer(ACME, [Role.SPONSOR]))
    ).status_code == 200
    moved = await api.post(
        f"/accounts/{book.acme}/sleeve-cash-transfers",
        json={"transfer_id": uuid.uuid4().hex, "amount": "1.00", "from_sleeve": "core"},
        headers=bearer(ACME, [Role.ADVISOR]),
    )
    assert moved.status_code == 201, moved.text
    unknown = await api.get("/accounts/T-nobody-here/holdings")
    other = await api.get(f"/accounts/{book.evil}/holdings")
    assert (unknown.status_code, other.status_code) == (404, 404)
    assert other.json()["title"] == unknown.json()["title"]


async def test_opening_balances_belong_to_the_callers_tenant(
    api: httpx.AsyncClient, taxlot_db: Database
) -> None:
    account = f"T-{uuid.uuid4().hex[:10]}"
    opened = await api.post(
        f"/accounts/{account}/holdings",
        json=opening(),
        headers=bearer(EVIL, [Role.OPERATIONS]),
    )
    assert (opened.status_code, opened.json()["tenant"]) == (201, EVIL)
    async with taxlot_db.sessions() as session:
        stored = await session.execute(
            text("SELECT tenant FROM account_books WHERE account_id = :a"), {"a": account}
        )
        assert stored.scalar_one() == EVIL
    events = await outbox_events(taxlot_db, "holdings-reconciled", account)
    assert [e.envelope.tenant for e in events] == [EVIL]


async def test_an_account_another_tenant_announced_cannot_be_opened(
    api: httpx.AsyncClient, taxlot_db: Database
) -> None:
    account = f"T-{uuid.uuid4().hex[:10]}"
    announced = AccountChangedV1(
        account_id=account,
        household_id=f"HH-{account}",
        name=account,
        account_type="taxable",
        model_id=None,
        status="active",
        auto_approve=True,
    )
    await testing.deliver(
        taxlot_db, subscriptions(Settings()), testing.envelope(announced, tenant=ACME)
    )
    before = await fingerprint(taxlot_db)
    for path, body in (
        (f"/accounts/{account}/holdings", opening()),
        ("/holdings:batch", {"accounts": [{"account_id": account, **opening()}]}),
    ):
        refused = await api.post(path, json=body, headers=bearer(EVIL))
        assert refused.status_code == 409, refused.text
        assert "another tenant's" in refused.json()["detail"]
    assert await fingerprint(taxlot_db) == before
    opened = await api.post(f"/accounts/{account}/holdings", json=opening())
    assert (opened.status_code, opened.json()["tenant"]) == (201, ACME)


@pytest.mark.parametrize(
    ("load", "file"),
    [
        (f"/book-loads/{uuid.uuid4().hex[:12]}", "accounts.csv"),
        (f"/custodian-days/acme-2026-01-15-{uuid.uuid4().hex[:12]}", "cash.csv"),
    ],
)
async def test_another_tenants_book_load_is_not_found(
    api: httpx.AsyncClient, load: str, file: str
) -> None:
    put = await send(api, Call("PUT", f"{load}/files/{file}"), {})
    assert put.status_code == 201, put.text
    staged = (await api.get(load)).json()
    evil = bearer(EVIL)
    for call in (
        Call("GET", load),
        Call("POST", f"{load}/validate", {"as_of": "2026-01-15"}),
        Call("POST", f"{load}/apply", {"as_of": "2026-01-15"}),
        Call("DELETE", load),
    ):
        response = await send(api, call, evil)
        assert response.status_code == 404, (call, response.text)
    assert (await api.get(load)).json() == staged  # acme's load is as it was


async def test_the_audit_trail_is_each_tenants_own(api: httpx.AsyncClient, book: Book) -> None:
    ours = (await api.get("/audit", params={"subject_id": book.acme})).json()["items"]
    assert [(r["tenant"], r["subject_type"], r["actor"]) for r in ours] == [
        (ACME, "holdings", "admin@acme")
    ]
    theirs = await api.get("/audit", params={"subject_id": book.acme}, headers=bearer(EVIL))
    assert theirs.json()["items"] == []
    evils = await api.get("/audit", params={"subject_id": book.evil}, headers=bearer(EVIL))
    assert [r["tenant"] for r in evils.json()["items"]] == [EVIL]
