"""shared.consumer against the real broker, on PostgreSQL and SQLite.

Each test gets its own topics (created explicitly) and consumer group. The
handler's effect is a row written through the unit of work, in the inbox's
transaction, so counting rows counts applications.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from faststream.kafka import KafkaBroker

from shared.consumer import (
    DeadLetter,
    Delivery,
    IdempotentConsumer,
    PoisonKind,
    broker_dead_letters,
)
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.dlq import list_letters, redrive
from shared.eventstore import EventStore, UnitOfWork, inbox
from shared.kit.stages import OnCommit
from shared.topics import TopicSpec, ensure_topics

SUBMITTED = "voucher.application.submitted"
ACTOR = Actor(sub="officer-1", role=Role.OFFICER)
SESSION_MS = 1500  # Tansu makes a joining member wait about half of it (1 s at least)

effects = sa.Table(
    "consumer_effects",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
)


def chain(aggregate: str, count: int, event_type: str = SUBMITTED) -> list[Envelope]:
    """``count`` linked events of one application, as the producing service seals them."""
    sealed: list[Envelope] = []
    prev = GENESIS_HASH
    for seq in range(1, count + 1):
        envelope = Envelope.seal(
            aggregate_id=aggregate,
            aggregate_seq=seq,
            event=NewEvent(type=event_type, payload={"seq": seq}),
            occurred_at=datetime.now(UTC),
            actor=ACTOR,
            firm_id="firm-1",
            correlation_id=f"corr-{aggregate}",
            causation_id=None,
            prev_hash=prev,
        )
        sealed.append(envelope)
        prev = envelope.hash
    return sealed


Headers = list[tuple[str, bytes]]


def message(envelope: Envelope) -> tuple[bytes, bytes]:
    """(key, value) as the relay publishes it."""
    return envelope.aggregate_id.encode(), json.dumps(envelope.to_json_dict()).encode()


def relayed(envelope: Envelope) -> tuple[bytes, bytes, Headers]:
    """(key, value, headers) as the relay publishes it, with the headers it routes on."""
    headers = [("type", envelope.type.encode()), ("event_id", envelope.event_id.encode())]
    return (*message(envelope), headers)


def _headers(message: tuple[bytes | None, bytes] | tuple[bytes, bytes, Headers]) -> Headers | None:
    return message[2] if len(message) == 3 else None


async def record_effect(uow: UnitOfWork, envelope: Envelope) -> None:
    await uow.connection.execute(effects.insert().values(event_id=envelope.event_id))


async def record_all(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
    """A batch's effects in one statement."""
    await uow.connection.execute(effects.insert(), [{"event_id": e.event_id} for e in envelopes])


async def until(check: Callable[[], Awaitable[bool]], within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.03)
    raise AssertionError("condition not met in time")


@dataclass
class Rig:
    store: EventStore
    bootstrap: str
    topic: str
    """Three partitions."""
    single: str
    """One partition, for tests about offsets."""
    dlq: str
    group: str

    async def publish(
        self,
        messages: Sequence[tuple[bytes | None, bytes] | tuple[bytes, bytes, Headers]],
        topic: str | None = None,
        *,
        together: bool = False,
    ) -> list[int]:
        """Publish in order with acks=all; returns the offsets.

        ``together`` sends them as one produce request, so a consumer fetches them as one batch.
        """
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=200 if together else 0
        )
        await producer.start()
        try:
            if together:
                pending = [
                    await producer.send(topic or self.topic, m[1], key=m[0], headers=_headers(m))
                    for m in messages
                ]
                return [(await sent).offset for sent in pending]
            offsets = []
            for m in messages:
                sent = await producer.send_and_wait(
                    topic or self.topic, m[1], key=m[0], headers=_headers(m)
                )
                offsets.append(sent.offset)
            return offsets
        finally:
            await producer.stop()

    async def applied(self) -> list[str]:
        async with self.store.engine.connect() as connection:
            rows = await connection.execute(sa.select(effects.c.event_id).order_by(effects.c.n))
            return [row.event_id for row in rows]

    async def inbox_count(self) -> int:
        async with self.store.engine.connect() as connection:
            count = await connection.scalar(
                sa.select(sa.func.count()).where(inbox.c.consumer == self.group)
            )
            return int(count or 0)

    def consumer(self, **options: Any) -> IdempotentConsumer:
        options.setdefault("retry_delay", 0.01)
        options.setdefault("dlq_topic", self.dlq)
        return IdempotentConsumer(self.group, self.store, **options)

    @asynccontextmanager
    async def running(
        self, consumer: IdempotentConsumer, *, topic: str | None = None, **subscribe: Any
    ) -> AsyncIterator[KafkaBroker]:
        broker = KafkaBroker(self.bootstrap, acks="all", enable_idempotence=False)
        subscribe.setdefault("session_timeout_ms", SESSION_MS)
        consumer.subscribe(broker, topic or self.topic, **subscribe)
        await broker.start()
        try:
            yield broker
        finally:
            await broker.stop()

    async def dead_letters(self, count: int, within: float = 15) -> list[ConsumerRecord[Any, Any]]:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
        )
        await reader.start()
        reader.assign([TopicPartition(self.dlq, 0)])
        found: list[ConsumerRecord[Any, Any]] = []
        try:
            deadline = time.monotonic() + within
            while len(found) < count and time.monotonic() < deadline:
                for records in (await reader.getmany(timeout_ms=100)).values():
                    found.extend(records)
            if len(found) == count:  # make sure nothing more is coming
                for records in (await reader.getmany(timeout_ms=300)).values():
                    found.extend(records)
        finally:
            await reader.stop()
        return found

    async def committed(self, topic: str) -> dict[int, int]:
        """The group's committed offsets on ``topic``, by partition (read without joining)."""
        partitions = 1 if topic == self.single else 3
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False
        )
        await reader.start()
        try:
            found = {}
            for partition in range(partitions):
                offset = await reader.committed(TopicPartition(topic, partition))
                if offset is not None:
                    found[partition] = offset
            return found
        finally:
            await reader.stop()


@pytest.fixture
async def rig(store: EventStore, kafka_bootstrap: str, unique_name: Callable[[str], str]) -> Rig:
    async with store.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    topic, single, dlq = unique_name("events"), unique_name("single"), unique_name("dlq")
    await ensure_topics(
        kafka_bootstrap, [TopicSpec(topic, 3), TopicSpec(single, 1), TopicSpec(dlq, 1)]
    )
    return Rig(store, kafka_bootstrap, topic, single, dlq, unique_name("group"))


MODES = pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])


def headers_of(record: ConsumerRecord[Any, Any]) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers}


@MODES
async def test_each_event_is_applied_once_and_a_redelivery_changes_nothing(
    rig: Rig, batch: bool
) -> None:
    events = [e for app in ("app-a", "app-b", "app-c") for e in chain(app, 10)]
    await rig.publish([message(e) for e in events])
    consumer = rig.consumer()
    consumer.handles(SUBMITTED)(record_effect)
    async with rig.running(consumer, batch=batch):

        async def all_applied() -> bool:
            return consumer.stats.applied == len(events)

        await until(all_applied)
        await rig.publish([message(e) for e in events])  # a relay that sent everything again

        async def all_seen_twice() -> bool:
            return consumer.stats.duplicates == len(events)

        await until(all_seen_twice)
    applied = await rig.applied()
    assert sorted(applied) == sorted(e.event_id for e in events)
    assert await rig.inbox_count() == len(events)
    assert consumer.stats.applied == len(events)
    assert consumer.stats.dead_lettered == 0


@MODES
async def test_poison_of_each_kind_goes_to_the_dlq_and_the_next_message_is_processed(
    rig: Rig, batch: bool
) -> None:
    good = chain("app-1", 5)
    tampered = json.dumps({**chain("app-2", 1)[0].to_json_dict(), "payload": {"seq": 99}})
    unknown = chain("app-3", 1, "voucher.provider.registered")[0]
    failing = chain("app-4", 1)[0]
    poison: list[tuple[PoisonKind, bytes | None, bytes]] = [
        (PoisonKind.INVALID, b"k-junk", b"\xff\xfe this is not JSON"),
        (PoisonKind.INVALID, None, json.dumps({"hello": "world"}).encode()),
        (PoisonKind.TAMPERED, b"app-2", tampered.encode()),
        (PoisonKind.UNKNOWN_TYPE, *message(unknown)),
        (PoisonKind.HANDLER_FAILED, *message(failing)),
    ]
    sequence: list[tuple[bytes | None, bytes]] = []
    for (_, key, value), next_good in zip(poison, good, strict=True):
        sequence += [(key, value), message(next_good)]
    offsets = await rig.publish(sequence, rig.single)

    consumer = rig.consumer(max_attempts=2)
    tries: list[str] = []

    @consumer.handles(SUBMITTED)
    async def verify(uow: UnitOfWork, envelope: Envelope) -> None:
        tries.append(envelope.event_id)
        await record_effect(uow, envelope)
        if envelope.event_id == failing.event_id:
            raise ValueError("firm is not located in a cluster site")

    async with rig.running(consumer, topic=rig.single, batch=batch):
        letters = await rig.dead_letters(len(poison))

        async def goods_applied() -> bool:
            return consumer.stats.applied == len(good)

        await until(goods_applied)

    assert sorted(await rig.applied()) == sorted(e.event_id for e in good)
    assert len(letters) == len(poison)
    for (kind, key, value), offset, letter in zip(poison, offsets[::2], letters, strict=True):
        headers = headers_of(letter)
        assert letter.value == value and letter.key == key  # the original bytes
        assert headers["error_kind"] == kind
        assert headers["reason"]
        assert headers["consumer"] == rig.group
        assert headers["source_topic"] == rig.single
        assert headers["source_partition"] == "0"
        assert headers["source_offset"] == str(offset)
        if kind in (PoisonKind.TAMPERED, PoisonKind.UNKNOWN_TYPE, PoisonKind.HANDLER_FAILED):
            assert headers["event_id"] == json.loads(value)["event_id"]
    handler_failed = headers_of(letters[-1])
    assert "not located in a cluster site" in handler_failed["reason"]
    assert tries.count(failing.event_id) >= 2  # every try rolled back: no effect above
    assert await rig.committed(rig.single) == {0: len(sequence)}


@MODES
async def test_a_handler_that_fails_once_then_succeeds_applies_its_effect_once(
    rig: Rig, batch: bool
) -> None:
    events = chain("app-1", 6) + chain("app-2", 6)
    await rig.publish([message(e) for e in events])
    consumer = rig.consumer()
    failed: set[str] = set()

    @consumer.handles(SUBMITTED)
    async def flaky(uow: UnitOfWork, envelope: Envelope) -> None:
        await record_effect(uow, envelope)  # written, then rolled back with the failure
        if envelope.event_id not in failed:
            failed.add(envelope.event_id)
            raise ConnectionResetError("the ledger service hung up")

    async with rig.running(consumer, batch=batch):

        async def done() -> bool:
            return consumer.stats.applied == len(events)

        await until(done)
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)
    assert consumer.stats.dead_lettered == 0


@MODES
async def test_offsets_are_committed_only_after_the_database_commits(rig: Rig, batch: bool) -> None:
    first, held, last = chain("app-1", 3)
    await rig.publish([message(e) for e in (first, held, last)], rig.single)
    consumer = rig.consumer()
    inside, release = asyncio.Event(), asyncio.Event()

    @consumer.handles(SUBMITTED)
    async def slow(uow: UnitOfWork, envelope: Envelope) -> None:
        await record_effect(uow, envelope)
        if envelope.event_id == held.event_id:
            inside.set()
            await release.wait()  # the transaction is open, not committed

    async with rig.running(consumer, topic=rig.single, batch=batch):
        await asyncio.wait_for(inside.wait(), 20)
        await asyncio.sleep(0.3)  # time for a wrong early commit to show
        # nothing at or past the open transaction is committed; single mode committed the first
        committed = await rig.committed(rig.single)
        assert committed.get(0, 0) <= 1
        if not batch:
            assert committed == {0: 1}
        release.set()

        async def all_committed() -> bool:
            return await rig.committed(rig.single) == {0: 3}

        await until(all_committed)
    assert await rig.applied() == [first.event_id, held.event_id, last.event_id]


async def test_a_consumer_stopped_midway_and_restarted_applies_every_event_once(
    rig: Rig,
) -> None:
    events = [e for app in ("app-a", "app-b", "app-c", "app-d") for e in chain(app, 60)]
    await rig.publish([message(e) for e in events])

    async def steady(uow: UnitOfWork, envelope: Envelope) -> None:
        await record_effect(uow, envelope)
        await asyncio.sleep(0.002)

    first = rig.consumer()
    first.handles(SUBMITTED)(steady)
    async with rig.running(first, max_records=20):

        async def some() -> bool:
            return first.stats.applied >= 40

        await until(some)
    stopped_at = len(await rig.applied())
    assert stopped_at < len(events), "stopped too late to prove anything"

    second = rig.consumer()
    second.handles(SUBMITTED)(steady)
    async with rig.running(second, max_records=20):

        async def rest() -> bool:
            return len(await rig.applied()) >= len(events)

        await until(rest)
        await asyncio.sleep(0.2)
    applied = await rig.applied()
    assert sorted(applied) == sorted(e.event_id for e in events)  # each exactly once
    assert second.stats.duplicates <= 20  # at most the batch in flight when it stopped
    assert sum((await rig.committed(rig.topic)).values()) == len(events)


async def test_a_batch_shares_one_transaction_and_a_bad_message_does_not_block_the_rest(
    rig: Rig,
) -> None:
    first_wave = chain("app-a", 50) + chain("app-b", 50)
    await rig.publish([message(e) for e in first_wave], rig.single)
    consumer = rig.consumer(max_attempts=2)
    transactions: dict[int, int] = {}
    keep: list[UnitOfWork] = []
    failing = chain("app-x", 1)[0]

    @consumer.handles(SUBMITTED)
    async def count(uow: UnitOfWork, envelope: Envelope) -> None:
        keep.append(uow)  # keeps ids unique
        transactions[id(uow)] = transactions.get(id(uow), 0) + 1
        await record_effect(uow, envelope)
        if envelope.event_id == failing.event_id:
            raise RuntimeError("this one is broken")

    async with rig.running(consumer, topic=rig.single, batch=True, max_records=500):

        async def first_done() -> bool:
            return consumer.stats.applied == len(first_wave)

        await until(first_done)
        assert consumer.stats.fallbacks == 0
        assert max(transactions.values()) >= 10  # many messages, one transaction
        transactions.clear()

        second_wave = [*chain("app-c", 10), failing, *chain("app-d", 10)]
        await rig.publish([message(e) for e in second_wave], rig.single, together=True)
        letters = await rig.dead_letters(1)

        async def second_done() -> bool:
            return consumer.stats.applied == len(first_wave) + len(second_wave) - 1

        await until(second_done)

    expected = [e.event_id for e in first_wave + second_wave if e is not failing]
    assert sorted(await rig.applied()) == sorted(expected)
    assert consumer.stats.fallbacks == 1  # the batch with the bad message, rolled back
    assert consumer.stats.dead_lettered == 1
    [letter] = letters
    assert headers_of(letter)["error_kind"] == PoisonKind.HANDLER_FAILED
    assert headers_of(letter)["event_id"] == failing.event_id


@MODES
async def test_a_dead_letter_that_cannot_be_published_is_not_committed(
    rig: Rig, batch: bool
) -> None:
    good = chain("app-1", 1)[0]
    await rig.publish([(b"k", b"not json"), message(good)], rig.single)
    attempts: list[int] = []
    reachable = asyncio.Event()
    delivered: list[DeadLetter] = []

    async def flaky_dlq(letter: DeadLetter) -> None:
        attempts.append(letter.delivery.offset)
        if not reachable.is_set():
            raise ConnectionError("DLQ broker away")
        delivered.append(letter)

    consumer = rig.consumer(dead_letters=flaky_dlq)
    consumer.handles(SUBMITTED)(record_effect)
    async with rig.running(consumer, topic=rig.single, batch=batch, backoff=0.05):

        async def retried() -> bool:
            return len(attempts) >= 3

        await until(retried)
        assert await rig.committed(rig.single) == {}  # nothing moved past the poison
        reachable.set()

        async def committed() -> bool:
            return await rig.committed(rig.single) == {0: 2}

        await until(committed)
    assert set(attempts) == {0}
    assert [letter.delivery.offset for letter in delivered] == [0]
    assert await rig.applied() == [good.event_id]  # redelivered, applied once
    assert consumer.stats.redeliveries >= 3


def test_the_dlq_needs_a_broker_that_waits_for_all_replicas() -> None:
    with pytest.raises(ValueError, match="acks='all'"):
        broker_dead_letters(KafkaBroker("localhost:9092", acks=1))


async def test_a_dead_letter_redriven_once_fixed_is_applied_once_however_often_redriven(
    rig: Rig,
) -> None:
    """`incentives dlq redrive`: the letter goes back to its topic with its headers; the
    consumer that gave up applies it once its cause is fixed (the others of the topic find
    it in their inbox), and a second re-drive sends nothing."""
    events = chain("app-r", 3)
    broken = {events[1].event_id}
    consumer = rig.consumer(max_attempts=2)

    @consumer.handles(SUBMITTED)
    async def apply(uow: UnitOfWork, envelope: Envelope) -> None:
        if envelope.event_id in broken:
            raise RuntimeError("a bug, since fixed")
        await record_effect(uow, envelope)

    headers = [("type", SUBMITTED.encode()), ("position", b"7")]
    producer = AIOKafkaProducer(bootstrap_servers=rig.bootstrap, acks="all")
    await producer.start()
    try:
        for event in events:
            key, value = message(event)
            await producer.send_and_wait(rig.topic, value, key=key, headers=headers)
    finally:
        await producer.stop()
    async with rig.running(consumer):
        [letter] = await rig.dead_letters(1)
        assert headers_of(letter)["source:position"] == "7"
        listed = await list_letters(rig.bootstrap, rig.dlq)
        assert [(x.consumer, x.event_id) for x in listed] == [(rig.group, events[1].event_id)]

        broken.clear()  # the fix is deployed
        [sent] = await redrive(rig.bootstrap, rig.dlq, group=rig.group + "-redrive")
        assert sent.event_id == events[1].event_id

        async def all_applied() -> bool:
            return sorted(await rig.applied()) == sorted(e.event_id for e in events)

        await until(all_applied)
        assert await redrive(rig.bootstrap, rig.dlq, group=rig.group + "-redrive") == []
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)  # each once


# --- events this process committed, applied before the broker brings them back ----------


def delivery_of(envelope: Envelope, topic: str, offset: int) -> Delivery:
    key, value, headers = relayed(envelope)
    return Delivery(topic, 0, offset, key, value, tuple(headers))


@MODES
async def test_events_applied_here_are_passed_by_when_the_broker_brings_them(
    rig: Rig, batch: bool
) -> None:
    events = [e for app in ("app-a", "app-b") for e in chain(app, 5)]
    consumer = rig.consumer()
    consumer.handles(SUBMITTED)(record_effect)
    assert await consumer.apply_here(events) == len(events)
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)

    await rig.publish([relayed(e) for e in events])  # the relay publishes them afterwards
    async with rig.running(consumer, batch=batch):

        async def delivery_came_by() -> bool:
            return consumer.stats.duplicates == len(events)

        await until(delivery_came_by)
        assert consumer.stats.transactions == 0  # known here: the database was not asked
        await rig.publish([relayed(e) for e in events])  # and once more: the inbox says so

        async def redelivery_came_by() -> bool:
            return consumer.stats.duplicates == 2 * len(events)

        await until(redelivery_came_by)
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)
    assert await rig.inbox_count() == len(events)
    assert consumer.stats.applied == consumer.stats.applied_here == len(events)
    assert consumer.stats.transactions > 0


async def test_applying_here_events_of_no_handler_here_claims_nothing(rig: Rig) -> None:
    consumer = rig.consumer()
    consumer.handles(SUBMITTED)(record_effect)
    others = chain("app-a", 3, event_type="voucher.application.verified")
    assert not consumer.applies_here("voucher.application.verified")
    assert await consumer.apply_here(others) == 0
    assert await rig.inbox_count() == 0


async def test_what_failed_here_the_broker_delivery_applies_once(rig: Rig) -> None:
    failing = {"left": 1}

    async def flaky(uow: UnitOfWork, envelope: Envelope) -> None:
        await record_effect(uow, envelope)
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("the database said no, this once")

    events = chain("app-a", 4)
    consumer = rig.consumer()
    consumer.handles(SUBMITTED)(flaky)
    assert await consumer.apply_here(events) == 0  # rolled back whole: nothing claimed
    assert await rig.applied() == []
    assert await rig.inbox_count() == 0
    assert consumer.stats.left_to_broker == len(events)  # what the metric shows an operator

    await rig.publish([message(e) for e in events])
    async with rig.running(consumer):

        async def applied() -> bool:
            return consumer.stats.applied == len(events)

        await until(applied)
    assert await rig.applied() == [e.event_id for e in events]
    assert consumer.stats.applied_here == 0


async def test_a_burst_beyond_the_backlog_is_left_to_the_broker_and_counted(rig: Rig) -> None:
    """The stage here takes at most ``backlog`` waiting events; a burst beyond it goes by the
    broker's delivery alone, and the consumer's stats say how much did."""
    consumer = rig.consumer()
    consumer.handles_batch(SUBMITTED)(record_all)
    on_commit = OnCommit(consumer, backlog=6, batch=4)
    first, burst = chain("app-a", 5), chain("app-b", 3)
    on_commit.committed(first)
    on_commit.committed(burst)  # 5 + 3 > 6: left whole to the broker
    assert consumer.stats.left_to_broker == len(burst)
    running = asyncio.create_task(on_commit.run())
    try:

        async def taken() -> bool:
            return consumer.stats.applied_here == len(first)

        await until(taken)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert sorted(await rig.applied()) == sorted(e.event_id for e in first)

    await rig.publish([relayed(e) for e in first + burst])
    async with rig.running(consumer):

        async def delivered() -> bool:
            return consumer.stats.applied == len(first) + len(burst)

        await until(delivered)
    assert sorted(await rig.applied()) == sorted(e.event_id for e in first + burst)
    assert consumer.stats.applied_here == len(first)


async def test_a_delivery_that_overtakes_the_stage_here_waits_and_is_passed_by(rig: Rig) -> None:
    """The relay published events that committed here, and the broker brought them back,
    before the stage here applied them: the delivery waits for the stage, then passes them
    by, without parsing them or asking the database."""
    consumer = rig.consumer()
    consumer.handles_batch(SUBMITTED)(record_all)
    events = chain("app-a", 4)
    consumer.expect_here(events)  # committed: OnCommit hands them to apply_here
    deliveries = [delivery_of(e, rig.topic, i) for i, e in enumerate(events)]
    delivered = asyncio.create_task(consumer.process(deliveries))
    await asyncio.sleep(0.2)
    assert not delivered.done()  # waiting for the stage here
    assert await consumer.apply_here(events) == len(events)
    report = await asyncio.wait_for(delivered, 10)
    assert (report.applied, report.duplicates, report.transactions) == (0, len(events), 0)
    assert consumer.stats.waited_for_here == 1
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)
    assert await rig.inbox_count() == len(events)


async def test_a_waiting_delivery_applies_what_failed_here(rig: Rig) -> None:
    failing = {"left": 1}

    async def flaky(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
        await record_all(uow, envelopes)
        if failing["left"]:
            failing["left"] -= 1
            raise RuntimeError("the database said no, this once")

    consumer = rig.consumer()
    consumer.handles_batch(SUBMITTED)(flaky)
    events = chain("app-a", 3)
    consumer.expect_here(events)
    delivered = asyncio.create_task(
        consumer.process([delivery_of(e, rig.topic, i) for i, e in enumerate(events)])
    )
    await asyncio.sleep(0.1)
    assert await consumer.apply_here(events) == 0  # rolled back: nothing happened here
    report = await asyncio.wait_for(delivered, 10)
    assert report.applied == len(events)
    assert await rig.applied() == [e.event_id for e in events]  # once each, by the delivery
    assert consumer.stats.applied_here == 0


async def test_an_event_expected_here_that_never_comes_is_applied_by_the_delivery(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the stage here never takes what it was told to expect (its task died), a delivery
    waits :attr:`~IdempotentConsumer.EXPECTED_WAIT`, then applies the events as usual; a
    redelivery of them does not wait again."""
    monkeypatch.setattr(IdempotentConsumer, "EXPECTED_WAIT", 0.3)
    consumer = rig.consumer()
    consumer.handles_batch(SUBMITTED)(record_all)
    events = chain("app-a", 3)
    consumer.expect_here(events)
    deliveries = [delivery_of(e, rig.topic, i) for i, e in enumerate(events)]
    report = await asyncio.wait_for(consumer.process(deliveries), 10)
    assert report.applied == len(events)
    assert await rig.applied() == [e.event_id for e in events]
    again = await asyncio.wait_for(consumer.process(deliveries), 10)
    assert again.duplicates == len(events)
    assert consumer.stats.waited_for_here == 1


async def test_applied_here_and_delivered_at_the_same_moment_each_event_applies_once(
    rig: Rig,
) -> None:
    """The stage of the process that committed the events, and the broker's delivery of them
    (a replica's, or this process's own catching up), take the same events at once, in
    opposite orders. Each event is applied once, by one of the two; the other passes it by."""
    consumer = rig.consumer()
    consumer.handles_batch(SUBMITTED)(record_all)
    other = rig.consumer()  # the same group: another process of the same service
    other.handles_batch(SUBMITTED)(record_all)
    applied: list[str] = []
    for round_ in range(8):
        events = [e for n in range(6) for e in chain(f"app-{round_}-{n}", 4)]
        deliveries = [delivery_of(e, rig.topic, i) for i, e in enumerate(reversed(events))]
        here, report = await asyncio.wait_for(
            asyncio.gather(consumer.apply_here(events), other.process(deliveries)), 30
        )
        applied += [e.event_id for e in events]
        assert here + report.applied == len(events)
        assert report.duplicates == len(events) - report.applied
        assert report.dead_letters == []
    assert sorted(await rig.applied()) == sorted(applied)
    assert await rig.inbox_count() == len(applied)
