"""model-hub-svc's OpenAPI document: errors as problem+json; publishing a model or a set
names what it creates (no 404); reading or removing one may find nothing (404)."""

import httpx
from model_hub_svc.main import app

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


async def test_the_document_tells_the_errors_the_routes_send():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://model-hub") as http:
        document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    assert "HTTPValidationError" not in str(document)
    put_model = paths["/models/{model_id}"]["put"]
    assert set(put_model["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "409",
        "413",
        "422",
        "503",
    }
    assert put_model["x-permission"] == "models:write"
    assert put_model["security"] == [{"bearerAuth": []}]
    assert "unique across the platform" in put_model["description"]
    assert "shared by every tenant" in paths["/securities"]["put"]["description"]
    assert "shared by every tenant" in paths["/securities/{symbol}"]["get"]["description"]
    assert put_model["responses"]["422"]["content"] == PROBLEM
    assert any(p["name"] == "Idempotency-Key" for p in put_model["parameters"])
    assert "404" not in paths["/equivalence-sets/{set_id}"]["put"]["responses"]
    assert {"404", "409"} <= set(paths["/equivalence-sets/{set_id}"]["delete"]["responses"])
    get_version = paths["/models/{model_id}/versions/{version}"]["get"]["responses"]
    assert (
        set(get_version) == {"200", "401", "404", "422", "503"}
        and get_version["404"]["content"] == PROBLEM
    )
    # limit, offset; no 403: every role may read
    assert set(paths["/models"]["get"]["responses"]) == {"200", "401", "422", "503"}
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
