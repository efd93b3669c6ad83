"""The services as their own processes, each on a fresh PostgreSQL database and the real broker."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.service_process import ServiceProcess, StartService


@pytest.fixture
def start_service(
    kafka_bootstrap: str,
    postgres_url: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[StartService]:
    """``start_service("voucher")``: the service running and ready, stopped after the test.

    Every service a test starts works in the test's one database (``postgres_url``).
    """
    started: list[ServiceProcess] = []

    def start(service: str) -> ServiceProcess:
        process = ServiceProcess(
            service=service,
            database_url=postgres_url,
            bootstrap=kafka_bootstrap,
            topic_prefix=unique_name("e2e") + ".",
            port=free_port(),
            state_dir=tmp_path,
        )
        started.append(process)
        process.start()
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop()
