"""Who may call which route of model-hub-svc, and for which tenant, on real PostgreSQL (the
app without its lifespan; what would be published is read from the outbox).

Tenants "acme" and "evil" each have a model and an equivalence set. Every route of the app
(`operations_of(app)`) has a case below, so a route added without one fails the first test:
a role without the route's permission gets 403 and changes nothing; another tenant's ids
answer 404 (a PUT of another tenant's id 409) and change nothing; lists cover the caller's
tenant only; the actor recorded is the token's subject; a body naming a tenant is 422."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from ballast_common.auth import PERMISSIONS, Permission, Role, operations_of
from ballast_common.testing import TEST_ROLES, api_client, bearer, migrated_database, outbox_events
from model_hub_svc.main import app, spec

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"


@dataclass(frozen=True)
class Ids:
    """One tenant's rows: a model (with a version 1), an equivalence set, a book load, an
    asset allocation."""

    tenant: str
    model_id: str
    set_id: str
    load_id: str
    members: tuple[str, str]
    allocation_id: str = ""


@dataclass(frozen=True)
class World:
    acme: Ids
    evil: Ids
    symbols: tuple[str, ...]  # fresh securities of the shared master


def _uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Any]:
    database = await migrated_database(spec, database_url)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Calls as an admin of acme unless a request says otherwise (headers=bearer(...))."""
    async with api_client(spec, db, tenant=ACME) as client:
        yield client


def as_(tenant: str, *roles: Role | str, subject: str | None = None) -> dict[str, str]:
    return bearer(tenant, roles or TEST_ROLES, subject)


async def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def world(api: httpx.AsyncClient) -> World:
    uid = _uid().upper()
    symbols = tuple(f"T{uid}{n}" for n in range(4))
    await _ok(
        await api.put(
            "/securities",
            json={
                "securities": [
                    {"symbol": s, "name": s, "asset_class": "US Equity", "sector": "X",
                     "price": "10"}
                    for s in symbols
                ]
            },
            headers=as_(ACME, Role.PLATFORM_OPERATOR),
        )
    )  # fmt: skip
    made = []
    for tenant, members in ((ACME, symbols[:2]), (EVIL, symbols[2:])):
        ids = Ids(tenant, f"m-{_uid()}", f"s-{_uid()}", f"l-{_uid()}", members, f"a-{_uid()}")
        manager, platform = as_(tenant, Role.MODEL_MANAGER), as_(tenant, Role.PLATFORM_OPERATOR)
        model = {"name": "Core", "targets": [{"symbol": members[0], "weight": "1"}]}
        await _ok(await api.put(f"/models/{ids.model_id}", json=model, headers=manager))
        await _ok(
            await api.put(
                f"/allocations/{ids.allocation_id}", json=_allocation_body(ids), headers=manager
            )
        )
        equivalent = {"name": "Pair", "members": list(members)}
        await _ok(
            await api.put(f"/equivalence-sets/{ids.set_id}", json=equivalent, headers=platform)
        )
        staged = await api.put(
            f"/book-loads/{ids.load_id}/files/prices.csv",
            content=f"symbol,price\n{members[0]},11\n",
            headers=platform,  # the security master's load
        )
        assert staged.status_code == 201, staged.text
        made.append(ids)
    return World(made[0], made[1], symbols)


# --- every route, and what calling it means -------------------------------------------------

Request = tuple[str, str, dict[str, Any]]  # method, url, httpx keyword arguments


@dataclass(frozen=True)
class Case:
    """How to call a route on a tenant's rows (`ids`); `scope` says how tenants see it:
    tenant (ids of one tenant), list (the caller's rows), shared (the security master and
    the equivalence sets)."""

    permission: Permission
    scope: str
    request: Callable[[Ids, World], Request]
    # what another tenant's id answers (404; a PUT that would create is 409)
    other_tenant_status: int = 404


def _model_body(ids: Ids) -> dict[str, Any]:
    return {"name": "Changed", "targets": [{"symbol": ids.members[1], "weight": "1"}]}


def _allocation_body(ids: Ids, name: str = "Stocks") -> dict[str, Any]:
    return {"name": name, "weights": {"US Equity": "1"}}


def _set_body(ids: Ids) -> dict[str, Any]:
    return {"name": "Changed", "members": list(ids.members), "identical": True}


CASES: dict[tuple[str, str], Case] = {
    ("PUT", "/securities"): Case(
        Permission.MANAGE_PLATFORM,
        "shared",
        lambda ids, w: (
            "PUT",
            "/securities",
            {
                "json": {
                    "securities": [
                        {
                            "symbol": ids.members[0],
                            "name": "Renamed",
                            "asset_class": "US Equity",
                            "sector": "X",
                            "price": "99",
                        }
                    ]
                }
            },
        ),
    ),
    ("GET", "/securities"): Case(
        Permission.READ, "shared", lambda ids, w: ("GET", "/securities", {})
    ),
    ("GET", "/securities/{symbol}"): Case(
        Permission.READ, "shared", lambda ids, w: ("GET", f"/securities/{ids.members[0]}", {})
    ),
    ("PUT", "/models/{model_id}"): Case(
        Permission.MANAGE_MODELS,
        "tenant",
        lambda ids, w: ("PUT", f"/models/{ids.model_id}", {"json": _model_body(ids)}),
        other_tenant_status=409,
    ),
    ("GET", "/models"): Case(Permission.READ, "list", lambda ids, w: ("GET", "/models", {})),
    ("GET", "/models/{model_id}"): Case(
        Permission.READ, "tenant", lambda ids, w: ("GET", f"/models/{ids.model_id}", {})
    ),
    ("GET", "/models/{model_id}/versions/{version}"): Case(
        Permission.READ,
        "tenant",
        lambda ids, w: ("GET", f"/models/{ids.model_id}/versions/1", {}),
    ),
    ("PUT", "/equivalence-sets/{set_id}"): Case(
        Permission.MANAGE_PLATFORM,
        "shared",
        lambda ids, w: ("PUT", f"/equivalence-sets/{ids.set_id}", {"json": _set_body(ids)}),
    ),
    ("DELETE", "/equivalence-sets/{set_id}"): Case(
        Permission.MANAGE_PLATFORM,
        "shared",
        lambda ids, w: ("DELETE", f"/equivalence-sets/{ids.set_id}", {}),
    ),
    ("GET", "/equivalence-sets"): Case(
        Permission.READ,
        "shared",
        lambda ids, w: ("GET", "/equivalence-sets", {"params": {"include_removed": True}}),
    ),
    ("GET", "/equivalence-sets/{set_id}"): Case(
        Permission.READ, "shared", lambda ids, w: ("GET", f"/equivalence-sets/{ids.set_id}", {})
    ),
    # book loads (libs/common): their role checks are tested here; see the tenant xfail below
    ("PUT", "/book-loads/{load_id}/files/{name}"): Case(
        Permission.MANAGE_PLATFORM,
        "load",
        lambda ids, w: (
            "PUT",
            f"/book-loads/{ids.load_id}/files/prices.csv",
            {"content": f"symbol,price\n{ids.members[0]},12\n"},
        ),
    ),
    ("POST", "/book-loads/{load_id}/validate"): Case(
        Permission.MANAGE_PLATFORM,
        "load",
        lambda ids, w: (
            "POST",
            f"/book-loads/{ids.load_id}/validate",
            {"json": {"as_of": "2026-12-04"}},
        ),
    ),
    ("POST", "/book-loads/{load_id}/apply"): Case(
        Permission.MANAGE_PLATFORM,
        "load",
        lambda ids, w: (
            "POST",
            f"/book-loads/{ids.load_id}/apply",
            {"json": {"as_of": "2026-12-04"}},
        ),
    ),
    ("GET", "/audit"): Case(
        Permission.READ,
        "audit",
        lambda ids, w: ("GET", "/audit", {"params": {"subject_type": "model"}}),
    ),
    ("GET", "/models/{model_id}/audit"): Case(
        Permission.READ, "tenant", lambda ids, w: ("GET", f"/models/{ids.model_id}/audit", {})
    ),
    ("PUT", "/allocations/{allocation_id}"): Case(
        Permission.MANAGE_MODELS,
        "tenant",
        lambda ids, w: (
            "PUT",
            f"/allocations/{ids.allocation_id}",
            {"json": _allocation_body(ids, "Changed")},
        ),
        other_tenant_status=409,
    ),
    ("GET", "/allocations"): Case(
        Permission.READ, "allocation list", lambda ids, w: ("GET", "/allocations", {})
    ),
    ("GET", "/allocations/{allocation_id}"): Case(
        Permission.READ, "tenant", lambda ids, w: ("GET", f"/allocations/{ids.allocation_id}", {})
    ),
    ("GET", "/allocations/{allocation_id}/versions/{version}"): Case(
        Permission.READ,
        "tenant",
        lambda ids, w: ("GET", f"/allocations/{ids.allocation_id}/versions/1", {}),
    ),
    ("GET", "/allocations/{allocation_id}/audit"): Case(
        Permission.READ,
        "tenant",
        lambda ids, w: ("GET", f"/allocations/{ids.allocation_id}/audit", {}),
    ),
    ("GET", "/book-loads/{load_id}"): Case(
        Permission.READ, "load", lambda ids, w: ("GET", f"/book-loads/{ids.load_id}", {})
    ),
    ("DELETE", "/book-loads/{load_id}"): Case(
        Permission.MANAGE_PLATFORM,
        "load",
        lambda ids, w: ("DELETE", f"/book-loads/{ids.load_id}", {}),
    ),
}


def _cases(*scopes: str, writes_only: bool = False) -> list[Any]:
    return [
        pytest.param(key, id=f"{key[0]} {key[1]}")
        for key, case in CASES.items()
        if case.scope in scopes and not (writes_only and case.permission is Permission.READ)
    ]


async def call(
    api: httpx.AsyncClient, key: tuple[str, str], ids: Ids, world: World, headers: dict[str, str]
) -> httpx.Response:
    method, url, kwargs = CASES[key].request(ids, world)
    return await api.request(method, url, headers=headers, **kwargs)


async def state_of(api: httpx.AsyncClient, db: Any, ids: Ids, world: World) -> dict[str, Any]:
    """What an admin of `ids.tenant` sees of its rows and of the shared securities, and what
    was announced for them."""
    owner = as_(ids.tenant)
    reads = {
        "model": await api.get(f"/models/{ids.model_id}", headers=owner),
        "version 2": await api.get(f"/models/{ids.model_id}/versions/2", headers=owner),
        "set": await api.get(f"/equivalence-sets/{ids.set_id}", headers=owner),
        "load": await api.get(f"/book-loads/{ids.load_id}", headers=owner),
        "security": await api.get(f"/securities/{ids.members[0]}", headers=owner),
        "allocation": await api.get(f"/allocations/{ids.allocation_id}", headers=owner),
    }
    seen: dict[str, Any] = {name: (r.status_code, r.json()) for name, r in reads.items()}
    seen["model events"] = len(await outbox_events(db, "model-changed", ids.model_id))
    seen["set events"] = len(await outbox_events(db, "equivalence-set-changed", ids.set_id))
    return seen


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


@pytest.mark.parametrize(
    "key", _cases("tenant", "list", "allocation list", "shared", "load", writes_only=True)
)
async def test_a_role_without_the_permission_gets_403_and_changes_nothing(api, db, world, key):
    case = CASES[key]
    lacking = [r for r, granted in PERMISSIONS.items() if case.permission not in granted]
    assert lacking
    before = await state_of(api, db, world.acme, world)
    for role in lacking:
        response = await call(api, key, world.acme, world, as_(ACME, role))
        assert response.status_code == 403, (role, response.text)
        assert case.permission.value in response.json()["detail"]
    assert await state_of(api, db, world.acme, world) == before


@pytest.mark.parametrize(
    "key", _cases("tenant", "list", "allocation list", "shared", "load", "audit")
)
async def test_a_role_with_the_permission_is_let_through(api, world, key):
    granted = [r for r, g in PERMISSIONS.items() if CASES[key].permission in g]
    for role in granted if CASES[key].permission is Permission.READ else granted[:1]:
        response = await call(api, key, world.acme, world, as_(ACME, role))
        assert response.status_code not in (401, 403), (role, response.text)


@pytest.mark.parametrize("key", _cases("tenant"))
async def test_another_tenants_id_is_not_found_and_nothing_of_it_changes(api, db, world, key):
    theirs = await state_of(api, db, world.evil, world)
    response = await call(api, key, world.evil, world, as_(ACME))
    assert response.status_code == CASES[key].other_tenant_status, response.text
    assert EVIL not in response.text  # nothing of theirs, not even their name
    if response.status_code == 404:  # exactly as an id nobody has
        unknown = Ids(ACME, f"m-{_uid()}", f"s-{_uid()}", "", world.acme.members, f"a-{_uid()}")
        as_unknown = await call(api, key, unknown, world, as_(ACME))
        assert as_unknown.status_code == 404
        assert _masked(response.json(), world.evil) == _masked(as_unknown.json(), unknown)
    assert await state_of(api, db, world.evil, world) == theirs


def _masked(problem: dict[str, Any], ids: Ids) -> str:
    masked = str(problem).replace(ids.model_id, "<id>").replace(ids.set_id, "<id>")
    return masked.replace(ids.allocation_id, "<id>")


async def test_another_tenants_book_load_is_not_found(api, world):
    response = await api.get(f"/book-loads/{world.evil.load_id}", headers=as_(ACME))
    assert response.status_code == 404


@pytest.mark.parametrize("key", _cases("list"))
async def test_lists_cover_the_callers_tenant_only(api, world, key):
    listed: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        method, url, kwargs = CASES[key].request(world.acme, world)
        params = {**kwargs.get("params", {}), "offset": offset, "limit": 5000}
        page = await _ok(await api.request(method, url, params=params, headers=as_(ACME)))
        listed += page["items"]
        offset = page["next_offset"]
    ids = {item["model_id"] for item in listed}
    assert {item["tenant"] for item in listed} == {ACME}
    assert world.acme.model_id in ids and world.evil.model_id not in ids


async def test_allocation_lists_cover_the_callers_tenant_only(api, world):
    page = await _ok(await api.get("/allocations", params={"limit": 5000}, headers=as_(ACME)))
    ids = {item["allocation_id"] for item in page["items"]}
    assert {item["tenant"] for item in page["items"]} == {ACME}
    assert world.acme.allocation_id in ids and world.evil.allocation_id not in ids


async def test_the_audit_trail_covers_the_callers_tenant_only(api, world):
    records: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        params = {"subject_type": "model", "offset": offset, "limit": 1000}
        page = await _ok(await api.get("/audit", params=params, headers=as_(ACME)))
        records += page["items"]
        offset = page["next_offset"]
    subjects = {r["subject_id"] for r in records}
    assert {r["tenant"] for r in records} == {ACME}
    assert world.acme.model_id in subjects and world.evil.model_id not in subjects
    theirs = await _ok(await api.get(f"/models/{world.evil.model_id}/audit", headers=as_(EVIL)))
    assert [r["subject_id"] for r in theirs["items"]] == [world.evil.model_id]


async def test_the_security_master_is_shared_by_every_tenant(api, world):
    evil_view = await _ok(await api.get(f"/securities/{world.symbols[0]}", headers=as_(EVIL)))
    assert evil_view["symbol"] == world.symbols[0]  # made by acme's platform operator


async def test_equivalence_sets_are_shared_by_every_tenant(api, world):
    """They apply to every tenant's book (rebalance-svc, taxlot-svc), so every tenant reads
    every one; a platform operator of any tenant changes them."""
    evil_view = await _ok(
        await api.get(f"/equivalence-sets/{world.acme.set_id}", headers=as_(EVIL))
    )
    assert (evil_view["tenant"], evil_view["members"]) == (ACME, list(world.acme.members))
    listed = await _ok(
        await api.get("/equivalence-sets", params={"limit": 5000}, headers=as_(EVIL, Role.SPONSOR))
    )
    page_ids = {s["set_id"] for s in listed["items"]}
    if listed["next_offset"] is None:  # a short page: both tenants' sets are on it
        assert {world.acme.set_id, world.evil.set_id} <= page_ids
    changed = await _ok(
        await api.put(
            f"/equivalence-sets/{world.acme.set_id}",
            json=_set_body(world.acme),
            headers=as_(EVIL, Role.PLATFORM_OPERATOR, subject="ops@platform"),
        )
    )
    assert (changed["version"], changed["changed_by"], changed["tenant"]) == (
        2,
        "ops@platform",
        ACME,
    )


async def test_the_actor_recorded_is_the_tokens_subject(api, db, world):
    pat = as_(ACME, Role.MODEL_MANAGER, Role.PLATFORM_OPERATOR, subject="pat@acme")
    published = await _ok(
        await api.put(f"/models/{world.acme.model_id}", json=_model_body(world.acme), headers=pat)
    )
    changed = await _ok(
        await api.put(
            f"/equivalence-sets/{world.acme.set_id}", json=_set_body(world.acme), headers=pat
        )
    )
    removed = await _ok(await api.delete(f"/equivalence-sets/{world.acme.set_id}", headers=pat))
    assert published["changed_by"] == changed["changed_by"] == removed["changed_by"] == "pat@acme"
    assert (await _ok(await api.get(f"/models/{world.acme.model_id}")))["changed_by"] == "pat@acme"
    [*_, event] = await outbox_events(db, "model-changed", world.acme.model_id)
    assert event.payload.changed_by == "pat@acme" and event.envelope.tenant == ACME


@pytest.mark.parametrize("header", ["X-Actor", "X-Tenant"])
async def test_a_header_claiming_the_actor_or_tenant_is_refused(api, db, world, header):
    before = await state_of(api, db, world.acme, world)
    response = await api.put(
        f"/models/{world.acme.model_id}",
        json=_model_body(world.acme),
        headers={**as_(ACME), header: "someone-else"},
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [header]
    assert await state_of(api, db, world.acme, world) == before


@pytest.mark.parametrize(
    "key", [("PUT", "/models/{model_id}"), ("PUT", "/equivalence-sets/{set_id}")]
)
@pytest.mark.parametrize("tenant", [ACME, EVIL])
async def test_a_body_naming_a_tenant_is_refused_naming_the_field(api, db, world, key, tenant):
    for ids in (world.acme, Ids(ACME, f"m-new-{_uid()}", f"s-new-{_uid()}", "", ("X", "Y"))):
        method, url, kwargs = CASES[key].request(ids, world)
        before = await state_of(api, db, world.acme, world)
        response = await api.request(
            method, url, json={**kwargs["json"], "tenant": tenant}, headers=as_(ACME)
        )
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["tenant"]
        assert await state_of(api, db, world.acme, world) == before
        assert (await api.get(f"/models/{ids.model_id}")).status_code == (
            200 if ids is world.acme else 404
        )


async def test_an_unchanged_publish_by_the_owner_still_works_with_the_same_id(api, world):
    again = await api.put(
        f"/models/{world.acme.model_id}",
        json={"name": "Core", "targets": [{"symbol": world.acme.members[0], "weight": "1"}]},
        headers=as_(ACME, Role.MODEL_MANAGER),
    )
    assert again.status_code == 200 and again.json()["created"] is False
    assert Decimal(again.json()["targets"][0]["weight"]) == 1
