"""The services as their own processes, each on a fresh PostgreSQL database and the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.service_process import ServiceProcess, StartService


@pytest.fixture
def start_service(
    kafka_bootstrap: str,
    postgres_url: str,
    postgres_databases: Callable[[], Awaitable[str]],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[StartService]:
    """``start_service("voucher")``: the service running and ready, stopped after the test.

    Each service a test starts has a database of its own (the first one ``postgres_url``),
    as in production; they share the broker and the test's topics.
    """
    started: list[ServiceProcess] = []
    databases: dict[str, str] = {}

    def database_for(service: str) -> str:
        if service not in databases:
            databases[service] = asyncio.run(postgres_databases()) if databases else postgres_url
        return databases[service]

    def start(service: str, **settings: str) -> ServiceProcess:
        process = ServiceProcess(
            service=service,
            database_url=database_for(service),
            bootstrap=kafka_bootstrap,
            topic_prefix=unique_name("e2e") + ".",
            port=free_port(),
            state_dir=tmp_path,
            settings=settings,
        )
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
