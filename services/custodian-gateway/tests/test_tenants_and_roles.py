"""Who may call which route of custodian-gateway, and for which tenant, on real PostgreSQL
(the app without its lifespan; the custodian is the conftest's double).

Tenants "acme" and "evil" each have approved trades gathered into block orders, sent and
filled. Every route of the app (`operations_of(app)`) has a case below, so a route added
without one fails the first test. The gateway's routes only read: every role may call them;
another tenant's ids answer 404 exactly like unknown ones; lists and counts cover the
caller's tenant only; the custodian's own facts (orphan executions, the poll cursor) are
shown to the operations permission only; headers claiming a tenant or actor are 422."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from ballast_common.auth import PERMISSIONS, Permission, Role, operations_of
from ballast_common.db import Database
from ballast_common.testing import api_client, bearer, unit_of_work
from custodian_gateway import repository as repo
from custodian_gateway import service
from custodian_gateway.custodian import CustodianClient
from custodian_gateway.main import app, spec

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"


@dataclass(frozen=True)
class Ids:
    """One tenant's rows: a filled block order, one of its trades, an account."""

    tenant: str
    client_order_id: str
    trade_id: str
    account_id: str


@dataclass(frozen=True)
class World:
    acme: Ids
    evil: Ids


def as_(tenant: str, *roles: Role | str) -> dict[str, str]:
    return bearer(tenant, roles or (Role.ADMIN,))


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=ACME) as http:
        yield http


@pytest.fixture
async def world(db: Database, client: CustodianClient, custodian: Any, kit: Any) -> World:
    """acme: MSFT buys of two accounts, evil: an MSFT buy and an AAPL sell; every block
    sent and filled; and an execution of no known block (an orphan)."""
    await kit.approve(
        db,
        kit.approved(kit.trades(1, symbol="MSFT", side="buy"), "ACC-A1"),
        kit.approved(kit.trades(1, symbol="MSFT", side="buy"), "ACC-A2"),
        tenant=ACME,
    )
    await kit.approve(
        db,
        kit.approved(kit.trades(1, symbol="MSFT", side="buy"), "ACC-E1"),
        kit.approved(kit.trades(1, symbol="AAPL", side="sell"), "ACC-E1"),
        tenant=EVIL,
    )
    await kit.block(db)
    async with unit_of_work(db, "test") as uow:
        await service.send_new_orders(uow, client, 100, kit.CUSTODIAN)
    for cid, order in list(custodian.orders.items()):
        custodian.fill(cid, order["quantity"], "100")
    custodian.fill("BLK-nobody", "1", "1")
    async with unit_of_work(db, "test") as uow:
        await service.poll_executions(uow, client, 100, kit.CUSTODIAN)
    made = []
    async with db.sessions() as session:
        for tenant, account in ((ACME, "ACC-A1"), (EVIL, "ACC-E1")):
            [allocation, *_] = await repo.list_allocations(
                session, tenant, account_id=account, limit=10, offset=0
            )
            assert allocation.status == "filled" and allocation.client_order_id
            made.append(Ids(tenant, allocation.client_order_id, str(allocation.trade_id), account))
    return World(*made)


# --- every route, and what calling it means -------------------------------------------------

Request = tuple[str, dict[str, Any]]  # url, query parameters


@dataclass(frozen=True)
class Case:
    """How to read a tenant's rows (`ids`) through a route; `scope`: tenant (an id of one
    tenant), list (the caller's rows, filters naming another tenant's rows), summary."""

    permission: Permission
    scope: str
    request: Callable[[Ids], Request]


CASES: dict[tuple[str, str], Case] = {
    ("GET", "/orders"): Case(Permission.READ, "list", lambda ids: ("/orders", {})),
    ("GET", "/orders/{client_order_id}"): Case(
        Permission.READ, "tenant", lambda ids: (f"/orders/{ids.client_order_id}", {})
    ),
    ("GET", "/allocations"): Case(Permission.READ, "list", lambda ids: ("/allocations", {})),
    ("GET", "/trades/{trade_id}"): Case(
        Permission.READ, "tenant", lambda ids: (f"/trades/{ids.trade_id}", {})
    ),
    ("GET", "/stats"): Case(Permission.READ, "summary", lambda ids: ("/stats", {})),
}


def _cases(*scopes: str) -> list[Any]:
    return [
        pytest.param(key, id=f"{key[0]} {key[1]}")
        for key, case in CASES.items()
        if case.scope in scopes
    ]


async def _get(api: httpx.AsyncClient, url: str, headers: dict[str, str], **params: Any) -> Any:
    response = await api.get(url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


# --- the tests ------------------------------------------------------------------------------


def test_every_route_of_the_app_has_a_case_with_the_permission_it_requires():
    routes = {
        (method, op.path): op.permission
        for op in operations_of(app)
        if not op.public
        for method in op.methods
    }
    assert set(routes) == set(CASES), "a route without a case here (or a case of no route)"
    assert {k: c.permission for k, c in CASES.items()} == routes


@pytest.mark.parametrize("key", _cases("tenant", "list", "summary"))
async def test_every_role_may_read_and_no_token_is_401(api, world, key):
    url, params = CASES[key].request(world.acme)
    for role in PERMISSIONS:  # every role is granted `read`: none gets 403
        response = await api.get(url, params=params, headers=as_(ACME, role))
        assert response.status_code == 200, (role, response.text)
    anonymous = await api.get(url, params=params, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("key", _cases("tenant"))
async def test_another_tenants_id_answers_404_exactly_like_an_unknown_one(api, world, key):
    url, params = CASES[key].request(world.evil)
    theirs = await api.get(url, params=params, headers=as_(ACME))
    unknown_ids = Ids(ACME, "BLK-" + "0" * 32, "00000000-0000-4000-8000-000000000000", "")
    unknown_url, _ = CASES[key].request(unknown_ids)
    unknown = await api.get(unknown_url, params=params, headers=as_(ACME))
    assert theirs.status_code == unknown.status_code == 404
    masked = {
        "theirs": str(theirs.json()).replace(world.evil.client_order_id, "<id>"),
        "unknown": str(unknown.json()).replace(unknown_ids.client_order_id, "<id>"),
    }
    masked = {
        k: v.replace(world.evil.trade_id, "<id>").replace(unknown_ids.trade_id, "<id>")
        for k, v in masked.items()
    }
    assert masked["theirs"] == masked["unknown"]
    assert EVIL not in theirs.text and "ACC-E1" not in theirs.text
    # the owner still reads it
    await _get(api, url, as_(EVIL), **params)


@pytest.mark.parametrize("key", _cases("list"))
async def test_lists_cover_the_callers_tenant_only(api, world, key):
    url, _ = CASES[key].request(world.acme)
    listed = (await _get(api, url, as_(ACME), limit=1000))["items"]
    assert listed and {item["tenant"] for item in listed} == {ACME}
    their_cids = {o["client_order_id"] for o in (await _get(api, url, as_(EVIL)))["items"]}
    assert world.evil.client_order_id in their_cids
    assert not their_cids & {o["client_order_id"] for o in listed}
    # filtered, too: what matches only another tenant's rows finds nothing
    filled = (await _get(api, url, as_(ACME), status="filled"))["items"]
    assert filled and {o["tenant"] for o in filled} == {ACME}
    for filters in FILTERS_OF_EVILS_ROWS[url](world.evil):
        assert (await _get(api, url, as_(ACME), **filters))["items"] == [], filters
        assert (await _get(api, url, as_(EVIL), **filters))["items"] != [], filters


FILTERS_OF_EVILS_ROWS: dict[str, Callable[[Ids], list[dict[str, str]]]] = {
    "/orders": lambda ids: [{"symbol": "AAPL"}],  # only evil has an AAPL block
    "/allocations": lambda ids: [
        {"account_id": ids.account_id},
        {"client_order_id": ids.client_order_id},
    ],
}


async def test_a_block_of_the_callers_tenant_lists_only_its_own_allocations_and_executions(
    api, world
):
    block = await _get(api, f"/orders/{world.acme.client_order_id}", as_(ACME))
    assert {a["tenant"] for a in block["allocations"]["items"]} == {ACME}
    assert [e["outcome"] for e in block["executions"]] == ["applied"]


async def test_counts_cover_the_callers_tenant_only(api, world):
    acme = await _get(api, "/stats", as_(ACME, Role.SPONSOR))
    evil = await _get(api, "/stats", as_(EVIL, Role.SPONSOR))
    # acme: one MSFT buy block of 2 trades; evil: an MSFT buy and an AAPL sell block
    assert (acme["blocks"]["total"], acme["allocations"]["total"]) == (1, 2)
    assert (evil["blocks"]["total"], evil["allocations"]["total"]) == (2, 2)
    assert acme["blocks"]["by_status"]["filled"] == 1
    assert (acme["executions"]["total"], acme["executions"]["fills"]) == (1, 1)
    assert (evil["executions"]["total"], evil["executions"]["fills"]) == (2, 2)
    # the custodian's own facts belong to no tenant: operations only
    assert "orphans" not in acme["executions"] and acme["cursor"] is None
    operator = await _get(api, "/stats", as_(ACME, Role.OPERATIONS))
    assert operator["executions"]["orphans"] == 1 and operator["cursor"]["last_seq"] == 4
    assert operator["blocks"] == acme["blocks"]


@pytest.mark.parametrize("header", ["X-Actor", "X-Tenant"])
async def test_a_header_claiming_the_actor_or_tenant_is_refused(api, world, header):
    response = await api.get("/orders", headers={**as_(ACME), header: EVIL})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [header]
