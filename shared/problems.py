"""RFC 9457 problem details for every service: one place maps errors to responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://cluster-incentives.example/problems/"

log = logging.getLogger(__name__)


class Problem(Exception):
    """An error the client can act on; raised anywhere, rendered as problem+json."""

    def __init__(
        self,
        *,
        status: int,
        title: str,
        detail: str | None = None,
        type_: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_ = type_
        self.headers = dict(headers or {})
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.type_ if self.type_ else "about:blank",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(request.url.path if request else None),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def field_errors(errors: Sequence[Any], body: Any = None) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "firm.founded_on", "message": ...}``, field named in dots.

    Where a body is a union told apart by a tag (``"programme"``), pydantic puts the tag in
    the error's location; it is not a field the client sent, so it is left out, and an
    unknown or missing tag is reported on the tag's own field.
    """
    out = []
    for error in errors:
        location = [part for part in error.get("loc", ()) if part != "body"]
        if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'\"")
            location = [*location, tag] if tag else location
        out.append(
            {
                "field": ".".join(str(p) for p in _sent_path(location, body)) or "body",
                "message": str(error.get("msg")),
            }
        )
    return out


def _sent_path(location: Sequence[Any], body: Any) -> list[Any]:
    """``location`` without the parts that are not in what was sent (union tags)."""
    if body is None:
        return list(location)
    path: list[Any] = []
    current = body
    for part in location:
        if isinstance(current, dict) and isinstance(part, str) and part not in current:
            if part in {v for v in current.values() if isinstance(v, str)}:
                continue  # the tag pydantic adds for a discriminated union: a value, not a key
            path.append(part)
            current = None
            continue
        path.append(part)
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            current = None
    return path


def install_problem_handlers(
    app: FastAPI, mapping: Mapping[type[Exception], tuple[int, str]] | None = None
) -> None:
    """Render every error as problem+json; ``mapping`` turns domain errors into statuses.

    ``mapping`` maps an exception class to ``(status, title)``; its ``str()`` is the detail.
    """

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc, request)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors(), exc.body)
        fields = ", ".join(e["field"] for e in errors)
        problem = Problem(
            status=422,
            title="Invalid request",
            detail=f"check {fields}",
            type_="validation",
            errors=errors,
        )
        return problem_response(problem, request)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (allowed := allowed_methods(request)):
            headers["Allow"] = ", ".join(sorted(allowed))
        problem = Problem(
            status=exc.status_code,
            title=_TITLES.get(exc.status_code, "Error"),
            detail=str(exc.detail) if exc.detail else None,
            headers=headers,
        )
        return problem_response(problem, request)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        problem = Problem(status=500, title="Internal error", detail="the error was logged")
        return problem_response(problem, request)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
    for error_type, (status, title) in (mapping or {}).items():

        async def on_domain(
            request: Request, exc: Exception, status: int = status, title: str = title
        ) -> JSONResponse:
            type_ = getattr(exc, "code", None)
            extensions: dict[str, Any] = dict(getattr(exc, "extensions", {}) or {})
            if "field" in extensions:  # a rule about one field: name it as validation does
                extensions["errors"] = [{"field": extensions.pop("field"), "message": str(exc)}]
            problem = Problem(
                status=status, title=title, detail=str(exc), type_=type_, **extensions
            )
            return problem_response(problem, request)

        app.add_exception_handler(error_type, on_domain)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> set[str]:
    """Every method the request's path answers to (a mount's files aside). Starlette's 405
    names only the methods of the first route on the path, but a path is often two routes
    (``GET`` and ``POST /v1/applications``): RFC 9110 wants ``Allow`` to list them all."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return {
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    }


_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    415: "Unsupported media type",
    422: "Invalid request",
}


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "On a 422: each field refused, named in dots, and why.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}

_ANSWERS = {
    "400": "The request could not be read",
    "401": "No token, or one that was refused (expired, wrong signature, another service's)",
    "403": "The token's role may not do this",
    "404": "No such resource, or not the caller's to see",
    "409": "A conflict with the current state, or an Idempotency-Key reused with another body",
    "413": "The body is too large",
    "422": "A field was refused: ``errors`` names each",
    "503": "A dependency is not answering; try again after ``Retry-After``",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say what every operation can answer besides success: the
    problem+json answers the edge and the rules give (FastAPI's default 422 claims
    ``application/json`` with a schema of its own, and lists nothing else), and an error
    answer a route names without saying its content (``{404: {"description": ...}}``)
    is a problem too. An operation
    behind a token (a ``security`` requirement) also answers 401 and 403; one with a path
    parameter 404; one that writes 409; every one 400, 413, 422 and 503."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            answers = operation.setdefault("responses", {})
            codes = {"400", "413", "422", "503"}
            if operation.get("security"):
                codes |= {"401", "403"}
            if "{" in path:
                codes.add("404")
            if method != "get":
                codes.add("409")
            for code in sorted(codes):
                if code in answers and code != "422":  # the route documents its own
                    continue
                answers[code] = {"description": _ANSWERS[code], "content": problem}
            for code, answer in answers.items():
                if code.startswith(("4", "5")) and "content" not in answer:
                    answer["content"] = problem  # a route's own error answer: a problem too
    return schema
