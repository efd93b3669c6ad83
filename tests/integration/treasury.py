"""A treasury over HTTP for the services that pay through one: a real local server that pays
each Idempotency-Key once, and fails, times out after paying or goes down as a test tells it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.settings import ServiceSettings


@dataclass
class Treasury:
    """A treasury that pays each Idempotency-Key once, and misbehaves as told."""

    failing: int = 0
    """The next so many payment requests answer 500 (nothing paid)."""
    hanging: int = 0
    """The next so many pay, then answer only after the client gave up."""
    down: bool = False
    """Every payment request answers 503 until this is False again."""
    lookups_down: bool = False
    """Every question whether a payout was made answers 503 until this is False again."""
    paid: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0

    async def pay(self, request: Request) -> JSONResponse:
        self.requests += 1
        key = request.headers["Idempotency-Key"]
        body = await request.json()
        assert body["payout_id"] == key
        if self.down:
            return JSONResponse({"error": "maintenance"}, status_code=503)
        if self.failing:
            self.failing -= 1
            return JSONResponse({"error": "try later"}, status_code=500)
        first = self.paid.setdefault(key, {**body, "reference": f"TR-{len(self.paid) + 1}"})
        if self.hanging:
            self.hanging -= 1
            await asyncio.sleep(2)  # paid, but the answer comes too late
        return JSONResponse({"reference": first["reference"]}, status_code=201)

    async def find(self, request: Request) -> JSONResponse:
        if self.lookups_down:
            return JSONResponse({"error": "maintenance"}, status_code=503)
        found = self.paid.get(request.path_params["payout_id"])
        if found is None:
            return JSONResponse({"error": "no such payout"}, status_code=404)
        return JSONResponse({"reference": found["reference"]})


@contextlib.asynccontextmanager
async def serving(treasury: Treasury) -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/payouts", treasury.pay, methods=["POST"]),
            Route("/payouts/{payout_id}", treasury.find, methods=["GET"]),
        ]
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # up within ten seconds
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/payouts"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def treasury() -> AsyncIterator[tuple[Treasury, str]]:
    fake = Treasury()
    async with serving(fake) as url:
        yield fake, url


def paid_by(settings: ServiceSettings, url: str, **more: Any) -> ServiceSettings:
    """``settings`` with the treasury at ``url`` paying, quick to give up on an answer and
    to try again (and ``more``)."""
    update = {
        "treasury_url": url,
        "treasury_timeout_seconds": 0.5,
        "payout_first_backoff_seconds": 0.05,
        **more,
    }
    return settings.model_copy(update=update)
