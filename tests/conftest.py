"""Real infrastructure for the tests: a Kafka-protocol broker and PostgreSQL.

Broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set, else testcontainers' Kafka when a
Docker engine answers, else the embedded Tansu binary on a free port.
PostgreSQL: ``DATABASE_URL`` if set, else testcontainers, else the server on
127.0.0.1:5432. Each test session works in a database of its own. Neither is
ever skipped: a missing server fails the run and says how to provide one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest

from shared.broker import EmbeddedBroker, wait_for_broker
from shared.clock import SystemClock
from shared.eventstore import EventStore, create_engine
from tests.schema import migrated

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


def free_port() -> int:
    """A free port for a server of the tests, below the kernel's ephemeral range (32768 on):
    there, any client connection of the services could take it before the server binds."""
    for _ in range(100):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 30000")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka-protocol broker for this test session."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        asyncio.run(wait_for_broker(configured))
        yield configured
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
        return
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    try:
        asyncio.run(wait_for_broker(broker.bootstrap_servers))
        yield broker.bootstrap_servers
    finally:
        broker.stop()


def _plain(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def _swap_db(url: str, database: str) -> str:
    plain = _plain(url)
    head, _, tail = plain.partition("://")
    authority, _, rest = tail.partition("/")
    query = ""
    if "?" in rest:
        query = "?" + rest.split("?", 1)[1]
    return f"{head}://{authority}/{database}{query}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A plain ``postgresql://`` URL of a server we may create databases on."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield _plain(configured)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as pg:
            yield _plain(pg.get_connection_url())
        return
    yield DEFAULT_POSTGRES


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: str) -> Iterator[Callable[[], Awaitable[str]]]:
    """A factory of fresh, empty databases (``postgresql+asyncpg://`` URLs), dropped at the end."""
    created: list[str] = []
    prefix = f"incentives_test_{uuid.uuid4().hex[:8]}"

    async def create() -> str:
        name = f"{prefix}_{len(created)}"
        try:
            admin = await asyncpg.connect(postgres_server, timeout=5)
        except (OSError, asyncpg.PostgresError) as error:
            pytest.fail(
                f"PostgreSQL is not answering at {postgres_server} ({error!r}); "
                "set DATABASE_URL or start the server",
                pytrace=False,
            )
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        created.append(name)
        return _swap_db(postgres_server, name).replace("postgresql://", "postgresql+asyncpg://", 1)

    yield create

    async def drop_all() -> None:
        admin = await asyncpg.connect(postgres_server, timeout=5)
        try:
            for name in created:
                with contextlib.suppress(asyncpg.PostgresError):
                    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    if created:
        asyncio.run(drop_all())


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_url(
    request: pytest.FixtureRequest,
    postgres_databases: Callable[[], Awaitable[str]],
    tmp_path: object,
) -> str:
    """A fresh database of each kind; tests using it run once on each."""
    if request.param == "postgresql":
        return await postgres_databases()
    return f"sqlite+aiosqlite:///{tmp_path}/events.db"


@pytest.fixture
async def postgres_url(postgres_databases: Callable[[], Awaitable[str]]) -> str:
    return await postgres_databases()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    engine = create_engine(database_url)
    event_store = EventStore(engine, SystemClock())
    await migrated(engine)
    yield event_store
    await engine.dispose()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Topic and group names no other test shares: ``unique_name("events")``."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name)[:40].strip("-")
    token = uuid.uuid4().hex[:8]
    return lambda base: f"{base}.{slug}.{token}"
