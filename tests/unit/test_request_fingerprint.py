"""A retried request is the same request across a deploy that added an optional member."""

from __future__ import annotations

import pytest
from pydantic import Field
from starlette.requests import Request

from shared.idempotency import request_fingerprint
from shared.kit.http import as_sent, path_of
from shared.kit.schemas import Body


class Before(Body):
    purpose: str


class After(Body):
    purpose: str
    cost_reference: str | None = Field(default=None, max_length=200)


def fingerprint(body: Body) -> str:
    return request_fingerprint("POST", "/v1/applications", as_sent(body))


def test_the_same_body_keeps_its_fingerprint_when_an_optional_member_is_added() -> None:
    sent = {"purpose": "patent filing"}

    assert fingerprint(After.model_validate(sent)) == fingerprint(Before.model_validate(sent))


def test_a_body_that_sends_the_new_member_is_another_request() -> None:
    plain = After.model_validate({"purpose": "patent filing"})
    naming = After.model_validate({"purpose": "patent filing", "cost_reference": "PATENT-1"})

    assert fingerprint(plain) != fingerprint(naming)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/applications/fund_1/votes",
        "/v1/applications/a?b/votes",
        "/v1/applications/a#b\\c/votes",
        "/v1/applications/%3F/votes",
        "/v1/applications/무역/votes",
    ],
)
def test_the_fingerprinted_path_is_the_one_a_request_url_gives(path: str) -> None:
    # keys recorded before path_of replaced request.url.path must still match their retries
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"a=1",
        "headers": [(b"host", b"fund.example:8003")],
        "server": ("127.0.0.1", 8003),
    }
    request = Request(scope)

    assert path_of(request) == request.url.path
