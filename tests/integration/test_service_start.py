"""A service whose broker goes away while it starts (both restarting at once) waits for it
and starts, rather than exiting."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError
from typer.testing import CliRunner

from shared import service
from shared.broker import BrokerError
from shared.cli import app
from shared.service import _start_broker
from shared.settings import ServiceSettings


class Flaky:
    """A broker client whose first ``fails`` connections fail as a vanished broker's would."""

    subscribers: tuple[()] = ()
    publishers: tuple[()] = ()

    def __init__(self, fails: int) -> None:
        self.fails, self.starts, self.stops = fails, 0, 0
        self.running = False

    async def connect(self) -> None:
        self.starts += 1
        if self.starts <= self.fails:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        self.stops += 1


def runtime(kafka_bootstrap: str, broker: Flaky, wait: float) -> SimpleNamespace:
    settings = ServiceSettings(
        service="voucher",
        jwt_secret="s" * 40,
        kafka_bootstrap_servers=kafka_bootstrap,
        broker_startup_wait_seconds=wait,
        topic_prefix="start-test.",
    )
    return SimpleNamespace(settings=settings, broker=broker)


async def test_a_start_that_fails_on_a_vanished_broker_is_tried_again(
    kafka_bootstrap: str,
) -> None:
    broker = Flaky(fails=2)
    await _start_broker(runtime(kafka_bootstrap, broker, wait=30))  # type: ignore[arg-type]
    assert (broker.starts, broker.stops) == (3, 2)
    assert broker.running


async def test_past_the_startup_wait_the_failure_is_raised(kafka_bootstrap: str) -> None:
    broker = Flaky(fails=10**6)
    with pytest.raises((KafkaConnectionError, BrokerError)):
        await _start_broker(runtime(kafka_bootstrap, broker, wait=0.5))  # type: ignore[arg-type]
    assert broker.starts >= 1


def test_the_topics_job_runs_in_production_with_a_broker_and_nothing_else(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compose ``topics`` job: no JWT secret, no database, and it makes the topics."""
    monkeypatch.setenv("INCENTIVES_ENVIRONMENT", "production")
    monkeypatch.setenv("INCENTIVES_KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("INCENTIVES_TOPIC_PREFIX", f"topicsjob{uuid.uuid4().hex[:6]}.")
    monkeypatch.delenv("INCENTIVES_JWT_SECRET", raising=False)
    monkeypatch.delenv("INCENTIVES_DATABASE_URL", raising=False)
    result = CliRunner().invoke(app, ["topics"])
    assert result.exit_code == 0, result.output
    assert "voucher.events" in result.output


async def test_a_broker_lost_between_waiting_and_making_topics_is_waited_for_again(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker answered, then restarted before the topics were made: wait again."""
    made: list[str] = []

    async def make_topics(settings: ServiceSettings) -> None:
        made.append(settings.service)
        if len(made) == 1:
            raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    monkeypatch.setattr(service, "_make_topics", make_topics)
    settings = runtime(kafka_bootstrap, Flaky(fails=0), wait=30).settings
    await service._reach_broker(settings, time.monotonic() + 30)
    assert made == ["voucher", "voucher"]
