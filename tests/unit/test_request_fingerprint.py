"""A retried request is the same request across a deploy that added an optional member."""

from __future__ import annotations

from pydantic import Field

from shared.idempotency import request_fingerprint
from shared.kit.http import as_sent
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
