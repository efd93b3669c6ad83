"""What every request must be before any route sees it.

PostgreSQL refuses what SQLite takes (a NUL character in text, a value longer than
its column), so the edge refuses it first, the same on both backends: a 422 problem
naming the header or the part of the address at fault. Bodies are checked by their
schemas (:class:`shared.kit.schemas.Body`).

Every query parameter of these APIs takes one value: one given twice is refused too,
rather than the last one silently winning (a proxy or a log may have read the first).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problems import PROBLEM_JSON, TYPE_BASE

HEADER_LIMITS = {
    b"x-correlation-id": ("X-Correlation-Id", 64),
    b"idempotency-key": ("Idempotency-Key", 200),
}
"""Headers whose values are stored, and the most characters each may have."""


def _first_fault(scope: Scope) -> tuple[str, str] | None:
    if "\x00" in scope.get("path", ""):
        return "path", "must not contain the NUL character"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query.lower():
        return "query", "must not contain the NUL character"
    seen: set[str] = set()
    for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return f"query.{name}", "given more than once: a parameter here takes one value"
        seen.add(name)
    for name, value in scope.get("headers", ()):
        limit = HEADER_LIMITS.get(name.lower())
        if limit is None:
            continue
        label, most = limit
        text = value.decode("latin-1")
        if len(text) > most:
            return f"header.{label}", f"at most {most} characters"
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            return f"header.{label}", "must not contain control characters"
    return None


class EdgeGuard:
    """ASGI middleware: refuses requests whose address or stored headers the database cannot take."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            fault = _first_fault(scope)
            if fault is not None:
                await _refuse(scope, send, *fault)
                return
        await self.app(scope, receive, send)


async def _refuse(scope: Scope, send: Send, field: str, message: str) -> None:
    await send_problem(
        send,
        {
            "type": TYPE_BASE + "validation",
            "title": "Invalid request",
            "status": 422,
            "detail": f"check {field}",
            "instance": _instance(scope),
            "errors": [{"field": field, "message": message}],
        },
    )


def _instance(scope: Scope) -> str:
    return str(scope.get("path", "")).replace("\x00", "\ufffd")


async def send_problem(
    send: Send, body: dict[str, Any], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Answer with ``body`` as problem+json, before any route (ASGI, no framework)."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": body["status"],
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


UNSHED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/stream"})
"""Never refused for load: the probes and scrapes that must see an overloaded process, and
oversight's event stream (open for as long as a ministry watches: it would hold a slot)."""


@dataclass
class Load:
    """What a process's :class:`LoadShedder` counts (read by its ``/metrics``)."""

    in_progress: int = 0
    refused_total: int = 0


class LoadShedder:
    """ASGI middleware: beyond ``limit`` requests in progress, a new one is refused at once
    with 503 and ``Retry-After`` rather than queued behind the others for the database's
    connections. A saturated service then answers quickly either way, and clients (and
    load balancers) retry elsewhere or later, instead of waiting minutes."""

    def __init__(
        self, app: ASGIApp, limit: int, load: Load | None = None, retry_after_seconds: int = 1
    ) -> None:
        self.app = app
        self.limit = limit
        self.load = load or Load()
        self.retry_after = str(retry_after_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limit <= 0 or scope.get("path") in UNSHED_PATHS:
            await self.app(scope, receive, send)
            return
        load = self.load
        if load.in_progress >= self.limit:
            load.refused_total += 1
            await self._refuse(scope, send)
            return
        load.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            load.in_progress -= 1

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_problem(
            send,
            {
                "type": TYPE_BASE + "overloaded",
                "title": "Service overloaded",
                "status": 503,
                "detail": f"{self.limit} requests are in progress here; try again after "
                f"{self.retry_after} s",
                "instance": _instance(scope),
            },
            headers=((b"retry-after", self.retry_after.encode()),),
        )
