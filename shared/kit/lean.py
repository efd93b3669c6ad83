"""A route that answers the usual request without FastAPI solving its dependencies.

A command route (``POST`` an application, a decision, a vote...) takes a JSON body, a
principal found from the request alone, path parameters and an Idempotency-Key. FastAPI's
generic handler spent about a tenth of a busy service's time on each request's
dependency graph, telemetry hooks and content-type parsing around them.
:class:`LeanRoute` takes the usual request to such a route in a straight line: the body
as FastAPI reads it, the route's own dependencies called in order, its parameters and
body validated by the very fields FastAPI built for them. Anything else, or anything
that fails validation, goes to FastAPI's own handler, which answers as it always did
(the same problem+json, the same order of checks): this route refuses nothing itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation, request_params_to_args
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the straight line does for one route: known when the route is built."""

    call: Callable[..., Awaitable[Response]]
    request_name: str
    dependencies: Sequence[tuple[str, Callable[[Request], Awaitable[Any]]]]
    dependant: Dependant
    body: Any
    """The field of the route's one JSON body, as FastAPI validates it (or None)."""


class LeanRoute(APIRoute):
    """An :class:`~fastapi.routing.APIRoute` whose usual request skips FastAPI's dependency
    solving; set it as a router's ``route_class``. A route of another shape (query or
    cookie parameters, a dependency with its own parameters, an optional body, an
    endpoint that returns anything but a Response) is FastAPI's alone."""

    def get_route_handler(self) -> Handler:
        full = super().get_route_handler()
        plan = None if self._embed_body_fields else _plan(self.dependant)
        if plan is None:
            return full

        async def handle(request: Request) -> Response:
            values = await _values(plan, request)
            if values is None:
                return await full(request)
            return await plan.call(**values)

        return handle


def _plan(dependant: Dependant) -> _Plan | None:
    call = dependant.call
    if call is None or not inspect.iscoroutinefunction(call):
        return None
    returns = get_typed_return_annotation(call)
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        return None
    if dependant.request_param_name is None or dependant.query_params or dependant.cookie_params:
        return None
    if any(
        name is not None
        for name in (
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
            dependant.response_param_name,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
        )
    ):
        return None
    dependencies = []
    for sub in dependant.dependencies:
        if not _plain_dependency(sub):
            return None
        assert sub.name is not None and sub.call is not None
        dependencies.append((sub.name, sub.call))
    if len(dependant.body_params) > 1:
        return None
    body = dependant.body_params[0] if dependant.body_params else None
    if body is not None:
        annotation = body.field_info.annotation
        if not (inspect.isclass(annotation) and issubclass(annotation, BaseModel)):
            return None
        if not body.field_info.is_required() or getattr(body.field_info, "embed", False):
            return None
    return _Plan(call, dependant.request_param_name, dependencies, dependant, body)


def _plain_dependency(sub: Dependant) -> bool:
    """A coroutine of the request alone, with nothing to solve beneath it."""
    return (
        sub.name is not None
        and sub.call is not None
        and inspect.iscoroutinefunction(sub.call)
        and sub.request_param_name is not None
        and not sub.dependencies
        and not (sub.path_params or sub.query_params or sub.header_params)
        and not (sub.cookie_params or sub.body_params)
        and sub.security_scopes_param_name is None
        and sub.background_tasks_param_name is None
        and sub.response_param_name is None
        and sub.http_connection_param_name is None
        and sub.websocket_param_name is None
    )


async def _values(plan: _Plan, request: Request) -> dict[str, Any] | None:
    """The endpoint's arguments, or None where FastAPI's own handler must answer."""
    body: Any = None
    if plan.body is not None:
        if request.headers.get("content-type") != "application/json":
            return None  # FastAPI parses other content types (and refuses them) itself
        try:
            received = await request.body()  # kept on the request: FastAPI reads the same
        except Exception as error:  # the client went away: FastAPI meets it, and answers
            request.body = _raising(error)  # type: ignore[method-assign]
            return None
        if not received:
            return None
        try:
            body = await request.json()  # kept on the request too
        except Exception:  # not JSON, too deep...: FastAPI parses it again, and refuses it
            return None
    values: dict[str, Any] = {plan.request_name: request}
    for name, dependency in plan.dependencies:
        values[name] = await dependency(request)  # refusals raise, as under FastAPI
    dependant = plan.dependant
    path, errors = request_params_to_args(dependant.path_params, request.path_params)
    if errors:
        return None
    headers, errors = request_params_to_args(dependant.header_params, request.headers)
    if errors:
        return None
    values.update(path)
    values.update(headers)
    if plan.body is not None:
        value, errors = plan.body.validate(body, {}, loc=("body",))
        if errors:
            return None
        values[plan.body.name] = value
    return values


def _raising(error: Exception) -> Callable[[], Coroutine[Any, Any, bytes]]:
    """``Request.body`` for a request whose body could not be read: the stream is gone, and
    FastAPI's handler, reading it again, meets the error that ended it."""

    async def body() -> bytes:
        raise error

    return body


__all__ = ["LeanRoute"]
