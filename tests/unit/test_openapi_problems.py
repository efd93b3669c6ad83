"""Every service's OpenAPI document says what it can answer: a client generated from it
knows every problem+json answer, and /metrics is text."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Match

from shared.problems import PROBLEM_JSON
from tests.unit.apps import SERVICES, service_app


def document(service: str) -> dict[str, Any]:
    return service_app(service).openapi()


@pytest.mark.parametrize("service", SERVICES)
def test_every_problem_answer_is_documented_as_problem_json(service: str) -> None:
    paths = document(service)["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            answers = operation["responses"]
            for code in ("400", "413", "422", "503"):
                assert code in answers, (method, path, code)
            if operation.get("security"):
                assert {"401", "403"} <= set(answers), (method, path)
            if "{" in path:
                assert "404" in answers, (method, path)
            if method != "get":
                assert "409" in answers, (method, path)
            for code, answer in answers.items():
                if code.startswith(("4", "5")) and path != "/readyz":
                    assert list(answer["content"]) == [PROBLEM_JSON], (method, path, code)


def test_routes_behind_a_token_say_so_and_metrics_are_text() -> None:
    doc = document("voucher")
    paths = doc["paths"]
    assert paths["/v1/applications"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_what_a_request_may_hold_is_documented_as_it_is_checked() -> None:
    voucher = document("voucher")
    submit = voucher["paths"]["/v1/applications"]["post"]
    (key,) = [p for p in submit["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["required"] is True  # a missing one is 400
    assert key["schema"]["minLength"] == 1 and key["schema"]["maxLength"] == 200
    for path, operations in voucher["paths"].items():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):  # a query has no null
                assert "anyOf" not in parameter["schema"], (path, parameter["name"])
    amount = voucher["components"]["schemas"]["RedemptionIn"]["properties"]["amount"]
    assert amount["type"] == "integer" and amount["exclusiveMinimum"] == 0
    rate = document("taxcredit")["components"]["schemas"]["SingleRate"]["properties"]["rate"]
    assert rate["type"] == "string" and "pattern" in rate  # never a number: floats are refused


async def test_a_405_allows_every_method_of_the_path_and_a_repeated_parameter_is_refused() -> None:
    transport = httpx.ASGITransport(app=service_app("voucher"))
    async with httpx.AsyncClient(transport=transport, base_url="http://voucher") as client:
        refused = await client.put("/v1/applications")
        assert refused.status_code == 405
        assert refused.headers["allow"] == "GET, POST"
        twice = await client.get("/healthz?after=1&after=2")
    assert twice.status_code == 422
    assert twice.headers["content-type"] == PROBLEM_JSON
    assert [e["field"] for e in twice.json()["errors"]] == ["query.after"]


@pytest.mark.parametrize("service", SERVICES)
def test_each_route_is_the_first_to_match_its_own_path(service: str) -> None:
    # a service's own routes are matched before the audit log's and the probes': none of
    # them may take a request meant for another route
    routes = list(iter_route_contexts(service_app(service).routes))
    checked = 0
    for route in routes:
        if not route.path_format:
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path_format)
        for method in route.methods or ():
            scope = {"type": "http", "path": path, "method": method, "root_path": ""}
            first = next(r for r in routes if r.matches(scope)[0] is Match.FULL)
            assert first.path_format == route.path_format, (method, path)
            checked += 1
    assert checked >= 10


def test_the_documented_not_blank_pattern_is_exactly_what_stripping_keeps() -> None:
    """A one-character string matches the pattern the schemas publish if and only if a
    request body's stripping leaves it: U+0085 is stripped (ECMAScript's ``\\S`` lets it
    through), U+FEFF and U+001D are kept."""
    import re
    import sys

    from shared.kit.schemas import NOT_BLANK, Body

    class One(Body):
        text: str

    assert re.fullmatch(NOT_BLANK, "\u0085") is None
    assert re.fullmatch(NOT_BLANK, "\ufeff") is not None
    assert re.fullmatch(NOT_BLANK, "\u001d") is not None
    for code in range(1, sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue  # not a character a JSON body can carry alone
        character = chr(code)
        kept = One(text=character).text != ""
        assert (re.fullmatch(NOT_BLANK, character) is not None) == kept, hex(code)
