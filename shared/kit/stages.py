"""A programme's consumer stages: what the service does on its own when its events arrive."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from shared.consumer import BatchHandler, Handler, IdempotentConsumer, broker_dead_letters
from shared.contracts import Envelope
from shared.service import ServiceRuntime
from shared.topics import DLQ_TOPIC


class OnCommit:
    """Hands a stage consumer the events this process commits, as they commit.

    A firm's submission committed here is verified here at once, instead of after the
    relay has published it and the consumer fetched it back (a hop of tens to hundreds of
    milliseconds, two or three times in an application's life). The broker still carries
    every event, and the consumer still takes each delivery: the events applied here are
    passed by as duplicates, and those that were not (left behind, failed, committed by
    another process) are applied from it, as before. Events wait here in commit order,
    and go to the consumer together: one transaction for what arrived meanwhile.
    """

    def __init__(self, stages: IdempotentConsumer, backlog: int = 2000, batch: int = 500) -> None:
        self.stages = stages
        self.backlog = backlog
        """Events waiting beyond this are left to the broker's delivery (a burst)."""
        self.batch = batch
        self._waiting: list[Envelope] = []
        self._ready = asyncio.Event()

    def committed(self, envelopes: Sequence[Envelope]) -> None:
        """A unit of work committed ``envelopes`` (an ``EventStore.on_commit`` listener)."""
        wanted = [e for e in envelopes if self.stages.applies_here(e.type)]
        if not wanted:
            return
        if len(self._waiting) + len(wanted) > self.backlog:
            self.stages.stats.left_to_broker += len(wanted)  # the broker's delivery applies them
            return
        self.stages.expect_here(wanted)  # a delivery of one waits for it to be applied here
        self._waiting.extend(wanted)
        self._ready.set()

    async def run(self) -> None:
        """Apply what committed, for the life of the process."""
        while True:
            await self._ready.wait()
            taken, self._waiting = self._waiting[: self.batch], self._waiting[self.batch :]
            if not self._waiting:
                self._ready.clear()
            await self.stages.apply_here(taken)


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
    if runtime.settings.stages_act_on_commit:
        on_commit = OnCommit(stages)
        runtime.store.on_commit(on_commit.committed)
        runtime.spawn(on_commit.run(), name=f"{name}-on-commit")
    stages.subscribe(
        runtime.broker,
        runtime.events_topic,
        *(runtime.topic(t) for t in topics),
        session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
    )
    return stages
