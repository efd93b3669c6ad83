"""`make run`'s stack: the embedded broker and four services as separate processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.broker import port_open
from tests.conftest import free_port

SERVICES = {"oversight": 8000, "voucher": 8001, "taxcredit": 8002, "fund": 8003}


def free_block(size: int, avoid: int) -> int:
    """The first of ``size`` consecutive free ports, below the kernel's ephemeral range
    (from 32768), where the services' own client connections would take them away."""
    for _ in range(50):
        base = random.randrange(20000, 30000)
        ports = range(base, base + size)
        if avoid in ports:
            continue
        sockets = []
        try:
            for port in ports:
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no block of free ports")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    broker_port = free_port()
    offset = free_block(4, avoid=broker_port) - 8000
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.cli",
            "run",
            "--broker-port",
            str(broker_port),
            "--port-offset",
            str(offset),
        ],
        env={**os.environ, "INCENTIVES_STATE_DIR": str(tmp_path / "var")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = process.stdout.readline()
        if not text:
            break
        printed.append(text)
        if "Ctrl-C stops everything" in text:
            break
    urls = {
        name: f"http://127.0.0.1:{port + offset}"
        for name, port in SERVICES.items()
        if any(f"http://127.0.0.1:{port + offset}" in text for text in printed)
    }
    if len(urls) != len(SERVICES):
        process.kill()
        logs = sorted((tmp_path / "var" / "logs").glob("*.log"))
        tails = "".join(f"--- {log.name}\n{log.read_text()[-2000:]}\n" for log in logs)
        raise AssertionError("incentives run did not come up:\n" + "".join(printed) + tails)
    try:
        yield urls, broker_port
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode is not None
    assert not port_open("127.0.0.1", broker_port), "the broker outlived `incentives run`"
    for url in urls.values():
        assert not port_open("127.0.0.1", int(url.rsplit(":", 1)[1])), f"{url} still answers"


def test_run_prints_every_service_url_and_each_answers(
    stack: tuple[dict[str, str], int],
) -> None:
    urls, broker_port = stack
    assert set(urls) == set(SERVICES)
    assert port_open("127.0.0.1", broker_port)
    for name, url in urls.items():
        health = httpx.get(f"{url}/healthz", timeout=5)
        assert health.json() == {"status": "ok", "service": name}
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert httpx.get(f"{url}/openapi.json", timeout=5).json()["info"]["title"]
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200


def test_a_broker_that_dies_is_started_again_and_every_service_repairs_on_its_own(
    stack: tuple[dict[str, str], int],
) -> None:
    urls, broker_port = stack
    found = subprocess.run(
        ["pgrep", "-f", f"listener-url tcp://127.0.0.1:{broker_port}"],
        capture_output=True,
        text=True,
        check=True,
    )
    [pid] = [int(p) for p in found.stdout.split()]
    os.kill(pid, signal.SIGKILL)

    deadline = time.monotonic() + 60
    repaired: set[str] = set()
    last_seen: dict[str, str] = {}  # why a service is not repaired yet, for the failure
    while time.monotonic() < deadline and repaired != set(urls):
        for name, url in urls.items():
            try:
                metrics = httpx.get(f"{url}/metrics", timeout=5).text
                readyz = httpx.get(f"{url}/readyz", timeout=5)
            except httpx.HTTPError as error:
                last_seen[name] = repr(error)
                continue
            losses = [line for line in metrics.splitlines() if line.startswith("incentives_broker")]
            last_seen[name] = f"readyz {readyz.status_code} {readyz.text}; {losses}"
            if readyz.status_code == 200 and "incentives_broker_log_losses_total 1.0" in metrics:
                repaired.add(name)
        time.sleep(0.5)
    assert repaired == set(urls), {
        name: seen for name, seen in last_seen.items() if name not in repaired
    }
    assert port_open("127.0.0.1", broker_port)
    again = subprocess.run(
        ["pgrep", "-f", f"listener-url tcp://127.0.0.1:{broker_port}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [int(p) for p in again.stdout.split()] != [pid]  # a new broker, started by the runner
