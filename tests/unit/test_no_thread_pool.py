"""No request waits on FastAPI's thread pool: every endpoint and every dependency of every
service is a coroutine. A plain function there runs in the pool (a thread hop, a capacity
limiter of 40 threads shared by all requests) on each request; a fund vote went through it
twice before this rule."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tests.unit.apps import SERVICES, service_app


def api_routes(container: Any) -> Iterator[APIRoute]:
    for route in getattr(container, "routes", []):
        if isinstance(route, APIRoute):
            yield route
        else:  # an included router (FastAPI 0.165 keeps it as it was given)
            yield from api_routes(
                getattr(route, "original_router", None) or getattr(route, "router", None)
            )


def plain_functions(dependant: Dependant) -> Iterator[str]:
    call = dependant.call
    if call is not None:
        function = call if inspect.isroutine(call) else type(call).__call__
        if not inspect.iscoroutinefunction(function):
            yield getattr(call, "__qualname__", repr(call))
    for sub in dependant.dependencies:
        yield from plain_functions(sub)


@pytest.mark.parametrize("service", SERVICES)
def test_every_endpoint_and_dependency_is_a_coroutine(service: str) -> None:
    routes = list(api_routes(service_app(service).router))
    assert len(routes) > 5  # the walk reached the included routers
    found = {
        f"{sorted(route.methods or ())} {route.path}: {name}"
        for route in routes
        for name in plain_functions(route.dependant)
    }
    assert not found, sorted(found)
