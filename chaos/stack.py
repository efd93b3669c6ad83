"""Everything the chaos run starts: the embedded broker, one PostgreSQL database per
service and two replicas of every service, each its own uvicorn process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import POSTGRES, drop_database, fresh_database
from shared.auth import HS256Verifier
from shared.broker import EmbeddedBroker, wait_for_broker
from shared.contracts import Role
from shared.processes import ServiceRun, ServiceStartError, start_service, wait_until_up
from shared.topics import ensure_topics, standard_topics

SECRET = "chaos-secret-" + "c" * 32
SERVICES = ("voucher", "taxcredit", "fund", "oversight")
PROGRAMMES = ("voucher", "taxcredit", "fund")
REPLICAS = 2
PARTITIONS = 2
"""Two partitions a topic: the two replicas of a service split them."""
POOL_SIZE = 6
"""PostgreSQL connections a replica keeps (besides its relay's lock and its watchers)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    """One process of one service; killed with SIGKILL and started again on the same port."""

    service: str
    index: int
    port: int
    environment: dict[str, str]
    log_dir: Path
    process: subprocess.Popen[bytes] | None = None
    run: ServiceRun | None = None
    starts: int = 0
    ready: bool = False
    """Started and answering ``/readyz`` (False from the kill until then)."""

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> ServiceRun:
        """Start the process (from the event loop's own thread: the child is told to die
        with the thread that started it, and a worker thread of ``to_thread`` may end)."""
        self.run = start_service(
            self.service,
            self.port,
            environment=self.environment,
            log_dir=self.log_dir,
            options=("--no-access-log", "--log-level", "warning"),
        )
        self.process = self.run.process
        self.starts += 1
        return self.run

    async def start(self, within: float = 90) -> None:
        """Launch, and wait until the replica answers ``/readyz``."""
        run = self.launch()
        try:
            await asyncio.to_thread(wait_until_up, [run], "/readyz", within)
        except ServiceStartError as error:
            code = run.process.poll()
            raise RuntimeError(f"{self.name} did not start (exit code {code}): {error}") from error
        self.ready = True

    def kill(self) -> None:
        """Die at once, as a crash would: no shutdown hook runs."""
        self.ready = False
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Stack:
    state: Path
    postgres: str = POSTGRES
    """A ``postgresql://`` URL of the server the services' databases are made on."""
    broker: EmbeddedBroker = field(init=False)
    prefix: str = field(default_factory=lambda: f"chaos{uuid.uuid4().hex[:6]}.")
    databases: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Service -> (asyncpg DSN, SQLAlchemy URL)."""
    replicas: dict[str, list[Replica]] = field(default_factory=dict)
    tokens: HS256Verifier = field(default_factory=lambda: HS256Verifier(SECRET))

    def __post_init__(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker(port=free_port(), log_path=self.state / "broker.log")

    async def start(self) -> None:
        self.broker.start()
        await wait_for_broker(self.broker.bootstrap_servers)
        await ensure_topics(
            self.broker.bootstrap_servers,
            standard_topics(PARTITIONS, prefix=self.prefix),
        )
        for service in SERVICES:
            self.databases[service] = await fresh_database(f"chaos_{service}", self.postgres)
        for service in SERVICES:
            self.replicas[service] = [self._replica(service, i) for i in range(REPLICAS)]
        # one replica of each first (each makes its schema alone), then the second ones
        for index in range(REPLICAS):
            await asyncio.gather(*(r[index].start() for r in self.replicas.values()))

    def _replica(self, service: str, index: int) -> Replica:
        log_dir = self.state / f"{service}-{index}"
        log_dir.mkdir(parents=True, exist_ok=True)
        environment = {
            "INCENTIVES_SERVICE": service,
            "INCENTIVES_DATABASE_URL": self.databases[service][1],
            "INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
            "INCENTIVES_TOPIC_PREFIX": self.prefix,
            "INCENTIVES_JWT_SECRET": SECRET,
            "INCENTIVES_STATE_DIR": str(self.state),
            "INCENTIVES_KAFKA_SESSION_TIMEOUT_MS": "3000",
            "INCENTIVES_TOPIC_PARTITIONS": str(PARTITIONS),
            # eight processes on one server of 100 connections (PostgreSQL's default)
            "INCENTIVES_DATABASE_POOL_SIZE": str(POOL_SIZE),
        }
        return Replica(service, index, free_port(), environment, log_dir)

    def all_replicas(self) -> list[Replica]:
        return [r for replicas in self.replicas.values() for r in replicas]

    def urls(self, service: str) -> list[str]:
        return [r.url for r in self.replicas[service]]

    def url(self, service: str) -> str:
        """A replica of ``service`` that is running (the first, if none is)."""
        replicas = self.replicas[service]
        return next((r.url for r in replicas if r.alive), replicas[0].url)

    def headers(
        self,
        role: Role,
        sub: str,
        *,
        firm_id: str | None = None,
        provider_id: str | None = None,
    ) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id, provider_id=provider_id)
        return {"Authorization": f"Bearer {token}"}

    def reset_broker(self) -> None:
        """Kill the broker (-9) and start it again, empty, on the same port."""
        self.broker.kill()
        self.broker.start()

    async def stop(self, keep_databases: bool = False) -> None:
        for replica in self.all_replicas():
            await asyncio.to_thread(replica.stop)
        self.broker.stop()
        if not keep_databases:
            for dsn, _ in self.databases.values():
                await drop_database(dsn, self.postgres)
