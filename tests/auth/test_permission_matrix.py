"""Every route of every service, called as every role: the permission matrix (docs/auth.md) is
what the services enforce, and no route answers without a valid bearer token.

The routes come from the apps themselves (`auth.operations_of`), so a new route is in the
matrix the day it is added; `ROUTE_PERMISSIONS` pins what each one requires, so a route
guarded more loosely than intended fails here. Tenant isolation (another tenant's ids answer
404) is tested per service in its `test_tenants_and_roles.py`.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from ballast_common.app import ServiceSpec, create_app
from ballast_common.auth import PERMISSIONS, Operation, Permission, Role, operations_of
from ballast_common.migrations.runner import SERVICE_PACKAGES
from ballast_common.testing import (
    api_client,
    bearer,
    issuer_for_tests,
    migrated_database,
    with_test_issuer,
)
from cryptography.hazmat.primitives.asymmetric import ec

pytestmark = pytest.mark.integration

SERVICES = SERVICE_PACKAGES
TENANT = "matrix"
P = Permission
# What each route requires: (service, METHOD, path) -> permission.
ROUTE_PERMISSIONS: dict[tuple[str, str, str], Permission] = {
    ("account_svc", "GET", "/accounts"): P.READ,
    ("account_svc", "GET", "/audit"): P.READ,
    ("account_svc", "GET", "/accounts/{account_id}/audit"): P.READ,
    ("account_svc", "POST", "/accounts"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}"): P.READ,
    ("account_svc", "PATCH", "/accounts/{account_id}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}/rebalance-settings"): P.READ,
    ("account_svc", "PUT", "/accounts/{account_id}/rebalance-settings"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}/restriction-history"): P.READ,
    ("account_svc", "GET", "/accounts/{account_id}/restrictions"): P.READ,
    ("account_svc", "PUT", "/accounts/{account_id}/restrictions"): P.MANAGE_ACCOUNTS,
    ("account_svc", "DELETE", "/accounts/{account_id}/strategy"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}/strategy"): P.READ,
    ("account_svc", "PUT", "/accounts/{account_id}/strategy"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}/tax-settings"): P.READ,
    ("account_svc", "PUT", "/accounts/{account_id}/tax-settings"): P.MANAGE_ACCOUNTS,
    ("account_svc", "POST", "/accounts:batch"): P.MANAGE_ACCOUNTS,
    ("account_svc", "DELETE", "/book-loads/{load_id}"): P.LOAD_BOOKS,
    ("account_svc", "GET", "/book-loads/{load_id}"): P.READ,
    ("account_svc", "POST", "/book-loads/{load_id}/apply"): P.LOAD_BOOKS,
    ("account_svc", "PUT", "/book-loads/{load_id}/files/{name}"): P.LOAD_BOOKS,
    ("account_svc", "POST", "/book-loads/{load_id}/validate"): P.LOAD_BOOKS,
    ("account_svc", "GET", "/models"): P.READ,
    ("account_svc", "GET", "/proposals"): P.READ,
    ("account_svc", "POST", "/proposals/{proposal_id}/approve"): P.DECIDE_PROPOSALS,
    ("account_svc", "GET", "/filters"): P.READ,
    ("account_svc", "PUT", "/filters/order"): P.MANAGE_ACCOUNTS,
    ("account_svc", "PUT", "/filters/{filter_id}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/filters/{filter_id}"): P.READ,
    ("account_svc", "DELETE", "/filters/{filter_id}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/filters/{filter_id}/accounts"): P.READ,
    ("account_svc", "POST", "/proposals/approve"): P.DECIDE_PROPOSALS,
    ("account_svc", "POST", "/proposals/{proposal_id}/reject"): P.DECIDE_PROPOSALS,
    ("account_svc", "POST", "/bulk-changes"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/bulk-changes"): P.READ,
    ("account_svc", "GET", "/bulk-changes/{bulk_change_id}"): P.READ,
    ("account_svc", "GET", "/bulk-changes/{bulk_change_id}/accounts"): P.READ,
    ("account_svc", "POST", "/bulk-changes/{bulk_change_id}/exemptions"): P.MANAGE_ACCOUNTS,
    (
        "account_svc",
        "DELETE",
        "/bulk-changes/{bulk_change_id}/exemptions/{account_id}",
    ): P.MANAGE_ACCOUNTS,
    ("account_svc", "POST", "/bulk-changes/{bulk_change_id}/apply"): P.MANAGE_ACCOUNTS,
    ("account_svc", "POST", "/bulk-changes/{bulk_change_id}/cancel"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/accounts/{account_id}/settings-history"): P.READ,
    ("account_svc", "PUT", "/strategies/{strategy_id}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/strategies"): P.READ,
    ("account_svc", "GET", "/strategies/{strategy_id}"): P.READ,
    ("account_svc", "GET", "/accounts/{account_id}/opening"): P.READ,
    ("account_svc", "POST", "/accounts/{account_id}/opening/steps/{step}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/tasks"): P.READ,
    ("account_svc", "GET", "/proposals/{proposal_id}"): P.READ,
    ("account_svc", "POST", "/proposals/{proposal_id}/edit"): P.DECIDE_PROPOSALS,
    ("account_svc", "GET", "/proposals/{proposal_id}/history"): P.READ,
    ("account_svc", "GET", "/proposal-counts"): P.READ,
    ("account_svc", "GET", "/security-lists"): P.READ,
    ("account_svc", "GET", "/security-lists/{list_id}"): P.READ,
    ("account_svc", "PUT", "/security-lists/{list_id}"): P.MANAGE_ACCOUNTS,
    ("account_svc", "GET", "/security-lists/{list_id}/history"): P.READ,
    ("model_hub_svc", "DELETE", "/book-loads/{load_id}"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "GET", "/audit"): P.READ,
    ("model_hub_svc", "GET", "/models/{model_id}/audit"): P.READ,
    ("model_hub_svc", "GET", "/book-loads/{load_id}"): P.READ,
    ("model_hub_svc", "POST", "/book-loads/{load_id}/apply"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "PUT", "/allocations/{allocation_id}"): P.MANAGE_MODELS,
    ("model_hub_svc", "GET", "/allocations"): P.READ,
    ("model_hub_svc", "GET", "/allocations/{allocation_id}"): P.READ,
    ("model_hub_svc", "GET", "/allocations/{allocation_id}/versions/{version}"): P.READ,
    ("model_hub_svc", "GET", "/allocations/{allocation_id}/audit"): P.READ,
    ("model_hub_svc", "PUT", "/book-loads/{load_id}/files/{name}"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "POST", "/book-loads/{load_id}/validate"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "GET", "/equivalence-sets"): P.READ,
    ("model_hub_svc", "DELETE", "/equivalence-sets/{set_id}"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "GET", "/equivalence-sets/{set_id}"): P.READ,
    ("model_hub_svc", "PUT", "/equivalence-sets/{set_id}"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "GET", "/models"): P.READ,
    ("model_hub_svc", "GET", "/models/{model_id}"): P.READ,
    ("model_hub_svc", "PUT", "/models/{model_id}"): P.MANAGE_MODELS,
    ("model_hub_svc", "GET", "/models/{model_id}/versions/{version}"): P.READ,
    ("model_hub_svc", "GET", "/securities"): P.READ,
    ("model_hub_svc", "PUT", "/securities"): P.MANAGE_PLATFORM,
    ("model_hub_svc", "GET", "/securities/{symbol}"): P.READ,
    ("rebalance_svc", "POST", "/cash-requests"): P.START_RUNS,
    ("rebalance_svc", "GET", "/cash-requests"): P.READ,
    ("rebalance_svc", "GET", "/cash-requests/{request_id}"): P.READ,
    ("rebalance_svc", "POST", "/harvests"): P.START_RUNS,
    ("rebalance_svc", "GET", "/read-model"): P.READ,
    ("rebalance_svc", "GET", "/runs"): P.READ,
    ("rebalance_svc", "GET", "/runs/{run_id}"): P.READ,
    ("rebalance_svc", "GET", "/runs/{run_id}/scenarios/{account_id}"): P.READ,
    ("rebalance_svc", "POST", "/scans"): P.START_RUNS,
    ("taxlot_svc", "GET", "/accounts/{account_id}/form8949.csv"): P.READ,
    ("taxlot_svc", "GET", "/audit"): P.READ,
    ("taxlot_svc", "GET", "/accounts/{account_id}/holdings"): P.READ,
    ("taxlot_svc", "POST", "/accounts/{account_id}/holdings"): P.LOAD_BOOKS,
    ("taxlot_svc", "GET", "/accounts/{account_id}/lots"): P.READ,
    ("taxlot_svc", "GET", "/accounts/{account_id}/realized-gains"): P.READ,
    ("taxlot_svc", "POST", "/accounts/{account_id}/sleeve-cash-transfers"): P.MANAGE_ACCOUNTS,
    ("taxlot_svc", "POST", "/accounts/{account_id}/sleeve-transfers"): P.MANAGE_ACCOUNTS,
    ("taxlot_svc", "GET", "/accounts/{account_id}/tax-settings"): P.READ,
    ("taxlot_svc", "GET", "/accounts/{account_id}/unrealized"): P.READ,
    ("taxlot_svc", "DELETE", "/book-loads/{load_id}"): P.LOAD_BOOKS,
    ("taxlot_svc", "GET", "/book-loads/{load_id}"): P.READ,
    ("taxlot_svc", "POST", "/book-loads/{load_id}/apply"): P.LOAD_BOOKS,
    ("taxlot_svc", "PUT", "/book-loads/{load_id}/files/{name}"): P.LOAD_BOOKS,
    ("taxlot_svc", "POST", "/book-loads/{load_id}/validate"): P.LOAD_BOOKS,
    ("taxlot_svc", "POST", "/corporate-actions"): P.MANAGE_PLATFORM,
    ("taxlot_svc", "GET", "/accounts/{account_id}/breaks"): P.READ,
    ("taxlot_svc", "GET", "/breaks"): P.READ,
    ("taxlot_svc", "POST", "/breaks/{break_id}/resolve"): P.OPERATE,
    ("taxlot_svc", "DELETE", "/custodian-days/{load_id}"): P.OPERATE,
    ("taxlot_svc", "GET", "/custodian-days/exceptions"): P.READ,
    ("taxlot_svc", "POST", "/custodian-days/exceptions"): P.OPERATE,
    ("taxlot_svc", "POST", "/custodian-days/exceptions/{exception_id}/resolve"): P.OPERATE,
    ("taxlot_svc", "GET", "/custodian-days/unknown-securities"): P.READ,
    (
        "taxlot_svc",
        "POST",
        "/custodian-days/unknown-securities/{exception_id}/resolve",
    ): P.OPERATE,
    ("taxlot_svc", "GET", "/custodian-days/{custodian}/{business_date}/files"): P.OPERATE,
    ("taxlot_svc", "GET", "/custodian-days/{custodian}/{business_date}/files/{name}"): P.OPERATE,
    ("taxlot_svc", "PUT", "/custodian-days/{custodian}/{business_date}/files/{name}"): P.OPERATE,
    ("taxlot_svc", "GET", "/custodian-days/{load_id}"): P.READ,
    ("taxlot_svc", "POST", "/custodian-days/{load_id}/apply"): P.OPERATE,
    ("taxlot_svc", "PUT", "/custodian-days/{load_id}/files/{name}"): P.OPERATE,
    ("taxlot_svc", "POST", "/custodian-days/{load_id}/validate"): P.OPERATE,
    ("taxlot_svc", "GET", "/reconciliations/{custodian}/{business_date}"): P.READ,
    ("taxlot_svc", "POST", "/holdings:batch"): P.LOAD_BOOKS,
    ("taxlot_svc", "GET", "/households/{household_id}/wash-sale-blocks"): P.READ,
    ("custodian_gateway", "GET", "/allocations"): P.READ,
    ("custodian_gateway", "GET", "/orders"): P.READ,
    ("custodian_gateway", "GET", "/orders/{client_order_id}"): P.READ,
    ("custodian_gateway", "GET", "/stats"): P.READ,
    ("custodian_gateway", "GET", "/trades/{trade_id}"): P.READ,
    ("reporting_svc", "GET", "/accounts"): P.READ,
    ("reporting_svc", "GET", "/accounts/{account_id}"): P.READ,
    ("reporting_svc", "GET", "/accounts/{account_id}/holdings"): P.READ,
    ("reporting_svc", "GET", "/accounts/{account_id}/lots"): P.READ,
    ("reporting_svc", "GET", "/accounts/{account_id}/trades"): P.READ,
    ("reporting_svc", "GET", "/models"): P.READ,
    ("reporting_svc", "GET", "/runs"): P.READ,
    ("reporting_svc", "GET", "/runs/{run_id}"): P.READ,
    ("reporting_svc", "GET", "/runs/{run_id}/accounts"): P.READ,
    ("reporting_svc", "GET", "/summary"): P.READ,
    ("reporting_svc", "POST", "/webhook-deliveries/{delivery_id}/redeliver"): P.ADMINISTER,
    ("reporting_svc", "GET", "/webhooks"): P.READ,
    ("reporting_svc", "POST", "/webhooks"): P.ADMINISTER,
    ("reporting_svc", "DELETE", "/webhooks/{webhook_id}"): P.ADMINISTER,
    ("reporting_svc", "GET", "/webhooks/{webhook_id}"): P.READ,
    ("reporting_svc", "GET", "/webhooks/{webhook_id}/deliveries"): P.READ,
    ("reporting_svc", "GET", "/approvals/counts"): P.READ,
    ("reporting_svc", "GET", "/approvals/proposals"): P.READ,
    ("reporting_svc", "POST", "/approvals/proposals/approve"): P.DECIDE_PROPOSALS,
    ("reporting_svc", "GET", "/approvals/proposals/{proposal_id}"): P.READ,
    ("reporting_svc", "GET", "/approvals/proposals/{proposal_id}/history"): P.READ,
    ("reporting_svc", "POST", "/approvals/proposals/{proposal_id}/approve"): P.DECIDE_PROPOSALS,
    ("reporting_svc", "POST", "/approvals/proposals/{proposal_id}/reject"): P.DECIDE_PROPOSALS,
    ("reporting_svc", "POST", "/approvals/proposals/{proposal_id}/edit"): P.DECIDE_PROPOSALS,
    ("reporting_svc", "GET", "/custodian/breaks"): P.READ,
    ("reporting_svc", "POST", "/custodian/breaks/{break_id}/resolve"): P.OPERATE,
    ("reporting_svc", "GET", "/custodian/exceptions"): P.READ,
    ("reporting_svc", "POST", "/custodian/exceptions/{exception_id}/resolve"): P.OPERATE,
    ("reporting_svc", "GET", "/custodian/unknown-securities"): P.READ,
    ("reporting_svc", "POST", "/custodian/unknown-securities/{exception_id}/resolve"): P.OPERATE,
    ("reporting_svc", "POST", "/webhooks/{webhook_id}/secret:rotate"): P.ADMINISTER,
}


def _operations(package: str) -> tuple[ServiceSpec, list[Operation]]:
    spec: ServiceSpec = importlib.import_module(f"{package}.main").spec
    app = create_app(spec, with_test_issuer(spec.settings_type()))
    return spec, [op for op in operations_of(app) if not op.public]


def _filled(path: str) -> str:
    """A path with every parameter set to a value no row has (valid as text and as a number)."""
    return re.sub(r"\{[^}]+\}", "9191", path)


@pytest.fixture(params=SERVICES)
async def service(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[tuple[str, httpx.AsyncClient, list[Operation]]]:
    spec, ops = _operations(request.param)
    db = await migrated_database(spec, database_url)
    async with api_client(spec, db, tenant=TENANT) as api:
        yield request.param, api, ops
    await db.dispose()


async def _call(api: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {} if method in {"POST", "PUT", "PATCH"} else None
    return await api.request(method, _filled(path), json=body, headers=headers)


async def test_every_route_enforces_the_matrix_for_every_role(service) -> None:
    package, api, ops = service
    wrong: list[str] = []
    for op in ops:
        assert op.permission is not None
        for method in sorted(op.methods):
            for role in Role:
                answer = await _call(api, method, op.path, bearer(TENANT, [role]))
                allowed = op.permission in PERMISSIONS[role]
                if allowed and answer.status_code in (401, 403):
                    wrong.append(f"{method} {op.path} as {role}: {answer.status_code}, allowed")
                if not allowed and answer.status_code != 403:
                    wrong.append(f"{method} {op.path} as {role}: {answer.status_code}, not 403")
                if not allowed and op.permission.value not in answer.json()["detail"]:
                    wrong.append(f"{method} {op.path} as {role}: 403 names no permission")
    assert not wrong, f"{package}:\n" + "\n".join(wrong)


def _foreign_token() -> str:
    """A well-formed token under the issuer's kid, signed by a key that is not the issuer's."""
    issuer = issuer_for_tests()
    kid = issuer.ensure_key()
    claims = {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "mallory",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
        "tenant": TENANT,
        "roles": ["admin"],
    }
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def _expired_token() -> str:
    return issuer_for_tests().issue(TENANT, [Role.ADMIN], "late", ttl_s=-120)


async def test_no_route_answers_without_a_valid_token(service) -> None:
    package, api, ops = service
    callers = {
        "no token": {"Authorization": ""},
        "not a JWT": {"Authorization": "Bearer abc.def.ghi"},
        "another scheme": {"Authorization": f"Basic {bearer()['Authorization'][7:]}"},
        "foreign key": {"Authorization": f"Bearer {_foreign_token()}"},
        "expired": {"Authorization": f"Bearer {_expired_token()}"},
    }
    wrong: list[str] = []
    for op in ops:
        for method in sorted(op.methods):
            for who, headers in callers.items():
                answer = await _call(api, method, op.path, headers)
                if answer.status_code != 401 or "WWW-Authenticate" not in answer.headers:
                    wrong.append(f"{method} {op.path} with {who}: {answer.status_code}")
    assert not wrong, f"{package}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", SERVICES)
def test_each_route_requires_what_it_should(package: str) -> None:
    _, ops = _operations(package)
    found = {(package, m, op.path): op.permission for op in ops for m in op.methods}
    pinned = {k: v for k, v in ROUTE_PERMISSIONS.items() if k[0] == package}
    assert found == pinned
