"""Every operation of every service, read from its OpenAPI document, gets the inputs that once
answered 500 (issue 10): NUL bytes and integers beyond int32 and int64 in each path and query
parameter; in each top-level body field an explicit null, a NUL, a float where a decimal
belongs (1e308, 1e999999999), 1e30 and an unknown field; and a 10 MB body. Each answer is a
4xx problem+json (or a success), never a 5xx. Deterministic: the same requests every run.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from ballast_common.app import ServiceSpec
from ballast_common.migrations.runner import SERVICE_PACKAGES
from ballast_common.testing import api_client, migrated_database

pytestmark = pytest.mark.integration

SERVICES = SERVICE_PACKAGES
PARAMETER_VALUES = ["a\x00b", str(2**31), str(2**63), "9" * 30, "-" + "9" * 30, "1e999999999"]
# Raw JSON for one body field: what json.dumps cannot write (1e999999999) is written as is.
FIELD_VALUES = ["null", '"a\\u0000b"', "1e308", "1e999999999", "1e30", "1" + "0" * 30, "[]"]
TEN_MB = 10 * 1024 * 1024
PROBLEM_JSON = "application/problem+json"


@pytest.fixture(params=SERVICES)
async def service(request: pytest.FixtureRequest, database_url: str) -> AsyncIterator[Any]:
    spec: ServiceSpec = importlib.import_module(f"{request.param}.main").spec
    db = await migrated_database(spec, database_url)
    async with api_client(spec, db) as api:
        yield api, (await api.get("/openapi.json")).json()
    await db.dispose()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "patch", "delete"}:
                yield method.upper(), path, operation


def _filled(path: str, operation: dict[str, Any], name: str, value: str) -> tuple[str, dict]:
    """The path with `name` (a path parameter) set to `value` and the others to something
    plausible; or the path filled plausibly and `name` as a query parameter."""
    query = {}
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            plausible = "1" if parameter["schema"].get("type") == "integer" else "x"
            replacement = value if parameter["name"] == name else plausible
            path = path.replace("{" + parameter["name"] + "}", quote(replacement, safe=""))
        elif parameter["in"] == "query" and parameter["name"] == name:
            query[name] = value
    return path, query


def _json_properties(operation: dict[str, Any], document: dict[str, Any]) -> list[str] | None:
    content = operation.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    schema = content["application/json"].get("schema", {})
    ref = schema.get("$ref") or next(
        (s.get("$ref") for s in schema.get("anyOf", []) if "$ref" in s), None
    )
    if ref is None:
        return []
    resolved = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return list(resolved.get("properties", {}))


def check(response: httpx.Response, what: str) -> list[str]:
    if response.status_code >= 500:
        return [f"{what}: {response.status_code} {response.text[:300]}"]
    if response.status_code >= 400 and response.headers.get("content-type") != PROBLEM_JSON:
        return [f"{what}: {response.status_code} is not problem+json"]
    return []


async def test_hostile_parameters_and_bodies_are_4xx_never_5xx(service: Any) -> None:
    api, document = service
    problems: list[str] = []
    sent = 0
    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            if parameter["in"] not in {"path", "query"}:
                continue
            for value in PARAMETER_VALUES:
                url, query = _filled(path, operation, parameter["name"], value)
                response = await api.request(method, url, params=query)
                sent += 1
                problems += check(response, f"{method} {path} {parameter['name']}={value!r}")
        properties = _json_properties(operation, document)
        if properties is None:
            continue
        url, _ = _filled(path, operation, "", "")
        headers = {"Content-Type": "application/json"}
        bodies = [f'{{"{p}": {v}}}' for p in properties for v in FIELD_VALUES]
        bodies += ['{"an_unknown_field": 1}', "null", "[]", '"x"']
        for body in bodies:
            response = await api.request(method, url, content=body, headers=headers)
            sent += 1
            problems += check(response, f"{method} {path} {body[:80]}")
        big = json.dumps({"blob": "x" * TEN_MB})
        response = await api.request(method, url, content=big, headers=headers)
        sent += 1
        problems += check(response, f"{method} {path} a 10 MB body")
        limit = re.search(r"larger than (\d+) bytes", str(operation["responses"].get("413")))
        if limit is None or (int(limit.group(1)) < TEN_MB and response.status_code != 413):
            problems.append(f"{method} {path}: a 10 MB body answered {response.status_code}")
    assert sent > 50
    assert not problems, f"{len(problems)} of {sent} requests:\n" + "\n".join(problems[:30])
