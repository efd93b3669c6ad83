"""Idempotent Kafka consumers on FastStream, with a dead-letter queue.

Each event is applied at most once per consumer: its ``event_id`` goes into the
inbox in the same database transaction as the handler's effects, and the Kafka
offset is committed only after that transaction committed (manual acks, never
auto-commit or ack-first). A batch shares one transaction; if it fails, its
messages are retried one by one so a single bad one cannot hold up the rest.
A message that cannot be processed goes to ``incentives.dlq`` with the reason and
its original bytes, and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from shared.contracts import Envelope, hash_fields
from shared.eventstore import EventStore, UnitOfWork
from shared.topics import DLQ_TOPIC

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope], Awaitable[None]]
DeadLetterSink = Callable[["DeadLetter"], Awaitable[None]]


class PoisonKind(StrEnum):
    INVALID = "invalid"
    """Not JSON, or not an event envelope."""
    TAMPERED = "tampered"
    """The envelope's content does not match its hash."""
    UNKNOWN_TYPE = "unknown_type"
    """No handler for the event type, and the consumer does not ignore unknown types."""
    HANDLER_FAILED = "handler_failed"
    """The handler kept raising."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One Kafka record as it arrived."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def of(cls, record: Any) -> Delivery:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value if record.value is not None else b"",
            headers=tuple(record.headers or ()),
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    delivery: Delivery
    consumer: str
    kind: PoisonKind
    reason: str
    event_id: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {
            "reason": self.reason[:1000],
            "error_kind": str(self.kind),
            "consumer": self.consumer,
            "source_topic": self.delivery.topic,
            "source_partition": str(self.delivery.partition),
            "source_offset": str(self.delivery.offset),
        }
        if self.event_id:
            headers["event_id"] = self.event_id
        return headers


@dataclass(slots=True)
class BatchReport:
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)


class _Poison(Exception):
    def __init__(self, kind: PoisonKind, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.event_id = event_id


def consumer_options(max_records: int = 500, session_timeout_ms: int = 6000) -> dict[str, Any]:
    """The aiokafka settings every consumer of ours needs (see ARCHITECTURE.md, Tansu limits).

    A new group member waits about the session timeout (at most 3 s) on Tansu before
    it is assigned partitions; tests shorten it to join in about a second.
    """
    return {
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": 10,  # Tansu answers a fetch only when this expires
        "max_poll_records": max_records,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 10),
    }


class IdempotentConsumer:
    """A named consumer (also its Kafka group id) with one handler per event type."""

    def __init__(
        self,
        name: str,
        store: EventStore,
        *,
        dead_letters: DeadLetterSink | None = None,
        max_attempts: int = 3,
        ignore_unknown: bool = False,
        retry_delay: float = 0.05,
    ) -> None:
        self.name = name
        self.store = store
        self.max_attempts = max_attempts
        self.ignore_unknown = ignore_unknown
        self.retry_delay = retry_delay
        self._dead_letters = dead_letters
        self._handlers: dict[str, Handler] = {}

    @property
    def event_types(self) -> frozenset[str]:
        return frozenset(self._handlers)

    def handles(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Register the decorated coroutine as the handler of ``event_types``."""

        def register(handler: Handler) -> Handler:
            for event_type in event_types:
                if event_type in self._handlers:
                    raise ValueError(f"{self.name} already handles {event_type}")
                self._handlers[event_type] = handler
            return handler

        return register

    def subscribe(
        self,
        broker: KafkaBroker,
        *topics: str,
        max_records: int = 500,
        batch_timeout_ms: int = 50,
        backoff: float = 0.5,
        session_timeout_ms: int = 6000,
    ) -> None:
        """Consume ``topics`` on ``broker`` in batches, committing offsets after the database."""
        if self._dead_letters is None:
            self._dead_letters = broker_dead_letters(broker)

        @broker.subscriber(  # type: ignore[untyped-decorator]  # faststream's overloads
            *topics,
            batch=True,
            group_id=self.name,
            ack_policy=AckPolicy.MANUAL,
            max_records=max_records,
            batch_timeout_ms=batch_timeout_ms,
            title=f"{self.name}",
            description=f"Idempotent consumer {self.name} (inbox + DLQ)",
            **consumer_options(max_records, session_timeout_ms),
        )
        async def on_batch(message: KafkaMessage) -> None:
            raw = message.raw_message
            records = raw if isinstance(raw, tuple) else (raw,)
            try:
                await self.process([Delivery.of(r) for r in records])
            except Exception:
                log.exception("%s could not process a batch; it will be redelivered", self.name)
                await message.nack()  # rewind: nothing past this batch is committed
                await asyncio.sleep(backoff)
                return
            await message.ack()

    async def process(self, deliveries: Sequence[Delivery]) -> BatchReport:
        """Apply a batch; dead letters are published before this returns, or it raises."""
        report = BatchReport()
        good: list[tuple[Envelope, Delivery]] = []
        for delivery in deliveries:
            try:
                envelope = self._parse(delivery)
            except _Poison as poison:
                report.dead_letters.append(self._dead(delivery, poison))
                continue
            if envelope is None:
                report.ignored += 1
                continue
            good.append((envelope, delivery))

        if good:
            try:
                async with self.store.transaction() as uow:
                    for envelope, _ in good:
                        if await uow.record_inbox(self.name, envelope.event_id):
                            await self._handlers[envelope.type](uow, envelope)
                            report.applied += 1
                        else:
                            report.duplicates += 1
            except Exception as error:
                log.info("%s: batch of %d failed (%r); one by one", self.name, len(good), error)
                report.applied = report.duplicates = 0
                for envelope, delivery in good:
                    await self._one(envelope, delivery, report)

        for letter in report.dead_letters:
            await self._send(letter)
        return report

    async def _one(self, envelope: Envelope, delivery: Delivery, report: BatchReport) -> None:
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            try:
                async with self.store.transaction() as uow:
                    if not await uow.record_inbox(self.name, envelope.event_id):
                        report.duplicates += 1
                        return
                    await self._handlers[envelope.type](uow, envelope)
                report.applied += 1
                return
            except Exception as error:
                last = error
                await asyncio.sleep(self.retry_delay * (attempt + 1))
        log.warning("%s gives up on %s: %r", self.name, envelope.event_id, last)
        report.dead_letters.append(
            DeadLetter(
                delivery,
                self.name,
                PoisonKind.HANDLER_FAILED,
                f"{envelope.type} failed {self.max_attempts} times: {last!r}",
                envelope.event_id,
            )
        )

    def _parse(self, delivery: Delivery) -> Envelope | None:
        try:
            document = json.loads(delivery.value)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _Poison(PoisonKind.INVALID, f"not JSON: {error}") from error
        if not isinstance(document, dict):
            raise _Poison(PoisonKind.INVALID, "not an event envelope: not a JSON object")
        event_id = document.get("event_id")
        event_id = event_id if isinstance(event_id, str) else None
        try:
            envelope = Envelope.model_validate(document)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise _Poison(
                PoisonKind.INVALID, f"not an event envelope: {problems}", event_id
            ) from error
        try:
            expected = hash_fields(document)
        except ValueError as error:
            raise _Poison(PoisonKind.INVALID, f"not canonicalisable: {error}", event_id) from error
        if expected != envelope.hash:
            raise _Poison(PoisonKind.TAMPERED, "content does not match its hash", envelope.event_id)
        if envelope.type not in self._handlers:
            if self.ignore_unknown:
                return None
            raise _Poison(
                PoisonKind.UNKNOWN_TYPE,
                f"{self.name} has no handler for {envelope.type}",
                envelope.event_id,
            )
        return envelope

    def _dead(self, delivery: Delivery, poison: _Poison) -> DeadLetter:
        return DeadLetter(delivery, self.name, poison.kind, str(poison), poison.event_id)

    async def _send(self, letter: DeadLetter) -> None:
        if self._dead_letters is None:
            raise RuntimeError(f"{self.name} has nowhere to send dead letters")
        log.warning(
            "%s: dead letter from %s[%d]@%d: %s",
            self.name,
            letter.delivery.topic,
            letter.delivery.partition,
            letter.delivery.offset,
            letter.reason,
        )
        await self._dead_letters(letter)


def broker_dead_letters(broker: KafkaBroker, topic: str = DLQ_TOPIC) -> DeadLetterSink:
    """Publish dead letters on ``broker`` (acks as the broker's producer is configured)."""

    async def send(letter: DeadLetter) -> None:
        await broker.publish(
            letter.delivery.value,
            topic=topic,
            key=letter.delivery.key,
            headers=letter.headers(),
        )

    return send
