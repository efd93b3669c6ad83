"""A programme's consumer stages: what the service does on its own when its events arrive."""

from __future__ import annotations

from collections.abc import Mapping

from shared.consumer import BatchHandler, Handler, IdempotentConsumer, broker_dead_letters
from shared.service import ServiceRuntime
from shared.topics import DLQ_TOPIC


def subscribe_stages(
    runtime: ServiceRuntime,
    name: str,
    *,
    batches: Mapping[str, BatchHandler] | None = None,
    singles: Mapping[str, Handler] | None = None,
    topics: tuple[str, ...] = (),
) -> IdempotentConsumer:
    """One idempotent consumer ``name`` of the service's own topic (and ``topics``).

    ``batches`` take consecutive events of a type together (a few statements for many);
    ``singles`` take one event at a time. Events of other types pass by. The stages'
    own events are published as soon as they commit.
    """
    stages = IdempotentConsumer(
        runtime.topic(name),
        runtime.store,
        dead_letters=broker_dead_letters(runtime.broker, runtime.topic(DLQ_TOPIC)),
        ignore_unknown=True,  # the topic carries every event of the programme
        on_applied=runtime.wake_relay,
    )
    for event_type, batch_handler in (batches or {}).items():
        stages.handles_batch(event_type)(batch_handler)
    for event_type, handler in (singles or {}).items():
        stages.handles(event_type)(handler)
    runtime.extras.setdefault("consumers", []).append(stages)
    stages.subscribe(
        runtime.broker,
        runtime.events_topic,
        *(runtime.topic(t) for t in topics),
        session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
    )
    return stages
