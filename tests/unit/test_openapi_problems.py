"""Every service's OpenAPI document says what it can answer: a client generated from it
knows every problem+json answer, and /metrics is text."""

from __future__ import annotations

from typing import Any

import pytest

from shared.problems import PROBLEM_JSON
from shared.settings import ServiceSettings


def document(service: str) -> dict[str, Any]:
    module = __import__(f"services.{service}.main", fromlist=["create_app"])
    settings = ServiceSettings(
        service=service, jwt_secret="s" * 40, database_url="sqlite+aiosqlite:///:memory:"
    )
    openapi: dict[str, Any] = module.create_app(settings).openapi()
    return openapi


@pytest.mark.parametrize("service", ["voucher", "taxcredit", "fund", "oversight"])
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
