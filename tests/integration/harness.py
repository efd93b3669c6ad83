"""A service app in-process, on a fresh database and the real broker, with a clock the test controls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.auth import HS256Verifier
from shared.clock import FixedClock
from shared.contracts import Role
from shared.settings import ServiceSettings

SECRET = "test-secret-" + "x" * 32
FIRM_ID = "123-45-67890"
OTHER_FIRM_ID = "987-65-43210"
START = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


@dataclass
class ServiceHarness:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FixedClock
    tokens: HS256Verifier

    @property
    def service(self) -> Any:
        return self.app.state.service

    def auth(
        self, role: Role, sub: str, *, firm_id: str | None = None, provider_id: str | None = None
    ) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id, provider_id=provider_id)
        return {"Authorization": f"Bearer {token}"}

    def firm(self, firm_id: str = FIRM_ID, sub: str = "ceo") -> dict[str, str]:
        return self.auth(Role.FIRM, sub, firm_id=firm_id)

    def officer(self, sub: str = "officer-kim") -> dict[str, str]:
        return self.auth(Role.OFFICER, sub)

    def ministry(self, sub: str = "mof-analyst") -> dict[str, str]:
        return self.auth(Role.MINISTRY, sub)

    def auth_auditor(self) -> dict[str, str]:
        return self.auth(Role.AUDITOR, "auditor-lee")

    def provider(self, provider_id: str = "prov-hanbit-law") -> dict[str, str]:
        return self.auth(Role.PROVIDER, f"clerk@{provider_id}", provider_id=provider_id)


def service_settings(
    service: str, database_url: str, kafka_bootstrap: str, prefix: str, state_dir: Path
) -> ServiceSettings:
    return ServiceSettings(
        service=service,
        database_url=database_url,
        jwt_secret=SECRET,
        state_dir=state_dir,
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=prefix,
        topic_partitions=2,
        kafka_session_timeout_ms=1000,
    )


@contextlib.asynccontextmanager
async def running(
    create_app: Callable[..., FastAPI], settings: ServiceSettings, **options: Any
) -> AsyncIterator[ServiceHarness]:
    """The app of ``create_app(settings, clock=..., **options)``, started, with a client."""
    clock = FixedClock(START)
    app = create_app(settings, clock=clock, **options)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{settings.service}"
        ) as client:
            yield ServiceHarness(app, client, clock, HS256Verifier(SECRET))


Start = Callable[..., contextlib.AbstractAsyncContextManager[ServiceHarness]]


@pytest.fixture
def start_service(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> Start:
    """``start_service(name, create_app, **options)``: a service on this test's database
    (each kind in turn), the real broker and topics of the test's own."""

    def start(
        name: str, create_app: Callable[..., FastAPI], **options: Any
    ) -> contextlib.AbstractAsyncContextManager[ServiceHarness]:
        prefix = unique_name("t") + "."
        settings = service_settings(name, database_url, kafka_bootstrap, prefix, tmp_path)
        return running(create_app, settings, **options)

    return start


async def wait_until(
    harness: ServiceHarness,
    application_id: str,
    condition: Callable[[dict[str, Any]], bool],
    within: float = 20,
) -> dict[str, Any]:
    """Poll the application until ``condition`` holds of its document."""
    deadline = asyncio.get_running_loop().time() + within
    body: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        response = await harness.client.get(
            f"/v1/applications/{application_id}", headers=harness.officer()
        )
        body = response.json()
        if condition(body):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{application_id} never got there: {body}")


async def wait_for_status(
    harness: ServiceHarness, application_id: str, status: str, within: float = 20
) -> dict[str, Any]:
    """Poll the application until the asynchronous stages bring it to ``status``."""
    return await wait_until(
        harness, application_id, lambda body: body.get("status") == status, within
    )
