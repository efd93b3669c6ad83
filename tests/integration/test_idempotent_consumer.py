"""Idempotent consumers against the real broker and both databases."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker

from shared.consumer import IdempotentConsumer, broker_dead_letters
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.eventstore import EventStore, UnitOfWork
from shared.topics import TopicSpec, ensure_topics

effects = sa.Table(
    "effects",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
)
ACTOR = Actor(sub="test", role=Role.SYSTEM)


def envelope(
    event_type: str = "test.thing.happened", aggregate: str = "app-1", seq: int = 1
) -> Envelope:
    return Envelope.seal(
        aggregate_id=aggregate,
        aggregate_seq=seq,
        event=NewEvent(type=event_type, payload={"n": seq}),
        occurred_at=datetime.now(UTC),
        actor=ACTOR,
        firm_id=None,
        correlation_id="c",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def value_of(e: Envelope) -> bytes:
    return json.dumps(e.to_json_dict()).encode()


@dataclass
class Rig:
    store: EventStore
    bootstrap: str
    topic: str
    dlq: str
    group: str

    async def publish(self, values: list[bytes]) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(self.topic, value, key=b"app-1")
        finally:
            await producer.stop()

    async def applied(self) -> list[str]:
        async with self.store.engine.connect() as connection:
            rows = await connection.execute(sa.select(effects.c.event_id).order_by(effects.c.n))
            return [r.event_id for r in rows]

    def consumer(self, **options: Any) -> tuple[KafkaBroker, IdempotentConsumer]:
        broker = KafkaBroker(self.bootstrap, acks="all", enable_idempotence=False)
        consumer = IdempotentConsumer(
            self.group,
            self.store,
            dead_letters=broker_dead_letters(broker, self.dlq),
            retry_delay=0.01,
            **options,
        )
        return broker, consumer

    async def dead_letters(self, count: int, within: float = 10) -> list[Any]:
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=10
        )
        await reader.start()
        reader.assign([TopicPartition(self.dlq, 0)])
        found: list[Any] = []
        try:
            deadline = time.monotonic() + within
            while len(found) < count and time.monotonic() < deadline:
                for records in (await reader.getmany(timeout_ms=100)).values():
                    found.extend(records)
        finally:
            await reader.stop()
        return found


@pytest.fixture
async def rig(
    store: EventStore, kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> AsyncIterator[Rig]:
    async with store.engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    topic, dlq = unique_name("events"), unique_name("dlq")
    await ensure_topics(kafka_bootstrap, [TopicSpec(topic, 2), TopicSpec(dlq, 1)])
    yield Rig(store, kafka_bootstrap, topic, dlq, unique_name("group"))


async def record_effect(uow: UnitOfWork, e: Envelope) -> None:
    await uow.connection.execute(effects.insert().values(event_id=e.event_id))


async def until(check: Callable[[], Any], within: float = 15) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_each_event_is_applied_once_even_when_delivered_twice(rig: Rig) -> None:
    events = [envelope(seq=n) for n in range(1, 51)]
    await rig.publish([value_of(e) for e in events])
    await rig.publish([value_of(e) for e in events])  # a relay that re-sent everything
    broker, consumer = rig.consumer()
    consumer.handles("test.thing.happened")(record_effect)
    consumer.subscribe(broker, rig.topic, session_timeout_ms=1000)
    await broker.start()
    try:

        async def all_seen() -> bool:
            return len(await rig.applied()) >= 50

        await until(all_seen)
        await asyncio.sleep(0.5)  # the duplicates arrive after: give them time to do harm
    finally:
        await broker.stop()
    applied = await rig.applied()
    assert sorted(applied) == sorted(e.event_id for e in events)


async def test_poison_of_each_kind_goes_to_the_dlq_and_the_next_message_is_processed(
    rig: Rig,
) -> None:
    good = [envelope(seq=n) for n in range(1, 7)]
    tampered = {**good[1].to_json_dict(), "payload": {"n": 999}}
    unknown = envelope("test.other.thing", seq=7)
    failing = envelope(seq=8)
    values = [
        b"\xff not json at all",
        value_of(good[0]),
        json.dumps({"hello": "world"}).encode(),
        value_of(good[2]),
        json.dumps(tampered).encode(),
        value_of(good[3]),
        value_of(unknown),
        value_of(good[4]),
        value_of(failing),
        value_of(good[5]),
    ]
    await rig.publish(values)
    broker, consumer = rig.consumer(max_attempts=2)

    @consumer.handles("test.thing.happened")
    async def handler(uow: UnitOfWork, e: Envelope) -> None:
        if e.event_id == failing.event_id:
            raise RuntimeError("this one always fails")
        await record_effect(uow, e)

    consumer.subscribe(broker, rig.topic, session_timeout_ms=1000)
    await broker.start()
    try:
        letters = await rig.dead_letters(5)
        expected = {g.event_id for g in good} - {good[1].event_id}

        async def goods_applied() -> bool:
            return set(await rig.applied()) == expected

        await until(goods_applied)
    finally:
        await broker.stop()
    kinds = {dict(r.headers)["error_kind"].decode(): r for r in letters}
    assert set(kinds) == {"invalid", "tampered", "unknown_type", "handler_failed"}
    assert len(letters) == 5
    assert kinds["tampered"].value == json.dumps(tampered).encode()  # the original bytes
    assert b"always fails" in dict(kinds["handler_failed"].headers)["reason"]
    assert {r.value for r in letters if dict(r.headers)["error_kind"] == b"invalid"} == {
        values[0],
        values[2],
    }
    assert all(dict(r.headers)["source_topic"] == rig.topic.encode() for r in letters)


async def test_a_handler_that_fails_once_applies_its_effect_exactly_once(rig: Rig) -> None:
    events = [envelope(seq=n) for n in range(1, 11)]
    await rig.publish([value_of(e) for e in events])
    broker, consumer = rig.consumer()
    failed: set[str] = set()

    @consumer.handles("test.thing.happened")
    async def flaky(uow: UnitOfWork, e: Envelope) -> None:
        await record_effect(uow, e)  # written, then rolled back with the failure
        if e.event_id not in failed:
            failed.add(e.event_id)
            raise RuntimeError("transient")

    consumer.subscribe(broker, rig.topic, session_timeout_ms=1000)
    await broker.start()
    try:

        async def done() -> bool:
            return len(await rig.applied()) >= 10

        await until(done)
        await asyncio.sleep(0.3)
    finally:
        await broker.stop()
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)


async def test_a_restarted_consumer_resumes_without_losing_or_repeating(rig: Rig) -> None:
    events = [envelope(seq=n) for n in range(1, 201)]
    await rig.publish([value_of(e) for e in events[:100]])
    broker, consumer = rig.consumer()
    consumer.handles("test.thing.happened")(record_effect)
    consumer.subscribe(broker, rig.topic, session_timeout_ms=1000)
    await broker.start()

    async def at_least(n: int) -> Callable[[], Any]:
        async def check() -> bool:
            return len(await rig.applied()) >= n

        return check

    await until(await at_least(100))
    await broker.stop()
    await rig.publish([value_of(e) for e in events[100:]])
    broker, consumer = rig.consumer()
    consumer.handles("test.thing.happened")(record_effect)
    consumer.subscribe(broker, rig.topic, session_timeout_ms=1000)
    await broker.start()
    try:
        await until(await at_least(200))
        await asyncio.sleep(0.3)
    finally:
        await broker.stop()
    assert sorted(await rig.applied()) == sorted(e.event_id for e in events)
