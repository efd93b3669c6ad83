"""The kit's command routes answer as FastAPI's own handler would, whatever arrives.

:class:`~shared.kit.lean.LeanRoute` takes the usual request in a straight line and hands
everything else to FastAPI. Each request here goes to two copies of one command route,
one a plain ``APIRoute``, and both must answer alike: status, content type and body.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from shared.auth import HS256Verifier
from shared.contracts import Role
from shared.kit import http as kit
from shared.kit.lean import LeanRoute
from shared.problems import install_problem_handlers

SECRET = "s" * 40
TOKENS = HS256Verifier(SECRET)
OFFICER = {"Authorization": f"Bearer {TOKENS.issue(sub='officer-kim', role=Role.OFFICER)}"}
FIRM = {
    "Authorization": f"Bearer {TOKENS.issue(sub='ceo', role=Role.FIRM, firm_id='123-45-67890')}"
}
JSON = {"Content-Type": "application/json"}


class Evidence(BaseModel):
    milestone_evidence: Annotated[str, Field(min_length=1, max_length=20)]
    pages: Annotated[int, Field(ge=1)] = 1


def app_with(route_class: type[APIRoute]) -> FastAPI:
    app = FastAPI()
    app.state.verifier = TOKENS
    install_problem_handlers(app)
    router = APIRouter(prefix="/v1", route_class=route_class)

    @router.post("/applications/{application_id}/tranches/{number}/release")
    async def release(
        application_id: str,
        number: Annotated[int, Path(ge=1, le=1000)],
        body: Evidence,
        request: Request,
        officer: kit.Officers,
        key: kit.IdempotencyKey = None,
    ) -> JSONResponse:
        return JSONResponse(
            {
                "application_id": application_id,
                "number": number,
                "evidence": body.model_dump(),
                "officer": officer.sub,
                "key": key,
                "path": request.url.path,
            }
        )

    app.include_router(router)
    return app


def release_path(application_id: str = "fund_1", number: str = "2") -> str:
    return f"/v1/applications/{application_id}/tranches/{number}/release"


GOOD = json.dumps({"milestone_evidence": "site visit"}).encode()

REQUESTS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "usual": (release_path(), GOOD, {**OFFICER, **JSON, "Idempotency-Key": "k-1"}),
    "without a key": (release_path(), GOOD, {**OFFICER, **JSON}),
    "a default taken": (
        release_path(),
        b'{"milestone_evidence": "x", "pages": 3}',
        {**OFFICER, **JSON},
    ),
    "an unknown member": (
        release_path(),
        b'{"milestone_evidence": "x", "extra": 1}',
        {**OFFICER, **JSON},
    ),
    "JSON that does not parse": (release_path(), b'{"milestone_evidence": ', {**OFFICER, **JSON}),
    "bytes that are not UTF-8": (
        release_path(),
        b'{"milestone_evidence": "\xff"}',
        {**OFFICER, **JSON},
    ),
    "NaN": (release_path(), b'{"milestone_evidence": "x", "pages": NaN}', {**OFFICER, **JSON}),
    "a list": (release_path(), b"[1, 2]", {**OFFICER, **JSON}),
    "nested too deep to parse": (
        release_path(),
        b"[" * 100_000 + b"]" * 100_000,
        {**OFFICER, **JSON},
    ),
    "null": (release_path(), b"null", {**OFFICER, **JSON}),
    "an empty body": (release_path(), b"", {**OFFICER, **JSON}),
    "a member missing": (release_path(), b"{}", {**OFFICER, **JSON}),
    "a member too long": (
        release_path(),
        b'{"milestone_evidence": "' + b"x" * 21 + b'"}',
        {**OFFICER, **JSON},
    ),
    "a member of the wrong type": (
        release_path(),
        b'{"milestone_evidence": 7}',
        {**OFFICER, **JSON},
    ),
    "text/plain": (release_path(), GOOD, {**OFFICER, "Content-Type": "text/plain"}),
    "no content type": (release_path(), GOOD, OFFICER),
    "JSON with a charset": (
        release_path(),
        GOOD,
        {**OFFICER, "Content-Type": "application/json; charset=utf-8"},
    ),
    "problem+json": (
        release_path(),
        GOOD,
        {**OFFICER, "Content-Type": "application/merge-patch+json"},
    ),
    "no token": (release_path(), GOOD, JSON),
    "a token that is not one": (release_path(), GOOD, {**JSON, "Authorization": "Bearer nonsense"}),
    "a firm's token": (release_path(), GOOD, {**FIRM, **JSON}),
    "no token and a bad body": (release_path(), b"{}", JSON),
    "a key too long": (release_path(), GOOD, {**OFFICER, **JSON, "Idempotency-Key": "k" * 201}),
    "a key too long and a bad body": (
        release_path(),
        b"{}",
        {**OFFICER, **JSON, "Idempotency-Key": "k" * 201},
    ),
    "tranche 0": (release_path(number="0"), GOOD, {**OFFICER, **JSON}),
    "tranche x": (release_path(number="x"), GOOD, {**OFFICER, **JSON}),
    "tranche 0 and a bad body": (release_path(number="0"), b"[]", {**OFFICER, **JSON}),
}


async def answer(
    app: FastAPI, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, content=body, headers=headers)
    return response.status_code, response.headers.get("content-type", ""), response.json()


@pytest.mark.parametrize("case", REQUESTS)
async def test_answers_as_fastapi_does(case: str) -> None:
    path, body, headers = REQUESTS[case]
    lean = await answer(app_with(LeanRoute), path, body, headers)
    plain = await answer(app_with(APIRoute), path, body, headers)
    assert lean == plain


async def gone_midway(app: FastAPI) -> list[dict[str, Any]]:
    """What the app sends when the client goes away before the body is all there."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": release_path(),
        "raw_path": release_path().encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {**OFFICER, **JSON}.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    messages = iter(
        [
            {"type": "http.request", "body": GOOD[:5], "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return [{k: v for k, v in m.items() if k != "headers"} for m in sent]


async def test_a_client_gone_before_its_body_is_answered_as_fastapi_does() -> None:
    lean, plain = await gone_midway(app_with(LeanRoute)), await gone_midway(app_with(APIRoute))
    assert lean == plain
    assert lean[0]["status"] == 400  # FastAPI's "There was an error parsing the body"


async def test_the_usual_request_is_answered_without_fastapi_solving_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The straight line is taken: with FastAPI's solver broken, the usual request is still
    answered, and one that fails validation reaches the solver (and the 500 it now gives)."""
    app = app_with(LeanRoute)

    async def broken(**_: Any) -> Any:
        raise RuntimeError("FastAPI's solver was asked")

    monkeypatch.setattr("fastapi.routing.solve_dependencies", broken)
    status, _, body = await answer(app, *REQUESTS["usual"])
    assert (status, body["number"], body["officer"], body["key"]) == (200, 2, "officer-kim", "k-1")
    with pytest.raises(RuntimeError, match="solver was asked"):
        await answer(app, *REQUESTS["a member missing"])
