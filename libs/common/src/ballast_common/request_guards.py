"""Guards every request passes before its route runs: a body limit (413) and text or
integers the database cannot store (422 naming the field)."""

from __future__ import annotations

import contextlib
import json
import re
import types
from collections.abc import Iterator
from typing import Any, Union, get_args, get_origin

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ballast_common.problems import problem_response

# --- the body limit ---------------------------------------------------------------------------


class BodyTooLarge(Exception):
    """A request body grew past its route's limit while it was read."""


class BodyLimitMiddleware:
    """413 problem+json for a body larger than its route takes: the app's default, or what the
    route declares (`@router.post(..., max_body_size=...)`, or `include_router(...,
    max_body_size=...)`). Checked from Content-Length before anything runs, and counted as a
    body without one streams in."""

    def __init__(self, app: ASGIApp, default: int) -> None:
        self.app = app
        self.default = default
        self._larger: list[tuple[re.Pattern[str], set[str], int]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.default:
            route_limit = self.limit_of(scope)
            if int(declared) > route_limit:
                await self._refuse(scope, receive, send, route_limit)
                return
        received = 0
        limit: int | None = None
        exceeded = False

        async def counted() -> Message:
            nonlocal received, limit, exceeded
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.default:
                limit = limit if limit is not None else self.limit_of(scope)
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        started = False

        async def answer(message: Message) -> None:
            nonlocal started
            if exceeded:  # whatever the app made of the cut body, the answer is 413
                if not started:
                    started = True
                    await self._refuse(scope, receive, send, limit or self.default)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, answer)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, limit or self.default)

    def limit_of(self, scope: Scope) -> int:
        """The body limit of the route `scope` asks for (the default unless it declares more)."""
        if self._larger is None:
            self._larger = [
                (route.path_regex, set(route.methods or ()), route.max_body_size)
                for route in iter_route_contexts(scope["app"].routes)
                if isinstance(route.original_route, APIRoute)
                and (route.max_body_size or 0) > self.default
            ]
        for pattern, methods, limit in self._larger:
            if scope["method"] in methods and pattern.match(scope["path"]):
                return limit
        return self.default

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problem_response(
            413,
            {
                "type": "https://ballast.dev/problems/content-too-large",
                "title": "Content too large",
                "status": 413,
                "detail": f"The request body is larger than this route takes ({limit} bytes)",
                "instance": scope["path"],
            },
        )
        await response(scope, receive, send)


# --- input the database cannot store ----------------------------------------------------------

MAX_INT64 = 2**63 - 1
_BIG_INTEGER = re.compile(r"^[+-]?\d{19,}$")  # every int64 has at most 19 digits
_ESCAPE_TO_CHECK = re.compile(rb"\\u(0000|[dD][89a-fA-F])")  # NUL or a surrogate half


def text_problem(text: str) -> str | None:
    """Why PostgreSQL cannot store `text` (a NUL, an unpaired surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains an unpaired surrogate (\\ud800-\\udfff), which is not valid text"
    return None


async def refuse_unstorable_input(request: Request) -> None:
    """A dependency of every route: refuse a NUL or an unpaired surrogate anywhere in the path,
    query or JSON body, and an integer beyond 64 bits in the path or query (422 naming it)."""
    errors: list[dict[str, Any]] = []
    params = [
        *(("path", n, v) for n, v in request.path_params.items()),
        *(("query", n, v) for n, v in request.query_params.multi_items()),
    ]
    for place, name, value in params:
        for part in (name, value) if isinstance(value, str) else (name,):
            if problem := text_problem(part):
                errors.append(_error((place, name), problem, value))
                break
        else:
            if (
                isinstance(value, str)
                and _BIG_INTEGER.match(value)
                and abs(int(value)) > MAX_INT64
                and _declared_int(request, place, name)
            ):
                errors.append(_error((place, name), f"must be at most {MAX_INT64} in size", value))
    if _is_json(request.headers.get("content-type", "")):
        body = await request.body()
        if _ESCAPE_TO_CHECK.search(body):
            with contextlib.suppress(ValueError):
                errors.extend(_text_problems(json.loads(body), ("body",)))
    if errors:
        raise RequestValidationError(errors)


def _is_json(content_type: str) -> bool:
    """As FastAPI decides to parse a body as JSON: application/json or application/*+json."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _error(loc: tuple[int | str, ...], message: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": loc, "msg": message, "input": value}


def _text_problems(value: Any, loc: tuple[int | str, ...]) -> Iterator[dict[str, Any]]:
    if isinstance(value, str):
        if problem := text_problem(value):
            yield _error(loc, problem, value)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _text_problems(item, (*loc, index))
    elif isinstance(value, dict):
        for name, item in value.items():
            if problem := text_problem(name):
                yield _error((*loc, name), problem, name)
            else:
                yield from _text_problems(item, (*loc, name))


def _declared_int(request: Request, place: str, name: str) -> bool:
    """Whether the route declares `name` (a path or query parameter) as an integer."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return False
    for param in _params(route.dependant, place):
        if param.alias == name:
            annotation = param.field_info.annotation
            union = get_origin(annotation) in (Union, types.UnionType)
            return int in (get_args(annotation) if union else (annotation,))
    return False


def _params(dependant: Dependant, place: str) -> Iterator[Any]:
    yield from dependant.path_params if place == "path" else dependant.query_params
    for sub in dependant.dependencies:
        yield from _params(sub, place)
