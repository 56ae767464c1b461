"""account-svc's OpenAPI document: errors as problem+json, 404 where a path names something
that must exist, 409 and Idempotency-Key on every change (no database needed)."""

import httpx
from account_svc.main import app

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


async def openapi() -> dict:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://account") as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


async def test_every_error_is_problem_json_and_fastapis_shape_is_gone():
    document = await openapi()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    errors = [
        (path, method, status, response)
        for path, item in document["paths"].items()
        for method, op in item.items()
        for status, response in op["responses"].items()
        if status[0] in "45"
    ]
    assert len(errors) > 40
    assert all(response["content"] == PROBLEM for *_, response in errors)


async def test_not_found_conflict_and_idempotency_where_they_apply():
    paths = (await openapi())["paths"]

    def codes(method: str, path: str) -> set[str]:
        return set(paths[path][method]["responses"])

    def keyed(method: str, path: str) -> bool:
        params = paths[path][method].get("parameters", [])
        return any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in params)

    assert {"404", "422"} <= codes("get", "/accounts/{account_id}")
    assert "409" not in codes("get", "/accounts/{account_id}")
    assert {"404", "409", "422"} <= codes("post", "/proposals/{proposal_id}/approve")
    assert {"404", "409"} <= codes("put", "/accounts/{account_id}/tax-settings")
    # PUT /security-lists/{id} creates the list it names: it cannot be missing
    assert "404" not in codes("put", "/security-lists/{list_id}")
    assert "404" in codes("get", "/security-lists/{list_id}")
    assert {"409", "422"} <= codes("post", "/accounts:batch")
    assert keyed("post", "/accounts") and keyed("patch", "/accounts/{account_id}")
    assert keyed("delete", "/accounts/{account_id}/strategy")
    assert not keyed("get", "/accounts")
