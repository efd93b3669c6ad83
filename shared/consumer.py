"""Idempotent Kafka consumers on FastStream, with a dead-letter queue.

Each event is applied at most once per consumer: its ``event_id`` goes into the
inbox in the same database transaction as the handler's effects, and the Kafka
offset is committed only after that transaction committed (``AckPolicy.MANUAL``,
auto-commit off: never ack-first). A batch shares one transaction; if it fails,
its messages are retried one by one, each in a transaction of its own, so a
single bad one cannot hold up the rest. A message that cannot be processed goes
to ``incentives.dlq`` with its original bytes and key, and headers saying why;
then the consumer moves on. If the dead letter cannot be published, or the
database does not answer, nothing is committed and the batch is redelivered.

Handlers must do their effects through the unit of work they are given (a
batch that falls back runs them again, in fresh transactions)::

    consumer = IdempotentConsumer("voucher-verifier", store, max_attempts=3)

    @consumer.handles("voucher.application.submitted")
    async def verify(uow: UnitOfWork, event: Envelope) -> None: ...

    consumer.subscribe(broker, "voucher.events")  # broker: KafkaBroker(..., acks="all")
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from aiokafka import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from sqlalchemy import exc as sa_exc

from shared.contracts import Envelope, hash_fields
from shared.eventstore import EventStore, UnitOfWork, inbox
from shared.topics import DLQ_TOPIC

if TYPE_CHECKING:
    from faststream.kafka.subscriber.usecase import LogicSubscriber

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, Envelope], Awaitable[None]]
"""``async def handler(uow, envelope)``: effects through ``uow``, in the inbox's transaction."""
BatchHandler = Callable[[UnitOfWork, Sequence[Envelope]], Awaitable[None]]
"""``async def handler(uow, envelopes)``: several events in their order, one transaction.
It must give the same result as handling them one by one (a batch that fails is
retried message by message, each handed over alone)."""
RecordHandler = Callable[[UnitOfWork, Sequence[tuple[Envelope, "Delivery"]]], Awaitable[None]]
"""``async def handler(uow, received)``: each event with the record it came in (topic,
headers such as ``position``, the exact bytes), several in their order, one transaction."""
DeadLetterSink = Callable[["DeadLetter"], Awaitable[None]]
"""Publishes one dead letter; returns only once the broker acknowledged it (or raises)."""

_CONSUMER_LENGTH: int = getattr(inbox.c.consumer.type, "length", None) or 100


class PoisonKind(StrEnum):
    """The ``error_kind`` header of a dead letter."""

    INVALID = "invalid"
    """Not JSON, or not an event envelope."""
    TAMPERED = "tampered"
    """The envelope's content does not match its hash."""
    UNKNOWN_TYPE = "unknown_type"
    """No handler for the event type, and the consumer does not ignore unknown types."""
    HANDLER_FAILED = "handler_failed"
    """The handler kept raising (any exception, domain rejections included)."""


class ConsumerUnavailable(RuntimeError):
    """The database or the DLQ is not answering: nothing is committed, the batch comes again."""


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
        """From an aiokafka ``ConsumerRecord``."""
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value if record.value is not None else b"",
            headers=tuple(record.headers or ()),
        )


SOURCE_HEADER = "source:"
"""Prefix of the original record's headers on its dead letter."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the consumer gave up on, and why."""

    delivery: Delivery
    consumer: str
    kind: PoisonKind
    reason: str
    event_id: str | None = None

    def headers(self) -> dict[str, str]:
        """The DLQ record's headers: reason, error_kind, consumer, source coordinates, event_id."""
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
        for name, value in self.delivery.headers:  # kept for a redrive (``incentives dlq``)
            headers[SOURCE_HEADER + name] = value.decode("utf-8", "replace")[:1000]
        return headers


@dataclass(slots=True)
class BatchReport:
    """What one call of :meth:`IdempotentConsumer.process` did."""

    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    transactions: int = 0
    fell_back: bool = False


@dataclass(slots=True)
class ConsumerStats:
    """Running totals of one consumer, for metrics and tests."""

    batches: int = 0
    messages: int = 0
    applied: int = 0
    duplicates: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    fallbacks: int = 0
    transactions: int = 0
    """Database transactions tried, the rolled-back ones included."""
    redeliveries: int = 0
    """Batches given back unacknowledged (database or DLQ unavailable)."""
    largest_batch: int = 0
    applied_here: int = 0
    """Of ``applied``, those :meth:`IdempotentConsumer.apply_here` applied, not the broker's delivery."""
    left_to_broker: int = 0
    """Events committed here that were not applied here (a burst beyond the backlog, or a
    transaction here that failed): the broker's delivery applies them, later."""
    waited_for_here: int = 0
    """Batches that waited for :meth:`IdempotentConsumer.apply_here` to settle an event
    the broker brought back before this process had applied it."""


_Run = tuple[RecordHandler, list[tuple[Envelope, "Delivery"]]]
"""Events of a batch for one handler, in their order."""


def _header(delivery: Delivery, name: str) -> str | None:
    """The first header ``name`` of ``delivery``, as text."""
    for key, value in delivery.headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def _apart(runs: Sequence[_Run]) -> bool:
    """Whether no application has events in two of ``runs``."""
    seen: dict[str, int] = {}
    for n, (_, run) in enumerate(runs):
        for envelope, _ in run:
            if seen.setdefault(envelope.aggregate_id, n) != n:
                return False
    return True


_Item = TypeVar("_Item")
_Handler = TypeVar("_Handler")


def _grouped(
    todo: list[_Item],
    handler_of: Callable[[_Item], _Handler],
    application_of: Callable[[_Item], str],
) -> list[tuple[_Handler, list[_Item]]]:
    """A batch's events by handler: each handler once, with all its events in their order,
    where no application's events would then be taken out of their order; else each run
    of consecutive events for one handler. (Events of different applications come from
    several partitions interleaved in no meaningful order: a batch mixing two stages'
    events would otherwise call each stage once per run, a few events at a time.)"""
    groups: dict[_Handler, list[_Item]] = {}
    index: dict[_Handler, int] = {}
    reached: dict[str, int] = {}  # application -> the group of its latest event so far
    for item in todo:
        handler = handler_of(item)
        at = index.setdefault(handler, len(index))
        application = application_of(item)
        if reached.get(application, at) > at:  # it would go before an earlier event
            return [(h, list(run)) for h, run in itertools.groupby(todo, handler_of)]
        reached[application] = at
        groups.setdefault(handler, []).append(item)
    return list(groups.items())


class _Poison(Exception):
    def __init__(self, kind: PoisonKind, reason: str, event_id: str | None = None) -> None:
        super().__init__(reason)
        self.kind = kind
        self.event_id = event_id


def consumer_options(
    max_records: int = 500, session_timeout_ms: int = 6000, fetch_max_wait_ms: int = 10
) -> dict[str, Any]:
    """The aiokafka settings every consumer of ours needs (see ARCHITECTURE.md, Tansu limits).

    These are the ones ``broker.subscriber`` accepts; it sets ``enable_auto_commit``
    itself from the ack policy. A new group member waits about the session timeout
    (at most 3 s) on Tansu before it is assigned partitions; tests shorten it.
    """
    return {
        "auto_offset_reset": "earliest",
        # Tansu answers a fetch only when this expires: a consumer fetches this often, busy
        # or idle; one that can wait (a read model) saves the broker and itself the polling
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "max_poll_records": max_records,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(100, session_timeout_ms // 10),
    }


def consumer_settings(max_records: int = 500, session_timeout_ms: int = 6000) -> dict[str, Any]:
    """Keyword arguments for a plain ``aiokafka.AIOKafkaConsumer`` that commits by hand."""
    return {
        **consumer_options(max_records, session_timeout_ms),
        "enable_auto_commit": False,
    }


class IdempotentConsumer:
    """A named consumer (also its Kafka group id) with one handler per event type.

    ``ignore_unknown=True`` skips events no handler is registered for (a consumer of
    a topic that carries many types); otherwise they go to the DLQ. A handler gets
    ``max_attempts`` tries, each its own transaction, before its message goes to
    the DLQ as ``handler_failed``; unless the failure is a lost connection or the
    database does not answer: then nothing is dead-lettered or committed, and the
    batch comes again after a backoff.
    """

    def __init__(
        self,
        name: str,
        store: EventStore,
        *,
        dlq_topic: str = DLQ_TOPIC,
        dead_letters: DeadLetterSink | None = None,
        max_attempts: int = 3,
        ignore_unknown: bool = False,
        retry_delay: float = 0.05,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        """``on_applied`` runs after a batch whose effects committed (e.g. to wake the relay)."""
        if not name or len(name) > _CONSUMER_LENGTH:
            raise ValueError(f"a consumer name has 1 to {_CONSUMER_LENGTH} characters")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.name = name
        self.store = store
        self.dlq_topic = dlq_topic
        self.max_attempts = max_attempts
        self.ignore_unknown = ignore_unknown
        self.retry_delay = retry_delay
        self.stats = ConsumerStats()
        self._dead_letters = dead_letters
        self._handlers: dict[str, RecordHandler] = {}
        self._batch_handlers: dict[str, BatchHandler] = {}
        self._every: RecordHandler | None = None
        self._on_applied = on_applied
        self._applied_here: dict[str, None] = {}
        """Events :meth:`apply_here` applied, until the broker's delivery of each comes by."""
        self._expected: dict[str, None] = {}
        """Events :meth:`expect_here` announced that :meth:`apply_here` has not settled yet."""
        self._settled = asyncio.Condition()

    @property
    def event_types(self) -> frozenset[str]:
        """The event types this consumer has handlers for."""
        return frozenset(self._handlers)

    def applies(self, event_type: str) -> bool:
        """Whether an event of ``event_type`` reaches a handler here (its own, or the one
        for every event), rather than passing by or going to the DLQ as unknown."""
        return event_type in self._handlers or self._every is not None

    def handles(self, *event_types: str) -> Callable[[Handler], Handler]:
        """Register the decorated coroutine as the handler of ``event_types``."""

        def register(handler: Handler) -> Handler:
            async def one_by_one(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
                for envelope in envelopes:
                    await handler(uow, envelope)

            self._register(event_types, one_by_one)
            return handler

        return register

    def handles_batch(self, *event_types: str) -> Callable[[BatchHandler], BatchHandler]:
        """Register a handler that takes consecutive events of ``event_types`` together.

        Worth it where a handler can read and write for many events in a few statements.
        """

        def register(handler: BatchHandler) -> BatchHandler:
            self._register(event_types, handler)
            return handler

        return register

    def handles_every_event(self, handler: RecordHandler) -> RecordHandler:
        """Register ``handler`` for every event no other handler takes, with the records
        they came in (a read model of whole topics: oversight). Nothing passes by."""
        if self._every is not None:
            raise ValueError(f"{self.name} already handles every event")
        self._every = handler
        return handler

    def _register(self, event_types: Sequence[str], handler: BatchHandler) -> None:
        async def without_records(
            uow: UnitOfWork, received: Sequence[tuple[Envelope, Delivery]]
        ) -> None:
            await handler(uow, [envelope for envelope, _ in received])

        for event_type in event_types:
            if event_type in self._handlers:
                raise ValueError(f"{self.name} already handles {event_type}")
            self._handlers[event_type] = without_records
            self._batch_handlers[event_type] = handler

    def _handler(self, event_type: str) -> RecordHandler:
        handler = self._handlers.get(event_type, self._every)
        if handler is None:
            raise KeyError(event_type)
        return handler

    def subscribe(
        self,
        broker: KafkaBroker,
        *topics: str,
        batch: bool = True,
        max_records: int = 500,
        batch_timeout_ms: int | None = None,
        backoff: float = 0.5,
        max_backoff: float = 5.0,
        session_timeout_ms: int = 6000,
        fetch_max_wait_ms: int = 10,
    ) -> LogicSubscriber[Any]:
        """Consume ``topics`` on ``broker``; offsets are committed after the database.

        ``batch=True`` hands up to ``max_records`` messages to one transaction;
        ``fetch_max_wait_ms``: how long a fetch may wait for records (10 ms for stages on
        the path of a request; longer for read models that can lag a little);
        ``batch_timeout_ms``: how long the loop waits for records before it sleeps as long
        again (FastStream's batch loop); by default no longer than a fetch may wait, at
        most 25 ms: a stage's event that arrives while the loop sleeps waits out the sleep.
        ``batch=False`` processes (and commits) one message at a time. Without a
        ``dead_letters`` sink, dead letters go to ``dlq_topic`` through ``broker``,
        which must then be built with ``acks="all"``. Returns the FastStream subscriber.
        """
        if not topics:
            raise ValueError("subscribe to at least one topic")
        sink = self._dead_letters or broker_dead_letters(broker, self.dlq_topic)
        options = consumer_options(max_records, session_timeout_ms, fetch_max_wait_ms)
        subscriber = _raw_subscriber(
            broker,
            topics,
            self.name,
            options,
            batch=batch,
            max_records=max_records if batch else None,
            batch_timeout_ms=(
                min(25, fetch_max_wait_ms) if batch_timeout_ms is None else batch_timeout_ms
            ),
            description=f"Idempotent consumer {self.name} (inbox + DLQ)",
        )
        failures = 0

        async def on_message(message: Any) -> None:  # a KafkaMessage: its own body (_itself)
            nonlocal failures
            raw = message.raw_message
            records = raw if isinstance(raw, tuple | list) else (raw,)
            try:
                await self.process([Delivery.of(record) for record in records], sink)
            except Exception as error:
                failures += 1
                delay = min(backoff * 2 ** (failures - 1), max_backoff)
                self.stats.redeliveries += 1
                log.warning(
                    "%s could not finish %d message(s), redelivering in %.1fs: %r",
                    self.name,
                    len(records),
                    delay,
                    error,
                )
                try:
                    _rewind(message, records)  # nothing from this batch is committed
                except Exception as rewind_error:  # partitions revoked meanwhile
                    log.warning("%s could not rewind: %r", self.name, rewind_error)
                await asyncio.sleep(delay)
                return
            failures = 0
            try:
                await message.ack()  # commit the offsets: the database has committed
            except Exception as error:  # a rebalance: the next owner finds them in the inbox
                log.warning("%s could not commit offsets: %r", self.name, error)

        subscriber(on_message)
        return subscriber

    async def process(
        self, deliveries: Sequence[Delivery], dead_letters: DeadLetterSink | None = None
    ) -> BatchReport:
        """Apply a batch; dead letters are published before this returns, or it raises.

        ``dead_letters`` overrides the consumer's sink. Raises :class:`ConsumerUnavailable`
        when the database or the DLQ does not answer; the caller must then not commit
        the batch's offsets.
        """
        report = BatchReport()
        if self._expected:
            await self._until_settled(deliveries)
        good: list[tuple[Envelope, Delivery]] = []
        for delivery in deliveries:
            if self._applied_here and self._came_back(delivery):
                report.duplicates += 1
                continue
            try:
                envelope = self._parse(delivery)
            except _Poison as poison:
                report.dead_letters.append(self._dead(delivery, poison))
                continue
            if envelope is None:
                report.ignored += 1
                continue
            good.append((envelope, delivery))

        if len(good) == 1:
            await self._one(*good[0], report)
        elif good:
            unique: dict[str, tuple[Envelope, Delivery]] = {}
            for received in good:
                unique.setdefault(received[0].event_id, received)  # twice in one batch: once
            report.duplicates += len(good) - len(unique)
            runs = self._runs(list(unique.values()))
            apart = len(runs) > 1 and _apart(runs)
            # no application in two runs: each run commits on its own, all at once
            parts = [[run] for run in runs] if apart else [runs]
            results = await asyncio.gather(
                *(self._apply(part, report) for part in parts), return_exceptions=True
            )
            for part, result in zip(parts, results, strict=True):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                if isinstance(result, BaseException):
                    left = [received for _, run in part for received in run]
                    log.info(
                        "%s: batch of %d failed (%r); one by one", self.name, len(left), result
                    )
                    report.fell_back = True
                    for envelope, delivery in left:  # what did commit, the inbox passes over
                        await self._one(envelope, delivery, report)

        if report.applied and self._on_applied is not None:
            self._on_applied()
        for letter in report.dead_letters:
            await self._send(letter, dead_letters or self._dead_letters)
        self._count(len(deliveries), report)
        return report

    APPLIED_HERE_KEPT = 50_000
    """Events applied by :meth:`apply_here` remembered until the broker brings them (a bound:
    one the broker never brings back, such as a lost log's, is not kept for ever)."""

    EXPECTED_WAIT = 2.0
    """Seconds a delivery waits for :meth:`apply_here` to settle an event it was told to
    expect; then the delivery goes on as if it had not been (the inbox decides)."""

    def applies_here(self, event_type: str) -> bool:
        """Whether :meth:`apply_here` takes events of ``event_type``."""
        return event_type in self._batch_handlers

    def expect_here(self, envelopes: Sequence[Envelope]) -> None:
        """Announce events that :meth:`apply_here` is about to take (they have just committed).

        The relay may publish them, and the broker bring them back, before this process has
        applied them: a delivery of one waits until :meth:`apply_here` has settled it,
        then is passed by if it was applied here, or applied as usual if it was not. Without
        this, each such delivery was parsed and took a transaction of its own to find its
        event already in the inbox, or took it first and left the work here for nothing.
        """
        for envelope in envelopes:
            if envelope.type in self._batch_handlers:
                self._expected[envelope.event_id] = None
        while len(self._expected) > self.APPLIED_HERE_KEPT:  # announced, never settled
            del self._expected[next(iter(self._expected))]

    async def _until_settled(self, deliveries: Sequence[Delivery]) -> None:
        """Wait (at most :attr:`EXPECTED_WAIT`) until none of ``deliveries`` is expected here."""
        ids = [i for d in deliveries if (i := _header(d, "event_id")) is not None]
        if not any(i in self._expected for i in ids):
            return
        self.stats.waited_for_here += 1
        try:
            async with self._settled:
                await asyncio.wait_for(
                    self._settled.wait_for(lambda: not any(i in self._expected for i in ids)),
                    self.EXPECTED_WAIT,
                )
        except TimeoutError:
            # apply_here is stuck or gone: these go the broker's way, and are not waited for again
            for i in ids:
                self._expected.pop(i, None)

    async def _settle(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            self._expected.pop(envelope.event_id, None)
        async with self._settled:
            self._settled.notify_all()

    async def apply_here(self, envelopes: Sequence[Envelope]) -> int:
        """Apply events this process itself has just committed, without waiting for the broker
        to bring them back; returns how many were applied.

        The same handlers, in one transaction with the events' inbox records, as for the
        broker's delivery: whichever of the two comes first applies an event, the other
        finds it taken. Types :meth:`applies_here` does not take pass by. Nothing is retried
        or dead-lettered here: if the transaction fails, nothing of it happened, and the
        broker's delivery applies the events as it would have without this.
        """
        try:
            return await self._apply_here(envelopes)
        finally:
            await self._settle(envelopes)

    async def _apply_here(self, envelopes: Sequence[Envelope]) -> int:
        todo = list(
            {
                e.event_id: e
                for e in envelopes
                if e.type in self._batch_handlers and e.event_id not in self._applied_here
            }.values()
        )
        if not todo:
            return 0
        runs = _grouped(todo, lambda e: self._batch_handlers[e.type], lambda e: e.aggregate_id)
        try:
            async with self.store.transaction() as uow:
                claimed = await uow.record_inbox_many(
                    self.name, [e.event_id for _, run in runs for e in run]
                )
                for handler, run in runs:
                    mine = [e for e in run if e.event_id in claimed]
                    if mine:
                        await handler(uow, mine)
        except Exception as error:  # the broker's delivery applies them
            log.info("%s: events left to the broker's delivery (%r)", self.name, error)
            self.stats.left_to_broker += len(todo)
            return 0
        for event_id in claimed:
            self._applied_here[event_id] = None
        while len(self._applied_here) > self.APPLIED_HERE_KEPT:
            del self._applied_here[next(iter(self._applied_here))]
        self.stats.applied += len(claimed)
        self.stats.applied_here += len(claimed)
        if claimed and self._on_applied is not None:
            self._on_applied()
        return len(claimed)

    def _came_back(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` is the broker's copy of an event :meth:`apply_here` applied
        (and committed): a duplicate, known by its ``event_id`` header without parsing it or
        asking the database, as a ``type`` header no handler wants is passed by unparsed.
        Each is forgotten as it comes by; a redelivery of it is parsed and asks the inbox."""
        for name, value in delivery.headers:
            if name == "event_id":
                event_id = value.decode("utf-8", "replace")
                if event_id in self._applied_here:
                    del self._applied_here[event_id]
                    return True
                return False
        return False

    async def _apply(self, runs: list[_Run], report: BatchReport) -> None:
        """``runs`` in one transaction, with their events' inbox records."""
        report.transactions += 1
        applied = duplicates = 0
        async with self.store.transaction() as uow:
            claimed = await uow.record_inbox_many(
                self.name, [envelope.event_id for _, run in runs for envelope, _ in run]
            )
            for handler, run in runs:
                todo = [received for received in run if received[0].event_id in claimed]
                duplicates += len(run) - len(todo)
                if todo:
                    await handler(uow, todo)
                applied += len(todo)
        report.applied += applied
        report.duplicates += duplicates

    def _runs(self, todo: list[tuple[Envelope, Delivery]]) -> list[_Run]:
        """A batch's events by handler (see :func:`_grouped`)."""
        return _grouped(todo, lambda r: self._handler(r[0].type), lambda r: r[0].aggregate_id)

    async def _one(self, envelope: Envelope, delivery: Delivery, report: BatchReport) -> None:
        last: Exception | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                report.transactions += 1
                async with self.store.transaction() as uow:
                    if not await uow.record_inbox(self.name, envelope.event_id):
                        report.duplicates += 1
                        return
                    await self._handler(envelope.type)(uow, [(envelope, delivery)])
                report.applied += 1
                return
            except Exception as error:
                last = error
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_delay * attempt)
        assert last is not None
        if _is_transient(last) or not await self._database_answers():
            raise ConsumerUnavailable(
                f"{self.name} cannot reach its database ({last!r}); {envelope.event_id} comes again"
            ) from last
        log.warning("%s gives up on %s: %r", self.name, envelope.event_id, last)
        report.dead_letters.append(
            DeadLetter(
                delivery,
                self.name,
                PoisonKind.HANDLER_FAILED,
                f"{envelope.type} handler failed {self.max_attempts} times: "
                f"{type(last).__name__}: {last}",
                envelope.event_id,
            )
        )

    async def _database_answers(self) -> bool:
        try:
            async with self.store.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    def _parse(self, delivery: Delivery) -> Envelope | None:
        if self.ignore_unknown and self._passes_by(delivery):
            return None
        try:
            document = json.loads(delivery.value)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise _Poison(PoisonKind.INVALID, f"not JSON: {error}") from error
        if not isinstance(document, dict):
            raise _Poison(PoisonKind.INVALID, "not an event envelope: not a JSON object")
        event_id = document.get("event_id")
        event_id = event_id if isinstance(event_id, str) and event_id else None
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
            raise _Poison(
                PoisonKind.TAMPERED,
                f"content does not match its hash (claims {envelope.hash[:12]}…,"
                f" content hashes to {expected[:12]}…)",
                envelope.event_id,
            )
        if envelope.compute_hash() != envelope.hash:
            raise _Poison(
                PoisonKind.INVALID,
                "envelope is not in its published form (e.g. occurred_at not UTC with Z)",
                envelope.event_id,
            )
        if envelope.type not in self._handlers and self._every is None:
            if self.ignore_unknown:
                return None
            raise _Poison(
                PoisonKind.UNKNOWN_TYPE,
                f"{self.name} has no handler for {envelope.type}",
                envelope.event_id,
            )
        return envelope

    def _passes_by(self, delivery: Delivery) -> bool:
        """An event its ``type`` header says no handler here wants: a consumer that ignores
        such events need not parse and hash it (the topic carries every event of a
        programme; a stage wants a few). Without the header, the body decides."""
        if self._every is not None:
            return False
        for name, value in delivery.headers:
            if name == "type":
                return value.decode("utf-8", "replace") not in self._handlers
        return False

    def _dead(self, delivery: Delivery, poison: _Poison) -> DeadLetter:
        return DeadLetter(delivery, self.name, poison.kind, str(poison), poison.event_id)

    async def _send(self, letter: DeadLetter, sink: DeadLetterSink | None) -> None:
        if sink is None:
            raise RuntimeError(f"{self.name} has nowhere to send dead letters")
        log.warning(
            "%s: dead letter (%s) from %s[%d]@%d: %s",
            self.name,
            letter.kind,
            letter.delivery.topic,
            letter.delivery.partition,
            letter.delivery.offset,
            letter.reason,
        )
        try:
            await sink(letter)
        except Exception as error:
            raise ConsumerUnavailable(
                f"{self.name} cannot publish a dead letter: {error!r}"
            ) from error

    def _count(self, size: int, report: BatchReport) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += size
        stats.applied += report.applied
        stats.duplicates += report.duplicates
        stats.ignored += report.ignored
        stats.dead_lettered += len(report.dead_letters)
        stats.fallbacks += report.fell_back
        stats.transactions += report.transactions
        stats.largest_batch = max(stats.largest_batch, size)


def subscribe_records(
    broker: KafkaBroker,
    *topics: str,
    group_id: str,
    handle: Callable[[Sequence[Delivery]], Awaitable[None]],
    max_records: int = 500,
    session_timeout_ms: int = 6000,
    fetch_max_wait_ms: int = 100,
    backoff: float = 1.0,
) -> LogicSubscriber[Any]:
    """Hand the records of ``topics`` to ``handle`` in batches, raw; commit their offsets
    only once ``handle`` returned. For messages that are not event envelopes (signed
    checkpoints), whose handler must itself ignore what it had before."""
    options = consumer_options(max_records, session_timeout_ms, fetch_max_wait_ms)
    subscriber = _raw_subscriber(
        broker,
        topics,
        group_id,
        options,
        batch=True,
        max_records=max_records,
        batch_timeout_ms=25,
        description=f"Raw records for {group_id}",
    )

    async def on_message(message: Any) -> None:  # a KafkaMessage: its own body (_itself)
        raw = message.raw_message
        records = raw if isinstance(raw, tuple | list) else (raw,)
        try:
            await handle([Delivery.of(record) for record in records])
        except Exception as error:
            log.warning(
                "%s could not take %d record(s), again in %.1fs: %r",
                group_id,
                len(records),
                backoff,
                error,
            )
            with contextlib.suppress(Exception):
                _rewind(message, records)
            await asyncio.sleep(backoff)
            return
        with contextlib.suppress(Exception):  # a rebalance: the next owner takes them again
            await message.ack()

    subscriber(on_message)
    return subscriber


def _raw_subscriber(
    broker: KafkaBroker,
    topics: Sequence[str],
    group_id: str,
    options: dict[str, Any],
    *,
    batch: bool,
    max_records: int | None,
    batch_timeout_ms: int,
    description: str,
) -> LogicSubscriber[Any]:
    """A subscriber in ``group_id`` whose offsets are committed by hand, handed the records
    as they came (bodies undecoded, headers as bytes)."""
    subscriber: LogicSubscriber[Any] = broker.subscriber(
        *topics,
        batch=batch,
        group_id=group_id,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,
        max_records=max_records,
        batch_timeout_ms=batch_timeout_ms,
        auto_offset_reset=options["auto_offset_reset"],
        fetch_max_wait_ms=options["fetch_max_wait_ms"],
        max_poll_records=options["max_poll_records"],
        session_timeout_ms=options["session_timeout_ms"],
        heartbeat_interval_ms=options["heartbeat_interval_ms"],
        parser=_tolerant_parser,
        decoder=_itself,
        title=group_id,
        description=description,
    )
    return subscriber


def broker_dead_letters(broker: KafkaBroker, topic: str = DLQ_TOPIC) -> DeadLetterSink:
    """Publish dead letters on ``broker``, waiting for the broker's acknowledgement.

    The broker's producer must be built with ``acks="all"`` (and, on Tansu,
    ``enable_idempotence=False``): a dead letter is the only copy once its offset
    is committed.
    """
    acks = getattr(broker, "_connection_kwargs", {}).get("acks", "all")
    if acks not in ("all", -1):
        raise ValueError(
            "dead letters need acks='all': build the broker as "
            "KafkaBroker(..., acks='all', enable_idempotence=False)"
        )

    async def send(letter: DeadLetter) -> None:
        await broker.publish(
            letter.delivery.value,
            topic=topic,
            key=letter.delivery.key,
            headers=letter.headers(),
        )

    return send


def _rewind(message: KafkaMessage, records: Sequence[Any]) -> None:
    """Seek each partition back to its earliest record in ``records``: they come again."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offset = earliest.get(partition)
        if offset is None or record.offset < offset:
            earliest[partition] = record.offset
    for partition, offset in earliest.items():
        message.consumer.seek(partition=partition, offset=offset)


async def _tolerant_parser(message: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    """FastStream's parser, retried without the headers it cannot decode (non-UTF-8, null)."""
    try:
        return await original(message)
    except Exception:
        if isinstance(message, tuple | list):
            return await original(type(message)(_decodable_headers(r) for r in message))
        return await original(_decodable_headers(message))


def _decodable_headers(record: Any) -> Any:
    kept = []
    for key, value in record.headers or ():
        if isinstance(value, bytes):
            try:
                value.decode()
            except UnicodeDecodeError:
                continue
            kept.append((key, value))
    return dataclasses.replace(record, headers=tuple(kept))


async def _itself(message: Any) -> Any:
    """The message as its own body, handed to the handler as its argument.

    The consumer parses and validates the records itself. Taken from FastStream's context
    instead (a ``KafkaMessage`` parameter), the message was resolved in a worker thread,
    since that lookup is synchronous: a thread hop for every batch consumed.
    """
    return message


def _is_transient(error: BaseException) -> bool:
    """A lost connection or an overloaded or shutting-down server, not the message's fault."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError | sa_exc.DisconnectionError):
            return True
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(("08", "53", "57P")):
            return True
        if "database is locked" in str(current):
            return True
        for cause in (current.__cause__, getattr(current, "orig", None)):
            if isinstance(cause, BaseException):
                pending.append(cause)
    return False
