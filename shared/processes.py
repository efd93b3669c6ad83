"""A service as its own uvicorn process: started with its environment and log, then waited for.

``incentives run``, the end-to-end tests and the pipeline bench all start
``services.<name>.main:create_app`` this way; only their uvicorn options differ.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.broker import die_with_parent


@dataclass(frozen=True)
class ServiceRun:
    """A started service process, where it listens and where it writes its log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)


class ServiceStartError(RuntimeError):
    """A service did not come up: it exited (``ServiceExited``) or did not answer in time."""


class ServiceExited(ServiceStartError):
    def __init__(self, service: ServiceRun) -> None:
        super().__init__(f"{service.name} exited at start:\n{service.log_tail()}")
        self.service = service


class ServiceNotReady(ServiceStartError):
    def __init__(self, services: Sequence[ServiceRun]) -> None:
        names = ", ".join(service.name for service in services)
        tails = "\n".join(service.log_tail() for service in services)
        super().__init__(f"{names} not ready in time:\n{tails}")
        self.services = tuple(services)


def uvicorn_command(
    service: str, port: int, host: str = "127.0.0.1", options: Sequence[str] = ()
) -> list[str]:
    """The command line that serves ``services.<service>.main:create_app`` on ``host:port``."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        f"services.{service}.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--timeout-graceful-shutdown",
        "5",  # open streams (oversight's SSE) must not hold a stop for ever
        *options,
    ]


def start_service(
    service: str,
    port: int,
    *,
    environment: Mapping[str, str],
    log_dir: Path,
    host: str = "127.0.0.1",
    options: Sequence[str] = ("--no-access-log",),
) -> ServiceRun:
    """Start the service with ``environment`` added to this process's own, its output appended
    to ``<log_dir>/<service>.log``; it is stopped when this process dies.

    Does not wait: see ``wait_until_up``.
    """
    log_path = log_dir / f"{service}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            uvicorn_command(service, port, host, options),
            env={**os.environ, **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    return ServiceRun(service, process, f"http://{host}:{port}", log_path)


def wait_until_up(
    services: Iterable[ServiceRun],
    path: str = "/readyz",
    timeout: float = 30,
    interval: float = 0.1,
) -> None:
    """Until every service answers ``path`` (``/readyz`` or ``/healthz``) with success.

    Raises ``ServiceExited`` as soon as one exits, ``ServiceNotReady`` after ``timeout``
    seconds; both carry the tail of the log.
    """
    import httpx

    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        for service in list(pending):
            if service.process.poll() is not None:
                raise ServiceExited(service)
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{service.url}{path}", timeout=1).is_success:
                    pending.remove(service)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ServiceNotReady(pending)
        time.sleep(interval)


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of the log at ``path`` ("" if there is none yet)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
