"""Oversight's HTTP surface: the ministry's page (public shell, no data), the summary, the
live stream of envelopes (SSE), and the dashboard figures the page draws."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from services.oversight.adapters import queries
from services.oversight.adapters.stream import StreamFilter, read_after, sse_event
from services.oversight.domain.standing import EVENT_TYPES
from services.oversight.service_layer import Oversight
from shared.auth import BEARER, InvalidToken, Principal, TokenVerifier, require_role, unauthorized
from shared.contracts import Role
from shared.domain import Forbidden

router = APIRouter(tags=["oversight"])

Readers = Annotated[Principal, Depends(require_role(Role.MINISTRY, Role.AUDITOR))]
HEARTBEAT_SECONDS = 15.0
EVENT_NUMBER = r"^[0-9]{1,18}$"
"""A Last-Event-ID: a number this stream sent (ASCII digits; below 2**63)."""


async def _oversight(request: Request) -> Oversight:  # not a thread pool hop per request
    found: Oversight = request.app.state.oversight
    return found


The = Annotated[Oversight, Depends(_oversight)]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    """The ministry's live page: a shell with no data; it asks for a token once."""
    shell = resources.files("services.oversight.entrypoints").joinpath("static/index.html")
    return HTMLResponse(shell.read_text(encoding="utf-8"))


@router.get("/v1/summary", summary="Every programme's figures, lag, checkpoints, conflicts")
async def summary(oversight: The, principal: Readers) -> dict[str, Any]:
    """Applications by status and money per programme; consumer lag per service and topic;
    the last verified checkpoint of each service and any finding; how many support conflicts
    were detected; applications stuck in one status longer than the threshold."""
    return await oversight.summary()


@router.get("/v1/dashboard", summary="What the page draws: the summary and more")
async def dashboard(oversight: The, principal: Readers) -> dict[str, Any]:
    """The summary, applications per cluster, status changes and time in each stage per
    minute, the latest support conflicts, and how many events arrived from each service."""
    found = await oversight.summary()
    async with oversight.engine.connect() as connection:
        now = oversight.clock.now()
        found["clusters"] = await queries.clusters(connection)
        found["series"] = await queries.series(connection, now)
        _, latest = await queries.conflicts(connection)
        found["conflict_events"] = [json.loads(e) for e in latest]
        found["received"] = await queries.events_received(connection)
    found["stuck_after_seconds"] = oversight.stuck_after.total_seconds()
    found["event_types"] = list(EVENT_TYPES)
    return found


async def stream_reader(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None,
    access_token: Annotated[
        str | None,
        Query(max_length=4096, description="the bearer token, for EventSource clients"),
    ] = None,
) -> Principal:
    """The caller of the stream: a bearer token in ``Authorization``, or ``access_token``
    in the query (EventSource cannot send headers)."""
    token = (bearer.credentials.strip() if bearer is not None else None) or access_token
    if not token:
        raise unauthorized("send a bearer token: Authorization: Bearer <token> or ?access_token=")
    verifier: TokenVerifier = request.app.state.verifier
    try:
        principal = verifier.verify(token)
    except InvalidToken as error:
        raise unauthorized(f"the token was refused: {error}") from error
    if principal.role not in (Role.MINISTRY, Role.AUDITOR):
        raise Forbidden(
            f"the stream needs the role auditor or ministry; the token has {principal.role}"
        )
    return principal


@router.get(
    "/v1/stream",
    summary="Every envelope, live (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    oversight: The,
    principal: Annotated[Principal, Depends(stream_reader)],
    service: Annotated[Literal["voucher", "taxcredit", "fund"] | None, Query()] = None,
    type: Annotated[str | None, Query(max_length=100, description="an event type")] = None,
    firm_id: Annotated[str | None, Query(max_length=64)] = None,
    from_: Annotated[
        int | None,
        Query(alias="from", ge=0, le=2**63 - 1, description="0: from the beginning"),
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", pattern=EVENT_NUMBER)
    ] = None,
) -> StreamingResponse:
    """``data:`` is the exact envelope, ``event:`` its type, ``id:`` oversight's own number
    for it, so one ``Last-Event-ID`` resumes across every service. With no ``Last-Event-ID``
    the stream starts live; ``?from=N`` starts at number N (0: the beginning). A comment
    line keeps the connection alive after 15 s without events."""
    if last_event_id is not None:
        after = int(last_event_id)
    elif from_ is not None:
        after = max(from_ - 1, 0)
    else:
        after = await oversight.watermark.advance()
    where = StreamFilter(service, type, firm_id)
    return StreamingResponse(
        _events(request, oversight, after, where),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    request: Request, oversight: Oversight, after: int, where: StreamFilter
) -> AsyncIterator[str]:
    yield ": oversight stream\n\n"
    quiet_since = time.monotonic()
    while not oversight.closing.is_set():
        upto = await oversight.watermark.advance()
        rows = await read_after(oversight.streams_engine, after, upto, where)
        for seq, type_, envelope in rows:
            yield sse_event(seq, type_, envelope)
        if rows:
            after = rows[-1][0]
            quiet_since = time.monotonic()
            continue
        if upto > after:
            after = upto  # none of these passed the filter
        if await request.is_disconnected():
            return
        if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
            yield ": heartbeat\n\n"
            quiet_since = time.monotonic()
        await oversight.bell.wait(1.0)
