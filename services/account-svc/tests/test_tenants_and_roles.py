"""Who may call account-svc and what they see, on real PostgreSQL: every route of the app
(taken from the app itself, so none is left out) called by every role of the permission
matrix, as the owning tenant "acme" and as another tenant "evil".

- a role without the route's permission gets 403, whichever tenant, and nothing changes;
- another tenant's ids answer 404 exactly as unknown ids, for reads and writes, and nothing
  of acme's changes; lists, filters and histories show the caller's tenant only;
- the tenant and the actor come from the token: what is recorded as set, updated, decided or
  rejected by is the token's subject, and a body claiming a tenant (or a setter) is a 422
  naming the field.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Literal

import httpx
import pytest
from account_svc import bulk_changes_repository
from account_svc.main import app, spec
from account_svc.repository import PostgresAccountRepository
from account_svc.service import receive_proposals
from account_svc.tables import BulkChange
from ballast_common.auth import PERMISSIONS, Permission, Role, operations_of
from ballast_common.contracts.events import (
    CorporateActionRecordedV1,
    ModelChangedV1,
    ModelTargetV1,
)
from ballast_common.db import Database
from ballast_common.testing import (
    api_client,
    bearer,
    deliver,
    delivery,
    envelope,
    example,
    migrated_database,
    unit_of_work,
)
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import text

pytestmark = pytest.mark.integration

ACME, EVIL = "acme", "evil"
ACME_SMA, ACME_UMA, EVIL_SMA = "TR-A-SMA", "TR-A-UMA", "TR-E-SMA"
ACME_LIST = "tr-a-list"  # acme's only
ACME_LIST_TO_PUT = "tr-a-list2"  # acme's; another tenant's PUT makes a list of its own
SHARED_LIST = "tr-shared"  # both tenants have a list of this id, with other members
ACME_MODELS, EVIL_MODEL = ("tr-a-eq", "tr-a-bd"), "tr-e-eq"
ACME_LOAD = "tr-a-load"
BULK = {ACME: "tr-a-bulk", EVIL: "tr-e-bulk"}  # a previewed bulk change of each tenant
STRATEGY_IDS = {ACME: "tr-a-strategy", EVIL: "tr-e-strategy"}  # each tenant's own
FILTERS = {ACME: "tr-a-filter", EVIL: "tr-e-filter"}  # each tenant's own
OPENING = {ACME: "TR-A-OPEN", EVIL: "TR-E-OPEN"}  # opened as a workflow, a step in exception
PROPOSALS = {
    name: str(uuid.uuid5(uuid.NAMESPACE_URL, f"tenants-and-roles/{name}"))
    for name in ("acme", "acme-actor-approve", "acme-actor-reject", "evil")
}
STRATEGY = {
    "sleeves": [
        {"sleeve_id": "core", "model_id": ACME_MODELS[0], "weight": "0.6"},
        {"sleeve_id": "bonds", "model_id": ACME_MODELS[1], "weight": "0.4"},
    ]
}


# --- the routes and how each is called on acme's rows ------------------------------------------

Scope = Literal["id", "list", "create", "namespace"]


@dataclass(frozen=True)
class Case:
    """How a route is called on acme's rows, and what its ids mean to another tenant:
    `id`: another tenant's id (404); `list`: the caller's rows only; `create`: makes the
    caller's own row; `namespace`: the id names the caller's own row (a PUT that creates)."""

    path: str
    permission: Permission
    body: Any = None
    scope: Scope = "id"


def account_body(
    account_id: str, model_id: str = ACME_MODELS[0], household_id: str = "TR-HA"
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "household_id": household_id,
        "name": "T",
        "model_id": model_id,
    }


P = Permission
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/filters"): Case("/filters", P.READ, scope="list"),
    ("PUT", "/filters/{filter_id}"): Case(
        f"/filters/{FILTERS[ACME]}",
        P.MANAGE_ACCOUNTS,
        {"name": "Theirs", "action": "review", "conditions": []},
        scope="create",
    ),
    ("GET", "/filters/{filter_id}"): Case(f"/filters/{FILTERS[ACME]}", P.READ),
    ("GET", "/filters/{filter_id}/accounts"): Case(f"/filters/{FILTERS[ACME]}/accounts", P.READ),
    ("DELETE", "/filters/{filter_id}"): Case(f"/filters/{FILTERS[ACME]}", P.MANAGE_ACCOUNTS),
    # the caller's own filters' order; acme's ids are unknown filters to another tenant (422)
    ("PUT", "/filters/order"): Case(
        "/filters/order", P.MANAGE_ACCOUNTS, {"filter_ids": [FILTERS[ACME]]}, scope="create"
    ),
    # the caller's own proposals: acme's ids are "no such proposal" to another tenant
    ("POST", "/proposals/approve"): Case(
        "/proposals/approve",
        P.DECIDE_PROPOSALS,
        {"proposal_ids": [PROPOSALS["acme"]]},
        scope="create",
    ),
    ("POST", "/accounts"): Case(
        "/accounts", P.MANAGE_ACCOUNTS, account_body("TR-A-NEW"), scope="create"
    ),
    ("POST", "/accounts:batch"): Case(
        "/accounts:batch",
        P.MANAGE_ACCOUNTS,
        {"accounts": [account_body("TR-A-NEW2")]},
        scope="create",
    ),
    ("GET", "/accounts"): Case("/accounts", P.READ, scope="list"),
    ("GET", "/accounts/{account_id}"): Case(f"/accounts/{ACME_SMA}", P.READ),
    ("PATCH", "/accounts/{account_id}"): Case(
        f"/accounts/{ACME_SMA}", P.MANAGE_ACCOUNTS, {"name": "taken", "status": "closed"}
    ),
    ("GET", "/accounts/{account_id}/rebalance-settings"): Case(
        f"/accounts/{ACME_SMA}/rebalance-settings", P.READ
    ),
    ("PUT", "/accounts/{account_id}/rebalance-settings"): Case(
        f"/accounts/{ACME_SMA}/rebalance-settings", P.MANAGE_ACCOUNTS, {"min_trade_value": "99"}
    ),
    ("GET", "/accounts/{account_id}/restrictions"): Case(
        f"/accounts/{ACME_SMA}/restrictions", P.READ
    ),
    ("PUT", "/accounts/{account_id}/restrictions"): Case(
        f"/accounts/{ACME_SMA}/restrictions", P.MANAGE_ACCOUNTS, {"restrictions": []}
    ),
    ("GET", "/accounts/{account_id}/restriction-history"): Case(
        f"/accounts/{ACME_SMA}/restriction-history", P.READ
    ),
    ("GET", "/accounts/{account_id}/tax-settings"): Case(
        f"/accounts/{ACME_SMA}/tax-settings", P.READ
    ),
    ("PUT", "/accounts/{account_id}/tax-settings"): Case(
        f"/accounts/{ACME_SMA}/tax-settings", P.MANAGE_ACCOUNTS, {"harvest": True}
    ),
    ("GET", "/accounts/{account_id}/strategy"): Case(f"/accounts/{ACME_UMA}/strategy", P.READ),
    ("PUT", "/accounts/{account_id}/strategy"): Case(
        f"/accounts/{ACME_UMA}/strategy", P.MANAGE_ACCOUNTS, STRATEGY
    ),
    ("DELETE", "/accounts/{account_id}/strategy"): Case(
        f"/accounts/{ACME_UMA}/strategy", P.MANAGE_ACCOUNTS
    ),
    ("GET", "/models"): Case("/models", P.READ, scope="list"),
    ("GET", "/audit"): Case("/audit", P.READ, scope="list"),
    ("GET", "/accounts/{account_id}/audit"): Case(f"/accounts/{ACME_SMA}/audit", P.READ),
    ("GET", "/security-lists"): Case("/security-lists", P.READ, scope="list"),
    ("GET", "/security-lists/{list_id}"): Case(f"/security-lists/{ACME_LIST}", P.READ),
    ("GET", "/security-lists/{list_id}/history"): Case(
        f"/security-lists/{ACME_LIST}/history", P.READ
    ),
    ("PUT", "/security-lists/{list_id}"): Case(
        f"/security-lists/{ACME_LIST_TO_PUT}",
        P.MANAGE_ACCOUNTS,
        {"name": "Theirs", "symbols": ["EVIL"]},
        scope="namespace",
    ),
    ("GET", "/proposals"): Case("/proposals", P.READ, scope="list"),
    ("POST", "/proposals/{proposal_id}/approve"): Case(
        f"/proposals/{PROPOSALS['acme']}/approve", P.DECIDE_PROPOSALS, {"note": "mine now"}
    ),
    ("POST", "/proposals/{proposal_id}/reject"): Case(
        f"/proposals/{PROPOSALS['acme']}/reject", P.DECIDE_PROPOSALS, {"note": "mine now"}
    ),
    ("GET", "/proposals/{proposal_id}"): Case(f"/proposals/{PROPOSALS['acme']}", P.READ),
    ("POST", "/proposals/{proposal_id}/edit"): Case(
        f"/proposals/{PROPOSALS['acme']}/edit",
        P.DECIDE_PROPOSALS,
        {"trades": [{"trade_id": PROPOSALS["acme"], "quantity": "1"}]},
    ),
    ("GET", "/proposals/{proposal_id}/history"): Case(
        f"/proposals/{PROPOSALS['acme']}/history", P.READ
    ),
    ("GET", "/proposal-counts"): Case("/proposal-counts", P.READ, scope="list"),
    ("POST", "/bulk-changes"): Case(
        "/bulk-changes",
        P.MANAGE_ACCOUNTS,
        {
            "selection": {"account_ids": [ACME_SMA]},
            "change": {"kind": "set_status", "status": "closed"},
            "note": "n",
        },
        scope="create",
    ),
    ("GET", "/bulk-changes"): Case("/bulk-changes", P.READ, scope="list"),
    ("GET", "/bulk-changes/{bulk_change_id}"): Case(f"/bulk-changes/{BULK[ACME]}", P.READ),
    ("GET", "/bulk-changes/{bulk_change_id}/accounts"): Case(
        f"/bulk-changes/{BULK[ACME]}/accounts", P.READ
    ),
    ("POST", "/bulk-changes/{bulk_change_id}/exemptions"): Case(
        f"/bulk-changes/{BULK[ACME]}/exemptions",
        P.MANAGE_ACCOUNTS,
        {"account_id": ACME_SMA, "reason": "mine now"},
    ),
    ("DELETE", "/bulk-changes/{bulk_change_id}/exemptions/{account_id}"): Case(
        f"/bulk-changes/{BULK[ACME]}/exemptions/{ACME_SMA}", P.MANAGE_ACCOUNTS
    ),
    ("POST", "/bulk-changes/{bulk_change_id}/apply"): Case(
        f"/bulk-changes/{BULK[ACME]}/apply", P.MANAGE_ACCOUNTS
    ),
    ("POST", "/bulk-changes/{bulk_change_id}/cancel"): Case(
        f"/bulk-changes/{BULK[ACME]}/cancel", P.MANAGE_ACCOUNTS
    ),
    ("GET", "/accounts/{account_id}/settings-history"): Case(
        f"/accounts/{ACME_SMA}/settings-history", P.READ
    ),
    ("PUT", "/strategies/{strategy_id}"): Case(
        f"/strategies/{STRATEGY_IDS[ACME]}",
        P.MANAGE_ACCOUNTS,
        STRATEGY | {"name": "Theirs"},
        scope="create",
    ),
    ("GET", "/strategies"): Case("/strategies", P.READ, scope="list"),
    ("GET", "/accounts/{account_id}/opening"): Case(f"/accounts/{OPENING[ACME]}/opening", P.READ),
    ("POST", "/accounts/{account_id}/opening/steps/{step}"): Case(
        f"/accounts/{OPENING[ACME]}/opening/steps/funding",
        P.MANAGE_ACCOUNTS,
        {"outcome": "done"},
    ),
    ("GET", "/tasks"): Case("/tasks", P.READ, scope="list"),
    ("GET", "/strategies/{strategy_id}"): Case(f"/strategies/{STRATEGY_IDS[ACME]}", P.READ),
    # book loads (libs/common's routes): see test_book_loads_are_not_yet_each_tenants_own
    ("PUT", "/book-loads/{load_id}/files/{name}"): Case(
        f"/book-loads/{ACME_LOAD}/files/households.csv", P.LOAD_BOOKS, scope="namespace"
    ),
    ("POST", "/book-loads/{load_id}/validate"): Case(
        f"/book-loads/{ACME_LOAD}/validate", P.LOAD_BOOKS, {"as_of": "2026-12-04"}, "namespace"
    ),
    ("POST", "/book-loads/{load_id}/apply"): Case(
        f"/book-loads/{ACME_LOAD}/apply", P.LOAD_BOOKS, {"as_of": "2026-12-04"}, "namespace"
    ),
    ("GET", "/book-loads/{load_id}"): Case(f"/book-loads/{ACME_LOAD}", P.READ, scope="namespace"),
    ("DELETE", "/book-loads/{load_id}"): Case(
        f"/book-loads/{ACME_LOAD}", P.LOAD_BOOKS, scope="namespace"
    ),
}
GUARDED = sorted(
    (method, op.path) for op in operations_of(app) if not op.public for method in op.methods
)


def as_caller(tenant: str, *roles: Role, subject: str | None = None) -> dict[str, str]:
    return bearer(tenant, roles or (Role.ADMIN,), subject)


async def call(
    api: httpx.AsyncClient, method: str, case: Case, headers: dict[str, str]
) -> httpx.Response:
    if case.path.startswith("/book-loads/") and method == "PUT":
        csv = b"household_id,name\nTR-HX,X\n"
        return await api.put(case.path, content=csv, headers=headers)
    body = {} if case.body is None else {"json": case.body}
    return await api.request(method, case.path, headers=headers, **body)


# --- acme's and evil's rows ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await migrated_database(spec, database_url)
    await seed(database)
    yield database
    await database.dispose()


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(spec, db, tenant=ACME) as http:
        yield http


def model_changed(model_id: str, tenant: str) -> Any:
    event = ModelChangedV1(
        model_id=model_id,
        name=model_id,
        version=1,
        changed_by="pm",
        targets=[ModelTargetV1(symbol="AAA", weight=Decimal(1))],
    )
    return envelope(event, tenant=tenant, source="model-hub-svc")


def proposed(proposal_id: str, account_id: str, model_id: str, tenant: str) -> Any:
    event = example(
        "trades-proposed",
        proposal_id=uuid.UUID(proposal_id),
        run_id=uuid.uuid4(),
        account_id=account_id,
        model_id=model_id,
    )
    return delivery(event, tenant=tenant, source="rebalance-svc")


async def seed(db: Database) -> None:
    """Each tenant's models (announced under its tenant), lists (one id in both), accounts,
    pending proposals, and a symbol change that touched both tenants' rows."""
    await deliver(
        db,
        spec.subscriptions,
        *(model_changed(m, ACME) for m in ACME_MODELS),
        model_changed(EVIL_MODEL, EVIL),
    )
    async with api_client(spec, db, tenant=ACME) as api:

        async def ok(response: Any) -> None:
            assert (await response).status_code in (200, 201)

        evil = as_caller(EVIL)
        for list_id in (ACME_LIST, ACME_LIST_TO_PUT):
            await ok(api.put(f"/security-lists/{list_id}", json={"name": "A", "symbols": ["XOM"]}))
        await ok(
            api.put(f"/security-lists/{SHARED_LIST}", json={"name": "A", "symbols": ["TROLD"]})
        )
        await ok(
            api.put(
                f"/security-lists/{SHARED_LIST}",
                json={"name": "E", "symbols": ["TROLD", "BP"]},
                headers=evil,
            )
        )
        restrictions = [
            {"kind": "do_not_buy", "scope": "security", "value": "TROLD", "reason": "r"},
            {"kind": "do_not_hold", "scope": "list", "value": SHARED_LIST, "reason": "r"},
        ]
        sma = account_body(ACME_SMA) | {"auto_approve": False, "restrictions": restrictions}
        await ok(api.post("/accounts", json=sma))
        uma = account_body(ACME_UMA) | {"model_id": None, "strategy": STRATEGY}
        await ok(api.post("/accounts", json=uma))
        theirs = account_body(EVIL_SMA, EVIL_MODEL, "TR-HE") | {
            "auto_approve": False,
            "restrictions": restrictions,
        }
        await ok(api.post("/accounts", json=theirs, headers=evil))
        await ok(api.put(f"/strategies/{STRATEGY_IDS[ACME]}", json=STRATEGY | {"name": "A"}))
        band = {"kind": "absolute", "width": "0"}
        whole = {"sleeve_id": "all", "model_id": EVIL_MODEL, "weight": "1", "band": band}
        await ok(
            api.put(
                f"/strategies/{STRATEGY_IDS[EVIL]}",
                json={"name": "E", "sleeves": [whole]},
                headers=evil,
            )
        )
        for tenant, filter_id in FILTERS.items():
            review_closed = {
                "name": "Closed",
                "action": "review",
                "conditions": [{"field": "status", "op": "eq", "value": "closed"}],
            }
            headers = {} if tenant == ACME else evil
            await ok(api.put(f"/filters/{filter_id}", json=review_closed, headers=headers))
        for tenant, account_id in OPENING.items():
            headers = {} if tenant == ACME else evil
            model_id = ACME_MODELS[0] if tenant == ACME else EVIL_MODEL
            household_id = "TR-HA" if tenant == ACME else "TR-HE"
            body = account_body(account_id, model_id, household_id) | {"status": "opening"}
            await ok(api.post("/accounts", json=body, headers=headers))
            await ok(
                api.post(
                    f"/accounts/{account_id}/opening/steps/paperwork",
                    json={"outcome": "exception", "note": "form missing"},
                    headers=headers,
                )
            )
        staged = b"household_id,name\nTR-HL,L\n"
        await ok(api.put(f"/book-loads/{ACME_LOAD}/files/households.csv", content=staged))
    async with unit_of_work(db, "test") as uow:
        await receive_proposals(
            uow,
            PostgresAccountRepository(uow.session),
            [
                proposed(PROPOSALS["acme"], ACME_SMA, ACME_MODELS[0], ACME),
                proposed(PROPOSALS["acme-actor-approve"], ACME_SMA, ACME_MODELS[0], ACME),
                proposed(PROPOSALS["acme-actor-reject"], ACME_SMA, ACME_MODELS[0], ACME),
                proposed(PROPOSALS["evil"], EVIL_SMA, EVIL_MODEL, EVIL),
            ],
        )
    action = CorporateActionRecordedV1(
        action_id="tr-ca-1",
        type="symbol-change",
        symbol="TROLD",
        new_symbol="TRNEW",
        on=date(2026, 11, 20),
        accounts_affected=2,
    )
    await deliver(db, spec.subscriptions, envelope(action, source="taxlot-svc"))
    async with unit_of_work(db, "test") as uow:  # each tenant's previewed bulk change
        for tenant, account_id in ((ACME, ACME_SMA), (EVIL, EVIL_SMA)):
            change = {"kind": "set_status", "status": "closed"}
            row = BulkChange(
                bulk_change_id=BULK[tenant],
                tenant=tenant,
                kind="set_status",
                change=change,
                selection={"account_ids": 1},
                note="seed",
                status="previewed",
                created_by="seed",
            )
            await bulk_changes_repository.add_bulk_change(uow.session, row)
            selected = bulk_changes_repository.accounts_of_ids(tenant, [account_id])
            await bulk_changes_repository.freeze_selection(
                uow.session, row.bulk_change_id, tenant, selected
            )
            await bulk_changes_repository.work_out_outcomes(
                uow.session,
                row.bulk_change_id,
                "set_status",
                {"status": "closed", "message": "opening"},
                exempted_too=True,
            )


LISTED = {  # what a list route shows: the ids of the caller's tenant's rows, in its order
    "/filters": (
        "filter_id",
        "SELECT filter_id FROM filters WHERE tenant = :t ORDER BY position, filter_id",
    ),
    "/tasks": (
        "task_id",
        "SELECT 'exception:' || s.account_id || ':' || s.step FROM account_opening_steps s "
        "JOIN accounts a USING (account_id) WHERE s.tenant = :t AND s.status = 'exception' "
        "AND a.status = 'opening' ORDER BY s.updated_at, 1",
    ),
    "/strategies": (
        "strategy_id",
        "SELECT strategy_id FROM strategies WHERE tenant = :t ORDER BY 1",
    ),
    "/bulk-changes": (
        "bulk_change_id",
        "SELECT bulk_change_id FROM bulk_changes WHERE tenant = :t "
        "ORDER BY created_at DESC, bulk_change_id",
    ),
    "/accounts": ("account_id", "SELECT account_id FROM accounts WHERE tenant = :t ORDER BY 1"),
    "/models": ("model_id", "SELECT model_id FROM known_models WHERE tenant = :t ORDER BY 1"),
    "/audit": ("seq", "SELECT seq FROM audit_records WHERE tenant = :t ORDER BY 1 LIMIT 100"),
    "/security-lists": (
        "list_id",
        "SELECT list_id FROM security_lists WHERE tenant = :t ORDER BY 1",
    ),
    "/proposals": (
        "proposal_id",
        "SELECT p.proposal_id FROM proposals p JOIN accounts a USING (account_id) "
        "WHERE a.tenant = :t ORDER BY p.received_at, p.proposal_id",
    ),
    "/proposal-counts": (
        "routed_by",
        "SELECT p.routed_by FROM proposals p JOIN accounts a USING (account_id) "
        "WHERE a.tenant = :t AND p.status = 'pending' GROUP BY 1 ORDER BY 1 NULLS FIRST",
    ),
}


async def listed_ids(db: Database, path: str, tenant: str) -> list[str]:
    async with db.sessions() as session:
        return list((await session.execute(text(LISTED[path][1]), {"t": tenant})).scalars())


async def tenant_rows(db: Database, tenant: str) -> dict[str, Any]:
    """Everything account-svc keeps of the tenant, and what it published for its accounts."""
    queries = {
        "accounts": "SELECT to_jsonb(a) FROM accounts a WHERE tenant = :t ORDER BY account_id",
        "lists": "SELECT to_jsonb(l) FROM security_lists l WHERE tenant = :t ORDER BY list_id",
        "strategies": "SELECT to_jsonb(s) FROM strategies s WHERE tenant = :t ORDER BY strategy_id",
        "strategy_followers": "SELECT to_jsonb(f) FROM strategy_followers f WHERE tenant = :t "
        "ORDER BY account_id",
        "bulk_changes": "SELECT to_jsonb(b) FROM bulk_changes b WHERE tenant = :t "
        "ORDER BY bulk_change_id",
        "bulk_change_accounts": "SELECT to_jsonb(b) FROM bulk_change_accounts b "
        "WHERE tenant = :t ORDER BY bulk_change_id, account_id",
        "history": "SELECT to_jsonb(h) FROM restriction_history h WHERE tenant = :t "
        "ORDER BY change_id",
        "models": "SELECT to_jsonb(m) FROM known_models m WHERE tenant = :t ORDER BY model_id",
        "opening_steps": "SELECT to_jsonb(s) FROM account_opening_steps s WHERE tenant = :t "
        "ORDER BY account_id, step",
        "audit": "SELECT to_jsonb(r) FROM audit_records r WHERE tenant = :t ORDER BY seq",
        "proposals": "SELECT to_jsonb(p) FROM proposals p JOIN accounts a USING (account_id) "
        "WHERE a.tenant = :t ORDER BY proposal_id",
        "published": "SELECT count(*) FROM outbox o WHERE o.key IN "
        "(SELECT account_id FROM accounts WHERE tenant = :t)",
    }
    async with db.sessions() as session:
        return {
            name: [row[0] for row in await session.execute(text(sql), {"t": tenant})]
            for name, sql in queries.items()
        }


# --- every route is in the matrix, with the permission the matrix gives it --------------------


def test_every_route_is_tested_and_requires_its_permission():
    assert sorted(CASES) == GUARDED  # a new route must be added to CASES
    required = {
        (method, op.path): op.permission
        for op in operations_of(app)
        if not op.public
        for method in op.methods
    }
    assert {key: case.permission for key, case in CASES.items()} == required


def test_the_openapi_document_names_each_routes_permission():
    paths = app.openapi()["paths"]
    for (method, path), case in CASES.items():
        operation = paths[path][method.lower()]
        assert operation["x-permission"] == case.permission.value, (method, path)
        assert "401" in operation["responses"], (method, path)
        # every role reads: only the other permissions can be refused
        assert ("403" in operation["responses"]) == (case.permission != P.READ), (method, path)


# --- every route x every role x own and other tenant --------------------------------------------


ACCOUNT_ROUTES = [key for key in CASES if not key[1].startswith("/book-loads")]
BOOK_LOAD_ROUTES = [key for key in CASES if key[1].startswith("/book-loads")]


@pytest.mark.parametrize(
    ("method", "path"), ACCOUNT_ROUTES, ids=[" ".join(k) for k in ACCOUNT_ROUTES]
)
async def test_every_role_of_either_tenant(api, db, method, path):
    """A role without the permission gets 403 (own tenant or not); with it, another tenant's
    caller gets 404 for acme's ids and sees only its own rows; nothing of acme's changes."""
    case = CASES[(method, path)]
    before = await tenant_rows(db, ACME)
    for role in Role:
        permitted = case.permission in PERMISSIONS[role]
        for tenant in (ACME, EVIL):
            if permitted and method != "GET" and (tenant == ACME or case.scope == "create"):
                continue  # the caller's own writes: the service's own tests
            response = await call(api, method, case, as_caller(tenant, role))
            where = f"{role} of {tenant}: {method} {case.path}"
            if not permitted:
                assert response.status_code == 403, where
                assert case.permission.value in response.json()["detail"], where
            elif tenant == EVIL and case.scope == "id":
                assert response.status_code == 404, where
            elif case.scope == "namespace":  # evil's own list of that id; acme's untouched
                assert response.status_code in (200, 201), where
                assert response.json()["symbols"] == ["EVIL"], where
            else:
                assert response.status_code == 200, where
                if case.scope == "list":
                    key = LISTED[case.path][0]
                    shown = [item[key] for item in response.json()["items"]]
                    assert shown == await listed_ids(db, case.path, tenant), where
                    assert shown, where
    assert await tenant_rows(db, ACME) == before


async def test_another_tenants_ids_answer_exactly_as_unknown_ones(api):
    """The 404 for acme's id says nothing an unknown id would not."""
    evil = as_caller(EVIL)
    for method, path in ACCOUNT_ROUTES:
        case = CASES[(method, path)]
        if case.scope != "id":
            continue
        acme_id = case.path.split("/")[2]
        unknown = Case(case.path.replace(acme_id, "TR-NOWHERE"), case.permission, case.body)
        theirs = await call(api, method, case, evil)
        nowhere = await call(api, method, unknown, evil)
        assert theirs.status_code == nowhere.status_code == 404, (method, path)
        assert json.loads(theirs.text.replace(acme_id, "TR-NOWHERE")) == nowhere.json()


@pytest.mark.parametrize(
    "query",
    [
        "/accounts?household_id=TR-HE",
        f"/accounts?model_id={EVIL_MODEL}",
        f"/proposals?account_id={EVIL_SMA}",
        "/proposals?status=pending",
    ],
)
async def test_filters_never_reach_another_tenants_rows(api, query):
    items = (await api.get(query)).json()["items"]
    assert not [i for i in items if "TR-E-" in json.dumps(i)]
    theirs = (await api.get(query, headers=as_caller(EVIL))).json()["items"]
    assert not [i for i in theirs if "TR-A-" in json.dumps(i)]


async def test_each_tenant_sees_and_follows_its_own_list_of_a_shared_id(api, db):
    """Both tenants have a list `tr-shared`: each reads its own members and history, and the
    symbol change was followed in each list once, announced to each tenant's accounts with
    that tenant's members."""
    for tenant, members in ((ACME, ["TRNEW"]), (EVIL, ["BP", "TRNEW"])):
        headers = as_caller(tenant, Role.SPONSOR)
        shown = (await api.get(f"/security-lists/{SHARED_LIST}", headers=headers)).json()
        assert shown["symbols"] == members
        history = await api.get(f"/security-lists/{SHARED_LIST}/history", headers=headers)
        [change] = history.json()["items"]
        assert (change["change"], change["after"]) == ("list-replaced", {"symbol": "TRNEW"})
        account_id = ACME_SMA if tenant == ACME else EVIL_SMA
        changes = await api.get(f"/accounts/{account_id}/restriction-history", headers=headers)
        assert [c["after"]["value"] for c in changes.json()["items"]] == ["TRNEW"]
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT key, value FROM outbox WHERE topic = 'account-changed' "
                "AND key IN (:a, :e) ORDER BY id"
            ),
            {"a": ACME_SMA, "e": EVIL_SMA},
        )
        last = {key: json.loads(value)["payload"] for key, value in rows}
    for account_id, members in ((ACME_SMA, ["TRNEW"]), (EVIL_SMA, ["BP", "TRNEW"])):
        [listed] = [r for r in last[account_id]["restrictions"] if r["scope"] == "list"]
        assert listed["symbols"] == members


async def test_an_account_opened_is_the_callers_tenants(api, db):
    evil = as_caller(EVIL, Role.ADVISOR, subject="mal@evil")
    body = account_body("TR-E-NEW", EVIL_MODEL, "TR-HE")
    opened = await api.post("/accounts", json=body, headers=evil)
    assert opened.status_code == 201, opened.text
    assert opened.json()["tenant"] == EVIL
    assert (await api.get("/accounts/TR-E-NEW")).status_code == 404
    # acme's models, households and lists are not evil's to use
    cases = [
        ({"model_id": ACME_MODELS[0]}, "model_id", f"unknown model {ACME_MODELS[0]}"),
        ({"household_id": "TR-HA"}, "household_id", "household TR-HA is another tenant's"),
        (
            {"restrictions": [{"kind": "do_not_buy", "scope": "list", "value": ACME_LIST}]},
            "restrictions[0].value",
            f"unknown security list {ACME_LIST}",
        ),
    ]
    for change, field, message in cases:
        body = account_body("TR-E-NEW2", EVIL_MODEL, "TR-HE") | change
        if "restrictions" in change:
            body["restrictions"][0]["reason"] = "r"
        refused = await api.post("/accounts", json=body, headers=evil)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["field"] == field and error["message"].startswith(message)
    assert (await api.get("/accounts/TR-E-NEW2", headers=evil)).status_code == 404


# --- the actor is the token's subject; no body or header claims a tenant or an actor ----------


async def test_who_made_a_change_is_the_tokens_subject(api, db):
    advisor = as_caller(ACME, Role.ADVISOR, subject="pat@acme")
    restrictions = [{"kind": "do_not_sell", "scope": "sector", "value": "Energy", "reason": "r"}]
    put = await api.put(
        f"/accounts/{ACME_UMA}/restrictions", json={"restrictions": restrictions}, headers=advisor
    )
    assert put.status_code == 200, put.text
    assert [r["set_by"] for r in put.json()["restrictions"]] == ["pat@acme"]
    listed = await api.put(
        "/security-lists/tr-a-actor", json={"name": "L", "symbols": ["XOM"]}, headers=advisor
    )
    assert listed.status_code in (200, 201) and listed.json()["updated_by"] == "pat@acme"

    compliance = as_caller(ACME, Role.COMPLIANCE, subject="cy@acme")
    approved = await api.post(
        f"/proposals/{PROPOSALS['acme-actor-approve']}/approve", json={}, headers=compliance
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["decided_by"] == "cy@acme"
    rejected = await api.post(
        f"/proposals/{PROPOSALS['acme-actor-reject']}/reject", json={}, headers=compliance
    )
    assert rejected.json()["decided_by"] == "cy@acme"
    async with db.sessions() as session:
        rows = await session.execute(
            text(
                "SELECT topic, value FROM outbox WHERE key = :a "
                "AND topic IN ('trades-approved', 'proposal-rejected')"
            ),
            {"a": ACME_SMA},
        )
        envelopes = {topic: json.loads(value) for topic, value in rows}
    assert envelopes["trades-approved"]["payload"]["approved_by"] == "cy@acme"
    assert envelopes["proposal-rejected"]["payload"]["rejected_by"] == "cy@acme"
    assert {e["tenant"] for e in envelopes.values()} == {ACME}
    recorded = {
        (r["subject_type"], r["subject_id"], r["action"]): r["actor"]
        for r in (await api.get("/audit", params={"limit": 1000})).json()["items"]
    }
    assert recorded[("account", ACME_UMA, "set-restrictions")] == "pat@acme"
    assert recorded[("security-list", "tr-a-actor", "create")] == "pat@acme"
    assert recorded[("proposal", PROPOSALS["acme-actor-approve"], "approve")] == "cy@acme"
    assert recorded[("proposal", PROPOSALS["acme-actor-reject"], "reject")] == "cy@acme"


def routes_with_bodies() -> list[tuple[str, str]]:
    with_body = {
        (method, context.path_format)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and context.original_route.body_field is not None
        for method in context.methods or ()
    }
    assert with_body <= set(CASES)
    return sorted(with_body)


@pytest.mark.parametrize(
    ("method", "path"), routes_with_bodies(), ids=[" ".join(k) for k in routes_with_bodies()]
)
async def test_a_body_claiming_a_tenant_is_refused_naming_the_field(api, db, method, path):
    case = CASES[(method, path)]
    before = await tenant_rows(db, ACME)
    body = (case.body or {}) | {"tenant": ACME}
    response = await api.request(method, case.path, json=body, headers=as_caller(ACME))
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["tenant"]
    assert await tenant_rows(db, ACME) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/accounts:batch",
            {"accounts": [account_body("TR-A-CLAIM") | {"tenant": EVIL}]},
            "accounts[0].tenant",
        ),
        (
            f"/accounts/{ACME_SMA}/restrictions",
            {
                "restrictions": [
                    {
                        "kind": "do_not_buy",
                        "scope": "sector",
                        "value": "Energy",
                        "reason": "r",
                        "set_by": "someone-else",
                    }
                ]
            },
            "restrictions[0].set_by",
        ),
    ],
)
async def test_nested_claims_of_tenant_or_setter_are_refused(api, db, path, body, field):
    before = await tenant_rows(db, ACME)
    method = "POST" if path.endswith(":batch") else "PUT"
    response = await api.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert await tenant_rows(db, ACME) == before


@pytest.mark.parametrize("header", ["X-Tenant", "X-Actor"])
async def test_identity_headers_are_refused(api, db, header):
    before = await tenant_rows(db, ACME)
    response = await api.patch(
        f"/accounts/{ACME_SMA}", json={"name": "x"}, headers={header: "acme"}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [header]
    assert await tenant_rows(db, ACME) == before


# --- book loads (libs/common) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), BOOK_LOAD_ROUTES, ids=[" ".join(k) for k in BOOK_LOAD_ROUTES]
)
async def test_book_load_routes_refuse_roles_without_their_permission(api, db, method, path):
    case = CASES[(method, path)]
    before = await tenant_rows(db, ACME)
    for role in Role:
        if case.permission in PERMISSIONS[role]:
            continue
        for tenant in (ACME, EVIL):
            response = await call(api, method, case, as_caller(tenant, role))
            assert response.status_code == 403, (role, tenant)
    assert await tenant_rows(db, ACME) == before


async def test_book_loads_are_each_tenants_own(api):
    assert (await api.get(f"/book-loads/{ACME_LOAD}")).status_code == 200
    theirs = await api.get(f"/book-loads/{ACME_LOAD}", headers=as_caller(EVIL, Role.SPONSOR))
    assert theirs.status_code == 404
