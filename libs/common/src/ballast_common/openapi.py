"""The OpenAPI document says what the app really answers: errors as RFC 9457 problem+json.

FastAPI documents a 422 of its own shape (`HTTPValidationError`) and nothing else; the app
sends problem+json (see `app._install_errors`) and honours `Idempotency-Key` on every
mutating call (`idempotency.py`). `document_errors` rewrites the generated document once, for
every operation of every service:

- 422 (invalid input, named per field in `errors`) on every operation that takes input;
- 404 on every operation whose path names a resource with a parameter, except one that
  creates the resource it names (route `openapi_extra=CREATES_RESOURCE`);
- on POST, PUT, PATCH and DELETE: the optional `Idempotency-Key` header, 400 for a malformed
  key, 409 (a conflict with the current state, or the same key still running) and the
  `Idempotent-Replayed` header on a replayed success;
- 413 on every operation that takes a body, naming the route's limit;
- 503 with `Retry-After` on every operation but the health checks (the database or Kafka is
  unreachable);
- the bearer token every operation but the public ones takes (`securitySchemes`), 401
  without a valid one, and 403 with the permission a role must grant (`x-permission`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from ballast_common import idempotency
from ballast_common.auth import PERMISSIONS, Permission, operations_of
from ballast_common.problems import PROBLEM_JSON

PROBLEM_REF = "#/components/schemas/Problem"
# `openapi_extra` of a route that creates the resource its path names (PUT /models/{id}).
CREATES_RESOURCE: dict[str, Any] = {"x-creates-resource": True}

MUTATING = frozenset({"post", "put", "patch", "delete"})
UNCHECKED_TAGS = frozenset({"health"})  # operations that answer without the database
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
FASTAPI_DEFAULTS = (None, "", "Additional Response")

FIELD_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "FieldProblem",
    "type": "object",
    "required": ["field", "message"],
    "properties": {
        "field": {
            "type": "string",
            "description": "the input named as the rules name it, e.g. `accounts[3].cash`",
        },
        "message": {"type": "string"},
    },
}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details, as every error of every service is sent.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the kind of problem"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what went wrong, for a person"},
        "instance": {"type": "string", "description": "the request's path"},
        "errors": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/FieldProblem"},
            "description": "one entry per invalid field (422, and a malformed key's 400)",
        },
    },
}

DESCRIPTIONS = {
    "400": f"Malformed `{idempotency.HEADER}` (1 to {idempotency.MAX_KEY_LENGTH} printable "
    "characters)",
    "404": "Not found: the resource the path names does not exist",
    "409": "Conflict with the current state (e.g. done already), or a request with the same "
    f"`{idempotency.HEADER}` is still running",
    "413": "Request body too large",
    "422": f"Invalid input: each invalid field named in `errors` (also: an `{idempotency.HEADER}` "
    "reused for a different request)",
    "503": "The database or Kafka cannot be reached right now; nothing to fix in the request: "
    "retry after `Retry-After` seconds",
}

IDEMPOTENCY_KEY_PARAMETER: dict[str, Any] = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "description": "Retry safely: a repeat with the same key gets the first success back "
    f"(`{idempotency.REPLAYED_HEADER}: true`) without running again; kept "
    f"{int(idempotency.KEEP_FOR.total_seconds() // 3600)} hours per tenant and principal "
    "(the bearer token's tenant and subject). A request that failed or "
    "died changed nothing, and its key is free for a retry; bodies are compared as canonical "
    "JSON.",
    "schema": {"type": "string", "minLength": 1, "maxLength": idempotency.MAX_KEY_LENGTH},
}
REPLAYED_HEADER: dict[str, Any] = {
    "description": "`true` when this is the stored answer to an earlier request with the same key",
    "schema": {"type": "string", "enum": ["true"]},
}
RETRY_AFTER_HEADER: dict[str, Any] = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 0},
}


BEARER_SCHEME = "bearerAuth"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER_SCHEME: {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An OAuth2 access token (a JWT signed with ES256 or RS256 by the "
        "deployment's issuer) carrying `sub`, `tenant` and `roles`: the tenant and the actor "
        "of every request come from it (docs/auth.md).",
    }
}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` return the generated document with its errors documented."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            default = getattr(app.state, "max_body_bytes", None)
            document = document_errors(generate(), body_limits(app, default))
            app.openapi_schema = document_security(document, permissions(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def body_limits(app: FastAPI, default: int | None) -> dict[tuple[str, str], int]:
    """The body limit (bytes) of each operation, (path, method) -> limit, where there is one."""
    limits = {}
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.path_format:
            limit = route.max_body_size if route.max_body_size is not None else default
            if limit is not None:
                for method in route.methods or ():
                    limits[(route.path_format, method.lower())] = limit
    return limits


def permissions(app: FastAPI) -> dict[tuple[str, str], Permission]:
    """The permission each guarded operation requires, (path, method) -> permission."""
    return {
        (op.path, method.lower()): op.permission
        for op in operations_of(app)
        if not op.public and op.permission is not None
        for method in op.methods
    }


def document_security(
    document: dict[str, Any], required: dict[tuple[str, str], Permission]
) -> dict[str, Any]:
    """Name the bearer scheme, and on each guarded operation its 401, 403 and permission."""
    document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            permission = required.get((path, method))
            if method not in item or permission is None:
                continue
            operation = item[method]
            operation["security"] = [{BEARER_SCHEME: []}]
            operation["x-permission"] = permission.value
            responses = operation.setdefault("responses", {})
            responses["401"] = _problem("No bearer token, or one that is not valid")
            roles = sorted(r.value for r, granted in PERMISSIONS.items() if permission in granted)
            if len(roles) < len(PERMISSIONS):  # some role lacks it
                responses["403"] = _problem(
                    f"The caller's roles do not grant `{permission.value}` "
                    f"(granted to: {', '.join(roles)})"
                )
    return document


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }


def document_errors(
    document: dict[str, Any], limits: dict[tuple[str, str], int] | None = None
) -> dict[str, Any]:
    """Rewrite an OpenAPI document in place so every operation documents its real errors."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["FieldProblem"] = FIELD_PROBLEM_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                limit = (limits or {}).get((path, method))
                _document_operation(path, method, item[method], limit)
    for name in FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    return document


def _document_operation(
    path: str, method: str, operation: dict[str, Any], body_limit: int | None
) -> None:
    creates = bool(operation.pop("x-creates-resource", False))
    responses: dict[str, Any] = operation.setdefault("responses", {})
    mutating = method in MUTATING
    if mutating:
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("name") == idempotency.HEADER for p in parameters):
            parameters.append(IDEMPOTENCY_KEY_PARAMETER)
        for status, response in responses.items():
            if status.startswith("2"):
                response.setdefault("headers", {})[idempotency.REPLAYED_HEADER] = REPLAYED_HEADER
    wanted = set()
    if operation.get("parameters") or "requestBody" in operation or mutating:
        wanted.add("422")
    if "{" in path and not creates:
        wanted.add("404")
    if mutating:
        wanted |= {"400", "409"}
    if "requestBody" in operation and body_limit is not None:
        responses.setdefault("413", {"description": f"Request body larger than {body_limit} bytes"})
    if not UNCHECKED_TAGS & set(operation.get("tags", [])):
        wanted.add("503")
    for status in sorted(wanted):
        responses.setdefault(status, {"description": DESCRIPTIONS[status]})
    if "503" in wanted:
        responses["503"]["headers"] = {"Retry-After": RETRY_AFTER_HEADER}
    for status, response in responses.items():
        if status[0] in "45":
            if status == "422" or response.get("description") in FASTAPI_DEFAULTS:
                response["description"] = DESCRIPTIONS.get(status, "Error")
            response["content"] = {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}
