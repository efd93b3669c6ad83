"""The HTTP endpoints every programme service has, and the helpers its own endpoints use.

``POST /v1/applications`` (idempotent, group-committed), the list with cursors, one
application, its events, officers' decisions with four eyes, the firm's withdrawal;
a firm sees only its own applications (another's answer 404). A programme gives its
request bodies and how each becomes a command (:class:`ApplicationsAPI`).
"""

# Not ``from __future__ import annotations``: the routes' body types are the programme's,
# known only when the router is built, and FastAPI reads annotations as objects.

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared import jsontext
from shared.auth import CurrentPrincipal, Principal, require_role
from shared.batching import GroupCommit
from shared.contracts import Role
from shared.domain import Forbidden, NotFound
from shared.eventstore import EventContext, UnitOfWork, is_unique_violation
from shared.idempotency import (
    KEY_REQUIRED,
    StoredResponse,
    remember,
    replay,
    request_fingerprint,
    require_key,
)
from shared.kit.application import ApplicationService, CommandRequest, Step, new_id
from shared.kit.cursors import decode_cursor
from shared.kit.lean import LeanRoute
from shared.kit.schemas import Body, DecisionIn, WithdrawalIn
from shared.problems import Problem

T = TypeVar("T")

Firms = Annotated[Principal, Depends(require_role(Role.FIRM))]
Officers = Annotated[Principal, Depends(require_role(Role.OFFICER))]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # stored: no control characters (as the edge says)
        description="a unique string per request",
    ),
]
READERS = (Role.OFFICER, Role.MINISTRY, Role.AUDITOR)
"""Roles that read every application; a firm reads its own."""
ApplicationReaders = Annotated[Principal, Depends(require_role(Role.FIRM, *READERS))]
"""Who reads applications: a firm (its own) and the readers; any other role is 403, as on
the list, not the 404 of an application that is not the caller's."""


def service_in(request: Request, kind: type[T]) -> T:
    """The app's programme service, typed as ``kind``. A command route that has the request
    at hand calls this rather than depending on :func:`service_dependency`: each dependency
    is one more for FastAPI to solve on every request (about 20 µs)."""
    service = request.app.state.service
    if not isinstance(service, kind):
        raise TypeError(f"the app's service is a {type(service).__name__}, not {kind.__name__}")
    return service


def service_dependency(kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency giving the app's programme service, typed as ``kind``.

    A coroutine, as every dependency here: FastAPI runs a plain function in its thread
    pool, a thread hop on each request for an attribute read."""

    async def get(request: Request) -> T:
        return service_in(request, kind)

    return get


def service_of(request: Request) -> ApplicationService[Any]:
    """The programme service of this app (set by its composition root)."""
    service: ApplicationService[Any] = request.app.state.service
    return service


def context_of(request: Request, principal: Principal) -> EventContext:
    return EventContext(
        actor=principal.actor,
        correlation_id=request.headers.get("x-correlation-id") or str(uuid.uuid4()),
        firm_id=principal.firm_id,
    )


def visible_to(principal: Principal, document: dict[str, Any]) -> bool:
    if principal.role is Role.FIRM:
        return bool(document["firm_id"] == principal.firm_id)
    return principal.role in READERS


async def visible_document(
    service: ApplicationService[Any], principal: Principal, application_id: str
) -> dict[str, Any]:
    """The application's document, or 404 if it does not exist or is not the caller's to see."""
    document = await service.read(service.projection.document, application_id)
    if document is None or not visible_to(principal, document):
        raise NotFound(f"there is no application {application_id}")
    return document


OFFICER_NAMES = frozenset({"officer", "member", "released_by"})
"""Members that name an officer (a committee member, who released a tranche) in documents
and event payloads: a firm sees the role there, not the person."""


def as_seen_by(principal: Principal, document: Any) -> Any:
    """``document`` as ``principal`` may see it: for a firm, every officer is "officer"."""
    return _without_officers(document) if principal.role is Role.FIRM else document


def _without_officers(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: str(Role.OFFICER)
            if k in OFFICER_NAMES and isinstance(v, str)
            else _without_officers(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_without_officers(v) for v in value]
    return value


def event_as_seen_by(principal: Principal, envelope: dict[str, Any]) -> dict[str, Any]:
    """An event as ``principal`` may see it. A firm gets the officers behind it as a role
    (the actor's ``sub``, the payload's officer members) and ``redacted``, naming what was
    replaced: its ``hash`` is still the published event's, which an auditor, who sees the
    names, can check; the firm's copy cannot be checked against it."""
    if principal.role is not Role.FIRM:
        return envelope
    redacted = []
    actor = envelope.get("actor") or {}
    if actor.get("role") == str(Role.OFFICER) and actor.get("sub") != str(Role.OFFICER):
        envelope = {**envelope, "actor": {**actor, "sub": str(Role.OFFICER)}}
        redacted.append("actor.sub")
    payload = _without_officers(envelope.get("payload"))
    if payload != envelope.get("payload"):
        envelope = {**envelope, "payload": payload}
        redacted.append("payload")
    return {**envelope, "redacted": redacted} if redacted else envelope


def as_sent(body: Any) -> Any:
    """What a request body says, for its fingerprint: the members the client sent (a
    member added later with a default does not make a retried request another one)."""
    if isinstance(body, BaseModel):
        return body.model_dump(mode="json", exclude_unset=True)
    return body


def path_of(request: Request) -> str:
    """``request.url.path``, without building the whole URL (host, port, query) for it."""
    path: str = request.scope["path"]
    return path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")


class JSONText(JSONResponse):
    """A JSON answer written by :func:`shared.jsontext.dumps_bytes`: Starlette's bytes, in C."""

    def render(self, content: Any) -> bytes:
        return jsontext.dumps_bytes(content)


async def respond(
    request: Request,
    service: ApplicationService[Any],
    principal: Principal,
    key: str | None,
    body: Any,
    work: Callable[[UnitOfWork], Awaitable[StoredResponse]],
) -> JSONResponse:
    """Run ``work`` in a transaction of its own, once per Idempotency-Key: a repeat gets
    the recorded response, a reused key with another body 409."""
    fingerprint = request_fingerprint(request.method, path_of(request), as_sent(body))

    async def attempt(uow: UnitOfWork) -> StoredResponse:
        if key is not None:
            found = await replay(uow, principal.sub, key, fingerprint)
            if found is not None:
                return found
        response = await work(uow)
        if key is not None:
            await remember(uow, principal.sub, key, fingerprint, response)
        return response

    try:
        stored = await service.in_transaction(attempt)
    except Exception as error:
        if key is None or not is_unique_violation(error):
            raise
        # the same key raced us and won: answer with what it recorded
        stored = await service.in_transaction(attempt)
    request.app.state.runtime.wake_relay()
    return JSONText(as_seen_by(principal, stored.body), status_code=stored.status_code)


async def together(
    request: Request,
    commits: GroupCommit[CommandRequest, StoredResponse],
    principal: Principal,
    key: str | None,
    body: BaseModel,
    step: Step,
    status_code: int,
) -> JSONResponse:
    """Like :func:`respond`, in a transaction shared with the requests arriving meanwhile."""
    fingerprint = request_fingerprint(request.method, path_of(request), as_sent(body))
    stored = await commits(CommandRequest(principal.sub, key, fingerprint, step, status_code))
    request.app.state.runtime.wake_relay()
    return JSONText(as_seen_by(principal, stored.body), status_code=stored.status_code)


@dataclass(frozen=True, slots=True)
class ApplicationsAPI:
    """How a programme's requests become commands."""

    submit_body: type[Body]
    """The body of ``POST /v1/applications``; it has a ``firm`` (:class:`~shared.kit.schemas.FirmIn`)."""
    submission: Callable[[Any, Any], Any]
    """``(service, body) -> command``; may raise a domain error (422 naming the field)."""
    decision: Callable[[Any, Any, str], Any] | None
    """``(service, body, officer) -> command``, or an async function of the state returning
    one; None for a programme whose officers do not decide one by one (a committee votes)."""
    withdrawal: Callable[[str], Any]
    """``reason -> command``."""
    decision_body: type[Body] = DecisionIn
    id_prefix: str = "app"
    what: str = "an application"


def applications_router(api: ApplicationsAPI) -> APIRouter:
    """The application endpoints of one programme service."""
    router = APIRouter(prefix="/v1", tags=["applications"], route_class=LeanRoute)
    SubmitBody = api.submit_body
    DecisionBody = api.decision_body

    @router.post(
        "/applications",
        status_code=201,
        summary=f"Apply for {api.what}",
        openapi_extra=KEY_REQUIRED,
    )
    async def submit_application(
        body: SubmitBody,  # type: ignore[valid-type]
        request: Request,
        firm: Firms,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Apply (firms; an Idempotency-Key is required: the same key and body answer the same)."""
        key = require_key(key)
        declared = body.firm.firm_id  # type: ignore[attr-defined]
        if declared != firm.firm_id:
            raise Forbidden(
                f"a firm applies for itself: the token is firm {firm.firm_id}, "
                f"the application names {declared}",
                field="firm.firm_id",
            )
        service = service_of(request)
        command = api.submission(service, body)
        step = Step(new_id(api.id_prefix), command, context_of(request, firm))
        return await together(request, service.submissions, firm, key, body, step, 201)

    @router.get("/applications", summary="List applications")
    async def list_applications(
        request: Request,
        principal: CurrentPrincipal,
        status: Annotated[str | None, Query(max_length=40)] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        """Applications, oldest first; a firm sees only its own. Follow ``next_cursor`` for more."""
        if principal.role not in (Role.FIRM, *READERS):
            raise Problem(
                status=403,
                title="Forbidden",
                detail=f"the role {principal.role} does not see applications",
                type_="forbidden",
            )
        after = decode_cursor(cursor) if cursor else None
        service = service_of(request)
        async with service.store.engine.connect() as connection:
            items, next_cursor = await service.projection.page(
                connection,
                firm_id=principal.firm_id if principal.role is Role.FIRM else None,
                status=status,
                after=after,
                limit=limit,
            )
        return {"items": as_seen_by(principal, items), "next_cursor": next_cursor}

    @router.get("/applications/{application_id}", summary="One application")
    async def get_application(
        application_id: str, request: Request, principal: ApplicationReaders
    ) -> dict[str, Any]:
        """One application as it stands now (to a firm, its officers are "officer")."""
        document = await visible_document(service_of(request), principal, application_id)
        return dict(as_seen_by(principal, document))

    @router.get("/applications/{application_id}/events", summary="The application's events")
    async def application_events(
        application_id: str, request: Request, principal: ApplicationReaders
    ) -> list[dict[str, Any]]:
        """The application's whole hash chain, exactly as published on the service's topic;
        to a firm, its officers as a role (``redacted`` names what was replaced)."""
        service = service_of(request)
        await visible_document(service, principal, application_id)
        chain = await service.store.read_stream(application_id)
        return [event_as_seen_by(principal, e.to_json_dict()) for e in chain]

    if api.decision is not None:
        _decisions_route(router, api.decision, DecisionBody)

    @router.post("/applications/{application_id}/withdrawal", summary="Withdraw an application")
    async def withdraw_application(
        application_id: str,
        request: Request,
        firm: Firms,
        body: WithdrawalIn | None = None,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Withdraw an application before it is approved (the firm that filed it)."""
        service = service_of(request)
        await visible_document(service, firm, application_id)
        reason = body.reason if body else ""

        async def work(uow: UnitOfWork) -> StoredResponse:
            outcome = await service.execute(
                uow, application_id, api.withdrawal(reason), context_of(request, firm)
            )
            return StoredResponse(200, service.projection.resource(outcome.application))

        return await respond(request, service, firm, key, {"reason": reason}, work)

    return router


def _decisions_route(
    router: APIRouter, decision: Callable[[Any, Any, str], Any], DecisionBody: type[Body]
) -> None:
    @router.post("/applications/{application_id}/decisions", summary="Decide an application")
    async def decide_application(
        application_id: str,
        body: DecisionBody,  # type: ignore[valid-type]
        request: Request,
        officer: Officers,
        key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Approve or reject a verified application (officers; four eyes at the threshold)."""
        service = service_of(request)
        command = decision(service, body, officer.sub)
        step = Step(application_id, command, context_of(request, officer))
        return await together(request, service.decisions, officer, key, body, step, 200)


__all__ = [
    "READERS",
    "ApplicationsAPI",
    "Firms",
    "IdempotencyKey",
    "Officers",
    "applications_router",
    "context_of",
    "respond",
    "service_dependency",
    "service_in",
    "service_of",
    "together",
    "visible_document",
    "visible_to",
]
