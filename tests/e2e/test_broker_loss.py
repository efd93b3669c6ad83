"""The broker loses everything mid-run, and nobody repairs it by hand.

The voucher service runs as its own process on PostgreSQL, against an embedded broker of
this test's own. Firms apply and an officer approves while the broker is killed (-9) and
started again: empty, with a new cluster id. The service notices, makes its topics
again, publishes its whole log again from its database and reads its topics again from the
beginning. Every application still reaches ``issued``, and the topic holds the whole
history: every event of the database, each application's in chain order.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.broker import EmbeddedBroker
from shared.clock import SystemClock
from shared.contracts import Role, verify_chain
from shared.eventstore import EventStore, create_engine
from shared.processes import wait_until_up
from tests.conftest import free_port
from tests.e2e.service_process import ServiceProcess, read_topic

APPLICATIONS = 40


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(port=free_port())
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def voucher_process(
    broker: EmbeddedBroker,
    postgres_databases: Callable[[], Awaitable[str]],
    tmp_path: Path,
) -> Iterator[ServiceProcess]:
    """The voucher service on a database of its own and this test's broker, not started;
    stopped after the test."""
    process = ServiceProcess(
        service="voucher",
        database_url=asyncio.run(postgres_databases()),
        bootstrap=broker.bootstrap_servers,
        topic_prefix=f"loss{uuid.uuid4().hex[:6]}.",
        port=free_port(),
        state_dir=tmp_path,
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def voucher(voucher_process: ServiceProcess) -> ServiceProcess:
    voucher_process.start()
    return voucher_process


def body(n: int) -> dict[str, Any]:
    return {
        "programme_id": "cluster-startup-support-2026",
        "firm": {
            "firm_id": firm_id(n),
            "name": f"Loss Test Firm {n}",
            "founded_on": "2024-01-15",
            "size": "sme",
            "cluster": "pangyo-techno-valley",
            "industry": "artificial_intelligence",
        },
        "service_category": "consulting",
        "requested_amount": 1_000_000,  # one approval approves
        "purpose": "go-to-market consulting",
    }


def firm_id(n: int) -> str:
    return f"{300 + n:03d}-77-{10000 + n:05d}"


def status_of(http: httpx.Client, process: ServiceProcess, application_id: str) -> str:
    response = http.get(
        f"/v1/applications/{application_id}", headers=process.headers(Role.OFFICER, "officer-kim")
    )
    return str(response.json()["status"])


def test_a_broker_that_lost_everything_is_repaired_and_every_application_completes(
    voucher: ServiceProcess, broker: EmbeddedBroker
) -> None:
    officer = voucher.headers(Role.OFFICER, "officer-kim")
    ids: list[str] = []
    stop_officer = threading.Event()

    def approve_what_is_verified() -> None:
        """The officer approves each application once verified, whatever the broker does."""
        with httpx.Client(base_url=voucher.url, timeout=10) as http:
            decided: set[str] = set()
            while not stop_officer.is_set():
                for application_id in list(ids):
                    if application_id in decided:
                        continue
                    if status_of(http, voucher, application_id) == "verified":
                        response = http.post(
                            f"/v1/applications/{application_id}/decisions",
                            headers={**officer, "Idempotency-Key": f"ok-{application_id}"},
                            json={"decision": "approve", "reason": "eligible"},
                        )
                        assert response.status_code == 200, response.text
                        decided.add(application_id)
                time.sleep(0.05)

    officer_thread = threading.Thread(target=approve_what_is_verified, daemon=True)
    officer_thread.start()
    first_cluster = broker.cluster_id
    with httpx.Client(base_url=voucher.url, timeout=10) as http:
        for n in range(APPLICATIONS):
            if n == APPLICATIONS // 2:  # mid-run: the broker dies and comes back empty
                broker.kill()
                broker.start()
            firm = voucher.headers(Role.FIRM, "ceo", firm_id=firm_id(n))
            response = http.post(
                "/v1/applications",
                headers={**firm, "Idempotency-Key": f"apply-{n}"},
                json=body(n),
            )
            assert response.status_code == 201, response.text
            ids.append(str(response.json()["id"]))
            time.sleep(0.05)
        assert broker.cluster_id != first_cluster

        deadline = time.monotonic() + 90
        pending = set(ids)
        while pending and time.monotonic() < deadline:
            pending = {i for i in pending if status_of(http, voucher, i) != "issued"}
            time.sleep(0.2)
        stop_officer.set()
        officer_thread.join(10)
        stuck = sorted(status_of(http, voucher, i) for i in pending)
        assert not pending, f"{len(pending)} applications never issued: {stuck}"
        # the watch reports the loss (the relay may have noticed first and queued the log)
        losses = 0.0
        deadline = time.monotonic() + 20
        while losses < 1 and time.monotonic() < deadline:
            found = re.search(
                r"^incentives_broker_log_losses_total (\S+)$", http.get("/metrics").text, re.M
            )
            losses = float(found.group(1)) if found else 0.0
            time.sleep(0.2)

    assert losses >= 1
    logged = (Path(voucher.state_dir) / "voucher.log").read_text()
    assert "the broker lost its log" in logged

    # the topic holds the whole history: every event the database holds, each with its
    # position, each application's chain whole. Events sent again arrive more than once,
    # and the few sent in the moment the broker was lost may come ahead of the log sent
    # again: readers take each event once (the inbox; the audit, by position) and chains in
    # sequence order
    stored = asyncio.run(everything_stored(voucher.database_url))
    records = asyncio.run(
        read_topic(broker.bootstrap_servers, f"{voucher.topic_prefix}voucher.events", 10**6, 15)
    )
    on_topic: dict[str, dict[str, Any]] = {}
    positions: dict[str, set[bytes]] = {}
    for record in records:
        envelope = json.loads(record.value)
        on_topic[envelope["event_id"]] = envelope
        positions.setdefault(envelope["event_id"], set()).add(dict(record.headers)["position"])
    assert on_topic == {e["event_id"]: e for e in stored}
    assert all(len(p) == 1 for p in positions.values())  # sent again under its own position
    for application_id in ids:
        chain = sorted(
            (e for e in on_topic.values() if e["aggregate_id"] == application_id),
            key=lambda e: e["aggregate_seq"],
        )
        assert [e["aggregate_seq"] for e in chain] == list(range(1, len(chain) + 1))
        assert verify_chain(chain).ok
        assert chain[-1]["type"] == "voucher.voucher.issued"


def test_a_service_started_while_the_broker_is_away_comes_up_once_it_is_back(
    broker: EmbeddedBroker, voucher_process: ServiceProcess
) -> None:
    """A replica restarted while the broker restarts too waits for it, instead of exiting."""
    voucher = voucher_process
    broker.kill()
    started = voucher.launch()
    time.sleep(3)
    assert started.process.poll() is None, started.log_tail()
    broker.start()
    wait_until_up([started], path="/readyz", timeout=60)
    firm = voucher.headers(Role.FIRM, "ceo", firm_id=firm_id(90))
    with httpx.Client(base_url=voucher.url, timeout=10) as http:
        response = http.post(
            "/v1/applications", headers={**firm, "Idempotency-Key": "away"}, json=body(90)
        )
        assert response.status_code == 201, response.text
        application_id = str(response.json()["id"])
        deadline = time.monotonic() + 30
        while status_of(http, voucher, application_id) != "verified":
            assert time.monotonic() < deadline, "never verified: the stages do not run"
            time.sleep(0.1)


async def everything_stored(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        stored = await EventStore(engine, SystemClock()).read_all(limit=10**6)
    finally:
        await engine.dispose()
    return [event.envelope for event in stored]
