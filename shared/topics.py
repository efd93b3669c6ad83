"""Topics, created explicitly with fixed partition counts: nothing relies on auto-creation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

SERVICES = ("voucher", "taxcredit", "fund")
DLQ_TOPIC = "incentives.dlq"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1


def events_topic(service: str) -> str:
    return f"{service}.events"


def checkpoints_topic(service: str) -> str:
    return f"{service}.checkpoints"


def standard_topics(
    partitions: int = 8, replication_factor: int = 1, prefix: str = ""
) -> list[TopicSpec]:
    """Every topic of the design: events and checkpoints per service, and the DLQ."""
    specs = [TopicSpec(prefix + events_topic(s), partitions, replication_factor) for s in SERVICES]
    specs += [TopicSpec(prefix + checkpoints_topic(s), 1, replication_factor) for s in SERVICES]
    specs.append(TopicSpec(prefix + DLQ_TOPIC, 1, replication_factor))
    return specs


async def ensure_topics(
    bootstrap_servers: str,
    specs: Iterable[TopicSpec],
    client_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that are missing; return the names that were created
    (``client_options``: the connection's security, see ``shared.security``)."""
    wanted = list(specs)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(client_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in wanted if s.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [NewTopic(s.name, s.partitions, s.replication_factor) for s in missing]
        )
        created = []
        for topic, code, message in _topic_errors(response):
            if code == 0:
                created.append(topic)
            elif code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"could not create topic {topic}: {message} (error {code})")
        return created
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    return [(str(t[0]), int(t[1]), t[2] if len(t) > 2 else None) for t in response.topic_errors]  # type: ignore[attr-defined]
