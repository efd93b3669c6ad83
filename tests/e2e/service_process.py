"""One service as its own process (``services.<name>.main:create_app``), on PostgreSQL and the
real broker."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from aiokafka import AIOKafkaConsumer

from shared.auth import HS256Verifier
from shared.contracts import Role
from shared.processes import ServiceRun, start_service, wait_until_up

SECRET = "e2e-secret-" + "y" * 32


@dataclass
class ServiceProcess:
    service: str
    """The service's name: its app is ``services.<service>.main:create_app``."""
    database_url: str
    bootstrap: str
    topic_prefix: str
    port: int
    state_dir: Path
    process: subprocess.Popen[bytes] | None = None
    tokens: HS256Verifier = field(default_factory=lambda: HS256Verifier(SECRET))
    settings: dict[str, str] = field(default_factory=dict)
    """More ``INCENTIVES_*`` variables for this service, beside the test's own."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        wait_until_up([self.launch()], path="/readyz", timeout=timeout)

    def launch(self) -> ServiceRun:
        """Start the process, without waiting for it to be ready."""
        environment = {
            "INCENTIVES_SERVICE": self.service,
            "INCENTIVES_DATABASE_URL": self.database_url,
            "INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "INCENTIVES_TOPIC_PREFIX": self.topic_prefix,
            "INCENTIVES_JWT_SECRET": SECRET,
            "INCENTIVES_STATE_DIR": str(self.state_dir),
            "INCENTIVES_KAFKA_SESSION_TIMEOUT_MS": "1000",
            "INCENTIVES_TOPIC_PARTITIONS": "2",
            **self.settings,
        }
        started = start_service(
            self.service, self.port, environment=environment, log_dir=self.state_dir
        )
        self.process = started.process
        return started

    def kill(self) -> None:
        """Die at once, as a crash would: no shutdown hooks run."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def headers(
        self, role: Role, sub: str, *, firm_id: str | None = None, provider_id: str | None = None
    ) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id, provider_id=provider_id)
        return {"Authorization": f"Bearer {token}"}


class StartService(Protocol):
    """The ``start_service`` fixture: a service's name (and ``INCENTIVES_*`` settings of its
    own, if any) -> the service, running and ready."""

    def __call__(self, service: str, **settings: str) -> ServiceProcess: ...


def wait_for_status(
    http: httpx.Client,
    application_id: str,
    status: str,
    headers: dict[str, str],
    within: float = 30,
) -> dict[str, Any]:
    """The application once it has ``status``; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/v1/applications/{application_id}", headers=headers).json()
        if body.get("status") == status:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{application_id} stayed {body.get('status')}, expected {status}: {body}")


async def read_topic(bootstrap: str, topic: str, count: int, within: float = 20) -> list[Any]:
    """Up to ``count`` records of ``topic`` from its beginning, read for at most ``within`` s."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + within
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records
