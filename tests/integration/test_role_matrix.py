"""Every route of every service × every caller gets exactly the status the role rules give.

The routes come from the apps themselves, so a route added tomorrow is in the matrix
tomorrow; ``RULES`` says who may call each one, and a route it does not mention fails
:func:`test_every_route_has_a_rule` (nobody adds an unguarded route silently).

Callers: a valid token of each role (meant for the service: ``aud`` is its name), and
refused ones: none, expired, meant for another service, signed with another secret,
not a token at all, and one claiming the ``system`` role (services act as it; no token
may). A refused token is 401, a role the rule does not admit 403, both problem+json; an
admitted role gets past both, to what the dummy request earns (``Rule.answer``: 404 for
an application that does not exist, 422 for an empty body, 200 for a list).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastapi.routing
import jwt
import pytest
from fastapi import FastAPI
from starlette.routing import Mount

from shared.auth import AUDIENCES, ISSUER, HS256Verifier
from shared.contracts import Role
from shared.problems import PROBLEM_JSON
from shared.settings import ServiceSettings
from tests.integration.harness import FIRM_ID, SECRET, running, service_settings

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

SERVICES = ("voucher", "taxcredit", "fund", "oversight")


# --- the rules ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    roles: frozenset[Role] | None
    """The roles admitted; None: public, no token needed (and any token ignored)."""
    answer: int | None
    """What an admitted caller gets for the dummy request, where that is fixed; None: any
    answer but 401, 403 or 500."""


def public(answer: int | None = 200) -> Rule:
    return Rule(None, answer)


def only(*roles: Role, answer: int | None) -> Rule:
    return Rule(frozenset(roles), answer)


FIRM, PROVIDER, OFFICER, MINISTRY, AUDITOR = (
    Role.FIRM,
    Role.PROVIDER,
    Role.OFFICER,
    Role.MINISTRY,
    Role.AUDITOR,
)
EVERY_ROLE = (FIRM, PROVIDER, OFFICER, MINISTRY, AUDITOR)
"""Every role a token may carry (never ``system``)."""
APPLICATION_READERS = (FIRM, OFFICER, MINISTRY, AUDITOR)
"""A firm reads its own applications; officers, ministries and auditors all of them."""

OPERATIONS = {
    "GET /healthz": public(200),
    "GET /readyz": public(None),  # 503 while the broker is away: readiness, not auth
    "GET /metrics": public(200),
    "GET /openapi.json": public(200),
    "GET /docs": public(200),
    "GET /docs/oauth2-redirect": public(200),
    "GET /redoc": public(200),
}
PROGRAMME_OPERATIONS = {
    **OPERATIONS,
    "GET /asyncapi.json": public(200),
    "GET /v1/support-policy": public(200),
    # the audit surface: keys, checkpoints and proofs reveal hashes only; events are read
    # by auditors and ministries
    "GET /v1/events": only(AUDITOR, MINISTRY, answer=200),
    "GET /v1/keys": public(200),
    "GET /v1/checkpoints": public(200),
    "GET /v1/checkpoints/latest": public(None),  # 404 until a checkpoint is sealed
    "GET /v1/checkpoints/{tree_size}": public(None),
    "GET /v1/proofs/inclusion": public(422),  # sent without its index and tree_size
    "GET /v1/proofs/consistency": public(422),
}
APPLICATIONS = {
    "POST /v1/applications": only(FIRM, answer=422),
    "GET /v1/applications": only(*APPLICATION_READERS, answer=200),
    "GET /v1/applications/{application_id}": only(*APPLICATION_READERS, answer=404),
    "GET /v1/applications/{application_id}/events": only(*APPLICATION_READERS, answer=404),
    "POST /v1/applications/{application_id}/withdrawal": only(FIRM, answer=404),
}
DECISIONS = {
    "POST /v1/applications/{application_id}/decisions": only(OFFICER, answer=422),
}

RULES: dict[str, dict[str, Rule]] = {
    "voucher": {
        **PROGRAMME_OPERATIONS,
        **APPLICATIONS,
        **DECISIONS,
        "GET /v1/programmes": only(*EVERY_ROLE, answer=200),
        "GET /v1/providers": only(*EVERY_ROLE, answer=200),
        "POST /v1/providers": only(OFFICER, answer=422),
        "POST /v1/vouchers/{voucher_id}/redemptions": only(PROVIDER, answer=422),
        # a provider sees its own redemptions, a firm those of its vouchers
        "GET /v1/vouchers/{voucher_id}/redemptions": only(*EVERY_ROLE, answer=404),
        "POST /v1/vouchers/{voucher_id}/redemptions/{redemption_id}/retry": only(
            OFFICER, answer=422
        ),
        "POST /v1/vouchers/{voucher_id}/redemptions/{redemption_id}/cancellation": only(
            OFFICER, answer=422
        ),
    },
    "taxcredit": {
        **PROGRAMME_OPERATIONS,
        **APPLICATIONS,
        **DECISIONS,
        "GET /v1/rate-tables": only(*EVERY_ROLE, answer=200),
        "POST /v1/rate-tables": only(MINISTRY, answer=422),
        "GET /v1/technologies": only(*EVERY_ROLE, answer=200),
        "GET /v1/certificates/{number}": only(*EVERY_ROLE, answer=404),
        "GET /v1/certificates/{number}.pdf": only(*EVERY_ROLE, answer=404),
        "POST /v1/applications/{application_id}/clawback": only(OFFICER, answer=422),
    },
    "fund": {
        **PROGRAMME_OPERATIONS,
        **APPLICATIONS,  # no decisions: a committee votes
        "GET /v1/funds": only(*EVERY_ROLE, answer=200),
        "POST /v1/applications/{application_id}/votes": only(OFFICER, answer=422),
        "POST /v1/applications/{application_id}/tranches/{number}/release": only(
            OFFICER, answer=422
        ),
        "POST /v1/applications/{application_id}/cancellation": only(OFFICER, answer=422),
    },
    "oversight": {
        **OPERATIONS,
        "GET /": public(200),  # the page's shell: no data, it asks for a token
        "GET /static/{path}": public(200),
        "GET /v1/summary": only(MINISTRY, AUDITOR, answer=200),
        "GET /v1/dashboard": only(MINISTRY, AUDITOR, answer=200),
        "GET /v1/stream": only(MINISTRY, AUDITOR, answer=200),
    },
}

DUMMIES = {
    "application_id": "app-0000000000",
    "voucher_id": "vch-0000000000",
    "redemption_id": "red-0000000000",
    "number": "1",
    "tree_size": "1",
    "path": "index.html",
}
"""What a path parameter is filled with; one not named here is "1"."""


# --- the routes, from the apps -----------------------------------------------------------


def make_app(service: str, settings: ServiceSettings) -> FastAPI:
    module = __import__(f"services.{service}.main", fromlist=["create_app"])
    app: FastAPI = module.create_app(settings)
    return app


def routes_of(app: FastAPI) -> Iterator[tuple[str, str]]:
    """``(method, path template)`` of every route the app answers (HEAD is GET's twin)."""
    flat: Callable[[Any], Any] = getattr(fastapi.routing, "iter_route_contexts", list)
    for route in flat(app.routes):
        original = getattr(route, "original_route", route)
        if isinstance(original, Mount):
            yield "GET", f"{original.path}/{{path}}"
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                yield method, route.path


def routes(service: str) -> list[tuple[str, str]]:
    settings = ServiceSettings(
        service=service, jwt_secret=SECRET, database_url="sqlite+aiosqlite:///:memory:"
    )
    return list(routes_of(make_app(service, settings)))


ROUTES = {service: routes(service) for service in SERVICES}


def filled(template: str) -> str:
    return re.sub(r"{(\w+)(?::\w+)?}", lambda m: DUMMIES.get(m.group(1), "1"), template)


# --- the callers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role | None = None
    """The role of a valid token; None for a caller whose token must be refused."""

    def __str__(self) -> str:
        return self.name


ROLE_CALLERS = [Caller(str(role), role) for role in Role if role is not Role.SYSTEM]
REFUSED = [
    Caller("no-token"),
    Caller("expired"),
    Caller("other-audience"),
    Caller("other-secret"),
    Caller("garbage"),
    Caller("system-role"),
]
CALLERS = [*ROLE_CALLERS, *REFUSED]
OTHER_SECRET = HS256Verifier("another-secret-" + "y" * 32)


def token_claims(role: Role) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": f"{role}-matrix", "role": role}
    if role is Role.FIRM:
        claims["firm_id"] = FIRM_ID
    if role is Role.PROVIDER:
        claims["provider_id"] = "prov-hanbit-law"
    return claims


def authorization(caller: Caller, service: str, rule: Rule) -> dict[str, str]:
    """The Authorization header ``caller`` sends. A refused token carries a role the route
    admits, so that its 401 is the token's doing, not the role's."""
    if caller.name == "no-token":
        return {}
    if caller.name == "garbage":
        return {"Authorization": "Bearer not-a-token"}
    mine = HS256Verifier(SECRET)
    if caller.name == "system-role":  # signed right, but no token may name the system role
        now = datetime.now(UTC)
        system = {
            "sub": "matrix-system",
            "role": "system",
            "iss": ISSUER,
            "aud": service,
            "iat": now,
            "exp": now + timedelta(hours=1),
        }
        return {"Authorization": f"Bearer {jwt.encode(system, SECRET, algorithm='HS256')}"}
    role = caller.role or next(r for r in Role if rule.roles is None or r in rule.roles)
    claims = token_claims(role)
    if caller.name == "expired":
        token = mine.issue(
            **claims,
            audience=service,
            now=datetime.now(UTC) - timedelta(hours=2),
            ttl=timedelta(hours=1),
        )
    elif caller.name == "other-audience":
        token = mine.issue(**claims, audience=next(a for a in AUDIENCES if a != service))
    elif caller.name == "other-secret":
        token = OTHER_SECRET.issue(**claims, audience=service)
    else:
        token = mine.issue(**claims, audience=service)
    return {"Authorization": f"Bearer {token}"}


# --- one request, straight to the app ----------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


async def ask(app: FastAPI, method: str, path: str, headers: dict[str, str]) -> Answer:
    """The app's answer to one request. Straight ASGI rather than httpx's transport, which
    waits for the end of a body: an event stream has none, so its answer is its status,
    and the client hangs up once it has it."""
    body = b"{}" if method != "GET" else b""
    sent = False
    hang_up = asyncio.Event()
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            if answer_headers(message).get("content-type", "").startswith("text/event-stream"):
                hang_up.set()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                hang_up.set()

    sending = {**{k.lower(): v for k, v in headers.items()}, "host": "matrix"}
    if body:
        sending |= {"content-type": "application/json", "content-length": str(len(body))}
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in sending.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("matrix", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=20)
    return Answer(start["status"], answer_headers(start), b"".join(chunks))


def answer_headers(start: Mapping[str, Any]) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}


# --- the apps, one per service, shared by its cases ---------------------------------------


@pytest.fixture(scope="module")
async def app_of(
    request: pytest.FixtureRequest,
    postgres_databases: Callable[[], Awaitable[str]],
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FastAPI]:
    """The running app of the service ``request.param`` names, on a PostgreSQL database."""
    service: str = request.param
    state_dir: Path = tmp_path_factory.mktemp(f"matrix-{service}")
    prefix = f"matrix.{uuid.uuid4().hex[:8]}."
    settings = service_settings(
        service, await postgres_databases(), kafka_bootstrap, prefix, state_dir
    )
    async with running(lambda s, clock: make_app(service, s), settings) as harness:
        yield harness.app


@dataclass(frozen=True)
class Case:
    """One request. Its service is part of it: pytest orders the cases by their module-scoped
    parameters, and the same request to two services would otherwise interleave them,
    starting an app per case."""

    service: str
    method: str
    template: str
    caller: Caller


def cases() -> Iterator[Any]:
    for service in SERVICES:
        for method, template in ROUTES[service]:
            for caller in CALLERS:
                yield pytest.param(
                    service,
                    Case(service, method, template, caller),
                    id=f"{service} {method} {template} as {caller}",
                )


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_every_route_has_a_rule(service: str) -> None:
    found = {f"{method} {template}" for method, template in ROUTES[service]}
    assert found, f"no routes found in {service}'s app: is the enumeration broken?"
    unruled = sorted(found - RULES[service].keys())
    assert not unruled, f"{service}: say in RULES who may call {unruled}"
    gone = sorted(RULES[service].keys() - found)
    assert not gone, f"{service}: RULES names routes the app does not have: {gone}"


@pytest.mark.parametrize(
    ("app_of", "case"),
    list(cases()),
    indirect=["app_of"],
    scope="module",  # one app per service, not one per case
)
async def test_the_caller_gets_what_the_rules_give(app_of: FastAPI, case: Case) -> None:
    service, method, template, caller = case.service, case.method, case.template, case.caller
    assert app_of.state.runtime.settings.service == service
    rule = RULES[service].get(f"{method} {template}")
    if rule is None:
        pytest.fail(f"no rule for {method} {template}: see test_every_route_has_a_rule")
    path = filled(template)
    answer = await ask(app_of, method, path, authorization(caller, service, rule))
    said = f"{method} {path} as {caller}: {answer.status} {answer.body[:300]!r}"

    if rule.roles is not None and caller.role is None:
        assert answer.status == 401, said
        assert answer.headers["content-type"] == PROBLEM_JSON, said
        assert answer.problem()["status"] == 401, said
        assert answer.headers.get("www-authenticate") == "Bearer", said
    elif rule.roles is not None and caller.role not in rule.roles:
        assert answer.status == 403, said
        assert answer.headers["content-type"] == PROBLEM_JSON, said
        assert answer.problem()["status"] == 403, said
    elif rule.answer is not None:
        assert answer.status == rule.answer, said
    else:
        assert answer.status not in (401, 403, 500), said
