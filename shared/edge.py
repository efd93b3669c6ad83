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
    body: dict[str, Any] = {
        "type": TYPE_BASE + "validation",
        "title": "Invalid request",
        "status": 422,
        "detail": f"check {field}",
        "instance": scope.get("path", "").replace("\x00", "\ufffd"),
        "errors": [{"field": field, "message": message}],
    }
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 422,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
