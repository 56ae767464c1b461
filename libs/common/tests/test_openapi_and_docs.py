"""The factory's `/docs` works offline, and its OpenAPI document says what the app sends:
problem+json errors, 404 where a path names a resource, 409 and `Idempotency-Key` where a
call changes something."""

import re
from typing import Annotated

import httpx
import pytest
from ballast_common.app import create_app
from ballast_common.auth import CanManageModels, Permission, requires
from ballast_common.errors import NotFound
from ballast_common.openapi import CREATES_RESOURCE, PROBLEM_JSON
from ballast_common.settings import ServiceSettings
from ballast_common.testing import bearer, with_test_issuer
from fastapi import APIRouter, Depends, FastAPI, Query
from probe_svc import make_spec
from pydantic import BaseModel

router = APIRouter(dependencies=[Depends(requires(Permission.READ))])  # any caller


class Thing(BaseModel):
    name: str


@router.get("/things")
async def list_things(limit: Annotated[int, Query(ge=1, le=10)] = 5) -> list[str]:
    return ["a"][:limit]


@router.get("/things/{thing_id}")
async def get_thing(thing_id: str) -> Thing:
    raise NotFound(f"no thing {thing_id}")


@router.put("/things/{thing_id}", openapi_extra=CREATES_RESOURCE)
async def put_thing(thing_id: str, body: Thing) -> Thing:
    return body


@router.post("/things/{thing_id}/polish")
async def polish_thing(thing_id: str, caller: CanManageModels) -> Thing:
    return Thing(name=thing_id)


@pytest.fixture(scope="module")
def app() -> FastAPI:
    spec = make_spec("probe_docs")
    spec.routers = [router]
    return create_app(spec, with_test_issuer(ServiceSettings()))


@pytest.fixture
async def http(app: FastAPI):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://probe", headers=bearer()
    ) as client:
        yield client


ASSET = re.compile(r"""(?:src|href)=["']?([^"' >]+)""")


@pytest.mark.parametrize(
    ("page", "kinds"), [("/docs", {"javascript", "css"}), ("/redoc", {"javascript"})]
)
async def test_docs_pages_load_their_assets_from_the_service_itself(http, page, kinds):
    html = await http.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    urls = ASSET.findall(html.text)
    assets = [u for u in urls if u.endswith((".js", ".css", ".png"))]
    assert assets, html.text
    assert not [u for u in urls if "//" in u], "a page must not load anything from elsewhere"
    served = set()
    for url in assets:
        response = await http.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url
        served |= {k for k in ("javascript", "css") if k in response.headers["content-type"]}
    assert kinds <= served
    assert "/openapi.json" in html.text


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {
        (method.upper(), path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
    }


def assert_problem_json(response: dict) -> None:
    assert response["content"] == {
        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
    }


async def test_errors_are_documented_as_problem_json(http):
    document = (await http.get("/openapi.json")).json()
    assert "HTTPValidationError" not in str(document)
    assert {"Problem", "FieldProblem"} <= set(document["components"]["schemas"])
    ops = operations(document)
    for op in ops.values():
        for status, response in op["responses"].items():
            if status[0] in "45":
                assert_problem_json(response)
    codes = {key: set(op["responses"]) for key, op in ops.items()}
    assert codes[("GET", "/healthz")] == {"200"}  # no input, nothing to refuse
    assert codes[("GET", "/things")] == {"200", "401", "422", "503"}
    assert codes[("GET", "/things/{thing_id}")] == {"200", "401", "404", "422", "503"}
    # PUT creates the thing it names (no 404); it takes a body (413 beyond the limit)
    assert codes[("PUT", "/things/{thing_id}")] == {
        *("200", "400", "401", "409", "413", "422", "503")
    }
    # a permission some role lacks: 403
    assert codes[("POST", "/things/{thing_id}/polish")] == {
        *("200", "400", "401", "403", "404", "409", "422", "503")
    }
    assert "x-creates-resource" not in str(document)


async def test_the_bearer_token_and_permissions_are_documented(http):
    document = (await http.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    ops = operations(document)
    assert "security" not in ops[("GET", "/healthz")]
    assert ops[("GET", "/things")]["security"] == [{"bearerAuth": []}]
    polish = ops[("POST", "/things/{thing_id}/polish")]
    assert polish["x-permission"] == "models:write"
    assert "admin, model-manager" in polish["responses"]["403"]["description"]


async def test_a_route_without_a_permission_is_refused_at_start(app):
    loose = APIRouter()

    @loose.get("/loose")
    async def loose_route() -> str:
        return "anyone"

    spec = make_spec("probe_loose")
    spec.routers = [router, loose]
    with pytest.raises(RuntimeError, match=r"\['GET'\] /loose"):
        create_app(spec, with_test_issuer(ServiceSettings()))


async def test_calls_without_a_valid_token_are_401_and_forbidden_roles_403(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as anonymous:
        missing = await anonymous.get("/things")
        forged = await anonymous.get("/things", headers={"Authorization": "Bearer not.a.jwt"})
        claimed = await anonymous.get("/things", headers={**bearer(), "X-Tenant": "acme"})
        sponsor = await anonymous.post("/things/t1/polish", headers=bearer(roles=["sponsor"]))
        manager = await anonymous.post("/things/t1/polish", headers=bearer(roles=["model-manager"]))
        health = await anonymous.get("/healthz")
        docs = await anonymous.get("/openapi.json")
    assert missing.status_code == forged.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in missing.json()["detail"]
    assert claimed.status_code == 422 and claimed.json()["errors"][0]["field"] == "X-Tenant"
    assert sponsor.status_code == 403 and "models:write" in sponsor.json()["detail"]
    assert manager.status_code == 200
    assert health.status_code == docs.status_code == 200


async def test_limits_readiness_and_unavailability_are_documented(http):
    ops = operations((await http.get("/openapi.json")).json())
    put = ops[("PUT", "/things/{thing_id}")]["responses"]
    assert put["413"]["description"] == "Request body larger than 1048576 bytes"
    unavailable = ops[("GET", "/things")]["responses"]["503"]
    assert "Retry-After" in unavailable["headers"]
    assert_problem_json(unavailable)
    ready = ops[("GET", "/readyz")]["responses"]
    assert "Readiness" in str(ready["200"]["content"]) and "checks" in ready["503"]["description"]
    assert "Retry-After" not in ready["503"].get("headers", {})  # not ready is not "retry"


async def test_mutating_calls_document_the_idempotency_key(http):
    ops = operations((await http.get("/openapi.json")).json())
    for (method, _), op in ops.items():
        headers = [p for p in op.get("parameters", []) if p["in"] == "header"]
        keyed = [p for p in headers if p["name"] == "Idempotency-Key"]
        assert len(keyed) == (method in {"POST", "PUT", "PATCH", "DELETE"}), (method, op)
    polish = ops[("POST", "/things/{thing_id}/polish")]
    assert "Idempotent-Replayed" in polish["responses"]["200"]["headers"]
    assert not polish["parameters"][-1]["required"]


async def test_what_is_documented_is_what_is_sent(http):
    invalid = await http.get("/things", params={"limit": 99})
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == PROBLEM_JSON
    body = invalid.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["errors"][0]["field"] == "query.limit"
    missing = await http.get("/things/nothing")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM_JSON
    bad_key = await http.post("/things/x/polish", headers={"Idempotency-Key": ""})
    assert bad_key.status_code == 400 and bad_key.headers["content-type"] == PROBLEM_JSON
