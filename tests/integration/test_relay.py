"""The outbox relay against the real broker, on PostgreSQL and SQLite.

Each test publishes to a topic of its own, created explicitly with 4 partitions,
and reads it back with a plain aiokafka consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

import shared.relay as relay_module
from shared.clock import SystemClock
from shared.contracts import Actor, NewEvent, Role, hash_fields, verify_chain
from shared.eventstore import (
    NEW_STREAM,
    EventContext,
    EventStore,
    StreamVersion,
    create_engine,
    is_sqlite,
)
from shared.eventstore.schema import events as events_table
from shared.eventstore.store import _PG_PENDING_BATCH as pending_sql
from shared.relay import OutboxRelay
from shared.topics import TopicSpec, ensure_topics
from tests.schema import migrated

PARTITIONS = 4
ACTOR = Actor(sub="officer-1", role=Role.OFFICER)

applied = sa.Table(
    "applied",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    # deliberately not unique: only the inbox may stop a duplicate effect
    sa.Column("event_id", sa.String(36), nullable=False),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)
INSERT_APPLIED = sa.text(
    "INSERT INTO applied (event_id, aggregate_id, seq) VALUES (:event_id, :aggregate_id, :seq)"
)


def context(application: str) -> EventContext:
    return EventContext(actor=ACTOR, correlation_id=f"corr-{application}", firm_id="123-45-67890")


def noted(n: int) -> NewEvent:
    return NewEvent(
        type="voucher.application.noted", payload={"n": n, "amount": 1_500_000, "note": "특허"}
    )


@pytest.fixture
async def topic(kafka_bootstrap: str, unique_name: Callable[[str], str]) -> str:
    name = unique_name("voucher.events")
    await ensure_topics(kafka_bootstrap, [TopicSpec(name, PARTITIONS)])
    return name


@contextlib.asynccontextmanager
async def reading(
    bootstrap: str, topic: str, group_id: str | None = None
) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer assigned every partition of ``topic`` from the start."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        yield consumer
    finally:
        await consumer.stop()


async def read_records(
    bootstrap: str, topic: str, count: int, within: float = 15
) -> list[ConsumerRecord[bytes, bytes]]:
    """At least ``count`` records of ``topic`` (all partitions); then a short wait for extras."""
    found: list[ConsumerRecord[bytes, bytes]] = []
    async with reading(bootstrap, topic) as consumer:
        deadline = time.monotonic() + within
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                found.extend(records)
        for records in (await consumer.getmany(timeout_ms=300)).values():
            found.extend(records)
    return found


async def until(
    check: Callable[[], Awaitable[bool]],
    within: float = 15,
    state: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met in {within}s {state()}")


async def unpublished_count(store: EventStore) -> int:
    return len(await store.unpublished(100_000))


def by_key(records: list[ConsumerRecord[bytes, bytes]]) -> dict[bytes, list[dict[str, Any]]]:
    """The envelopes received per key, in offset order (one key lives on one partition)."""
    grouped: dict[bytes, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert record.key is not None and record.value is not None
        grouped.setdefault(record.key, []).append(json.loads(record.value))
    return grouped


async def test_appended_events_reach_the_topic_in_order_keyed_by_application(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    versions = {app: NEW_STREAM for app in ("app-1", "app-2", "지원-3")}
    for round_ in range(4):
        async with store.transaction() as uow:
            for app, version in versions.items():
                sealed = await uow.append(
                    app, version, [noted(round_), noted(round_)], context(app)
                )
                versions[app] = StreamVersion.after(sealed)
    served = {e.envelope["event_id"]: e for e in await store.read_all()}
    assert len(served) == 24 and not any(e.published for e in served.values())

    relay = OutboxRelay(store, kafka_bootstrap, topic)
    try:
        assert await relay.publish_pending() == 24
        assert await relay.publish_pending() == 0
    finally:
        await relay.close()

    assert all(e.published for e in await store.read_all())
    assert relay.published_total == 24 and relay.last_batch_seconds > 0
    records = await read_records(kafka_bootstrap, topic, 24)
    assert len(records) == 24
    for record in records:
        envelope = json.loads(record.value or b"")
        stored = served[envelope["event_id"]]
        assert record.key == envelope["aggregate_id"].encode()
        assert envelope == stored.envelope
        assert hash_fields(envelope) == envelope["hash"]
        assert dict(record.headers) == {
            "type": b"voucher.application.noted",
            "event_id": envelope["event_id"].encode(),
            "correlation_id": envelope["correlation_id"].encode(),
            "schema_version": b"1",
            "position": str(
                stored.position
            ).encode(),  # the checkpoints' leaves are rebuilt from it
        }
        if is_sqlite(store.engine):
            # the exact bytes the store's JSON would give (PostgreSQL splices its jsonb text)
            assert (
                record.value
                == json.dumps(stored.envelope, separators=(",", ":"), ensure_ascii=False).encode()
            )
    received = by_key(records)
    assert set(received) == {app.encode() for app in versions}
    for envelopes in received.values():
        assert [e["aggregate_seq"] for e in envelopes] == list(range(1, 9))
    positions = {e.envelope["event_id"]: e.position for e in served.values()}
    for envelopes in received.values():
        order = [positions[e["event_id"]] for e in envelopes]
        assert order == sorted(order)


# ---------------------------------------------------------------- the big one

APPLICATIONS, PER_APPLICATION, CHUNK = 200, 25, 5
TOTAL = APPLICATIONS * PER_APPLICATION


@pytest.fixture
async def consumer_store(
    store: EventStore,
    postgres_databases: Callable[[], Awaitable[str]],
    tmp_path: Any,
) -> AsyncIterator[EventStore]:
    """The consuming service's own database, of the same kind as ``store``."""
    if is_sqlite(store.engine):
        url = f"sqlite+aiosqlite:///{tmp_path}/consumer.db"
    else:
        url = await postgres_databases()
    engine = create_engine(url)
    consumer = EventStore(engine, SystemClock())
    await migrated(consumer.engine)
    async with engine.begin() as connection:
        await connection.run_sync(applied.metadata.create_all)
    yield consumer
    await engine.dispose()


async def append_interleaved(store: EventStore) -> None:
    """25 events per application, 5 at a time, 20 applications per transaction."""
    apps = [f"app-{n:03d}" for n in range(APPLICATIONS)]
    versions = dict.fromkeys(apps, NEW_STREAM)
    for round_ in range(PER_APPLICATION // CHUNK):
        for start in range(0, APPLICATIONS, 20):
            async with store.transaction() as uow:
                for app in apps[start : start + 20]:
                    sealed = await uow.append(
                        app,
                        versions[app],
                        [noted(round_ * CHUNK + i) for i in range(CHUNK)],
                        context(app),
                    )
                    versions[app] = StreamVersion.after(sealed)
            await asyncio.sleep(0)


@dataclass
class InboxConsumer:
    """Applies each event once: inbox row and effect in one transaction per fetched batch."""

    store: EventStore
    received: list[dict[str, Any]] = field(default_factory=list)
    caught_up: bool = False

    async def run(self, bootstrap: str, topic: str, group_id: str) -> None:
        async with reading(bootstrap, topic, group_id) as consumer:
            while True:
                batches = await consumer.getmany(timeout_ms=50, max_records=500)
                records = [r for batch in batches.values() for r in batch]
                if records:
                    async with self.store.transaction() as uow:
                        for record in records:
                            envelope = json.loads(record.value or b"")
                            self.received.append(envelope)
                            if await uow.record_inbox("test-consumer", envelope["event_id"]):
                                await uow.write(
                                    INSERT_APPLIED,
                                    {
                                        "event_id": envelope["event_id"],
                                        "aggregate_id": envelope["aggregate_id"],
                                        "seq": envelope["aggregate_seq"],
                                    },
                                )
                    await consumer.commit()
                self.caught_up = True
                for tp in consumer.assignment():
                    high = consumer.highwater(tp)
                    if high is None or await consumer.position(tp) < high:
                        self.caught_up = False

    async def applied_rows(self) -> list[tuple[str, str, int]]:
        async with self.store.engine.connect() as connection:
            rows = await connection.execute(
                sa.select(applied.c.event_id, applied.c.aggregate_id, applied.c.seq).order_by(
                    applied.c.n
                )
            )
            return [(r.event_id, r.aggregate_id, r.seq) for r in rows]


async def test_every_event_is_applied_once_in_order_while_the_relay_is_killed_and_restarted(
    store: EventStore,
    consumer_store: EventStore,
    kafka_bootstrap: str,
    topic: str,
    unique_name: Callable[[str], str],
) -> None:
    rng = random.Random(20261125)
    consumer = InboxConsumer(consumer_store)
    consuming = asyncio.create_task(
        consumer.run(kafka_bootstrap, topic, unique_name("test-consumer"))
    )
    appending = asyncio.create_task(append_interleaved(store))
    try:
        for _ in range(3):
            relay = OutboxRelay(
                store, kafka_bootstrap, topic, batch_size=250, lock_retry_interval=0.05
            )
            running = asyncio.create_task(relay.run())
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            assert not relay.holds_lock
        await appending
        stop = asyncio.Event()
        relay = OutboxRelay(store, kafka_bootstrap, topic, batch_size=250, lock_retry_interval=0.05)
        running = asyncio.create_task(relay.run(stop))

        async def all_published() -> bool:
            return await unpublished_count(store) == 0

        await until(
            all_published,
            within=30,
            state=lambda: (
                f"(relay holds the lock: {relay.holds_lock}, marked {relay.published_total})"
            ),
        )
        stop.set()
        await running

        async def all_applied() -> bool:
            if consuming.done():
                consuming.result()  # the consumer died: say why
            return consumer.caught_up and len(await consumer.applied_rows()) >= TOTAL

        await until(
            all_applied,
            within=30,
            state=lambda: f"({len(consumer.received)} received, caught up: {consumer.caught_up})",
        )
    finally:
        for task in (appending, consuming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    rows = await consumer.applied_rows()
    stored = {e.envelope["event_id"]: e.envelope for e in await store.read_all(limit=TOTAL + 1)}
    assert len(stored) == TOTAL
    assert len(rows) == TOTAL
    assert {event_id for event_id, _, _ in rows} == set(stored)
    per_application: dict[str, list[int]] = {}
    for _, aggregate_id, seq in rows:
        per_application.setdefault(aggregate_id, []).append(seq)
    assert len(per_application) == APPLICATIONS
    for seqs in per_application.values():
        assert seqs == list(range(1, PER_APPLICATION + 1))

    # on the wire: duplicates allowed, but a new event always comes right after the last new one
    seen: set[str] = set()
    highest: dict[str, int] = {}
    first_copies: list[dict[str, Any]] = []
    for envelope in consumer.received:
        app, seq = envelope["aggregate_id"], envelope["aggregate_seq"]
        if envelope["event_id"] in seen:
            assert seq <= highest[app]
            continue
        assert seq == highest.get(app, 0) + 1, f"{app} jumped to seq {seq}"
        highest[app] = seq
        seen.add(envelope["event_id"])
        first_copies.append(envelope)
        assert envelope == stored[envelope["event_id"]]
    assert len(first_copies) == TOTAL
    report = verify_chain(first_copies)
    assert report.ok, report.breaks[:3]
    assert report.applications == APPLICATIONS


async def test_an_event_committed_late_below_the_read_cursor_still_goes_first(
    postgres_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """PostgreSQL hands out positions at insert, so a slow transaction commits below newer ones."""
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    await migrated(store.engine)
    inserted, commit = asyncio.Event(), asyncio.Event()

    async def slow_first_event() -> None:
        async with store.transaction() as uow:
            await uow.append("slow", NEW_STREAM, [noted(1)], context("slow"))
            inserted.set()
            await commit.wait()

    slow = asyncio.create_task(slow_first_event())
    await inserted.wait()
    await store.append("fast", NEW_STREAM, [noted(n) for n in range(3)], context("fast"))

    read = store.pending_batch

    async def read_then_commit_the_slow_one(limit: int, after: int = 0, *more: Any) -> Any:
        if after and not commit.is_set():  # reading past the slow event's position: commit it
            commit.set()
            await slow
            (first,) = await store.read_stream("slow")
            await store.append("slow", StreamVersion.after([first]), [noted(2)], context("slow"))
        return await read(limit, after, *more)

    store.pending_batch = read_then_commit_the_slow_one  # type: ignore[method-assign]
    relay = OutboxRelay(store, kafka_bootstrap, topic, batch_size=2)
    try:
        published = await relay.drain()
        published += await relay.drain()  # whatever a relay skipped would go out only now
    finally:
        await relay.close()
        await engine.dispose()
    records = await read_records(kafka_bootstrap, topic, 5)
    received = by_key(records)
    assert [e["aggregate_seq"] for e in received[b"slow"]] == [1, 2]
    assert [e["aggregate_seq"] for e in received[b"fast"]] == [1, 2, 3]
    assert published == 5


# ---------------------------------------------------------------- one relay per database


async def test_a_second_relay_stands_by_while_the_first_holds_the_lock_then_takes_over(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    first = OutboxRelay(store, kafka_bootstrap, topic, lock_retry_interval=0.05)
    second = OutboxRelay(store, kafka_bootstrap, topic, lock_retry_interval=0.05)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first_running = asyncio.create_task(first.run(stop_first))

    async def first_holds() -> bool:
        return first.holds_lock

    await until(first_holds)
    second_running = asyncio.create_task(second.run(stop_second))
    try:
        version = NEW_STREAM
        for n in range(10):
            (sealed,) = await store.append("app-1", version, [noted(n)], context("app-1"))
            version = StreamVersion.after([sealed])
            first.notify()

        async def all_published() -> bool:
            return await unpublished_count(store) == 0

        await until(all_published)
        await asyncio.sleep(0.3)  # several of the second relay's lock attempts
        assert first.published_total == 10
        assert second.published_total == 0 and not second.holds_lock

        stop_first.set()
        await first_running

        async def second_holds() -> bool:
            return second.holds_lock

        await until(second_holds)
        for n in range(10, 15):
            (sealed,) = await store.append("app-1", version, [noted(n)], context("app-1"))
            version = StreamVersion.after([sealed])
        await until(all_published)
        assert second.published_total == 5
        assert first.published_total == 10
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(first_running, second_running)
    records = await read_records(kafka_bootstrap, topic, 15)
    assert [json.loads(r.value or b"")["aggregate_seq"] for r in records] == list(range(1, 16))


async def test_a_relay_whose_lock_session_is_cut_stops_publishing_and_stands_by(
    postgres_url: str, kafka_bootstrap: str, topic: str
) -> None:
    """The server ends the lock holder's session (a cut connection, an administrator): the
    other relay takes the lock, and the first stops publishing within its check interval,
    then stands by: the two never publish at once for longer than that."""
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    await migrated(store.engine)
    first = OutboxRelay(
        store, kafka_bootstrap, topic, lock_retry_interval=0.05, lock_check_interval=0.2
    )
    second = OutboxRelay(
        store, kafka_bootstrap, topic, lock_retry_interval=0.05, lock_check_interval=0.2
    )
    stop = asyncio.Event()
    first_running = asyncio.create_task(first.run(stop))

    async def first_holds() -> bool:
        return first.holds_lock

    await until(first_holds)
    second_running = asyncio.create_task(second.run(stop))
    try:
        async with engine.connect() as admin:  # the lock holder's session, ended by the server
            await admin.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )

        async def second_holds_alone() -> bool:
            return second.holds_lock and not first.holds_lock

        await until(second_holds_alone)
        version = NEW_STREAM
        for n in range(5):
            (sealed,) = await store.append("app-1", version, [noted(n)], context("app-1"))
            version = StreamVersion.after([sealed])
            first.notify()
            second.notify()

        async def all_published() -> bool:
            return await unpublished_count(store) == 0

        await until(all_published)
        assert (first.published_total, second.published_total) == (0, 5)
        assert not first.holds_lock  # standing by for the lock again
    finally:
        stop.set()
        await asyncio.gather(first_running, second_running)
        await engine.dispose()


async def test_a_relay_killed_while_taking_the_lock_leaves_it_free(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    rng = random.Random(7)
    for _ in range(15):
        killed = OutboxRelay(store, kafka_bootstrap, topic, lock_retry_interval=0.01)
        running = asyncio.create_task(killed.run())
        await asyncio.sleep(rng.uniform(0, 0.03))
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    survivor = OutboxRelay(store, kafka_bootstrap, topic, lock_retry_interval=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(survivor.run(stop))

    async def survivor_holds() -> bool:
        return survivor.holds_lock

    try:
        await until(survivor_holds, within=5)
    finally:
        stop.set()
        await running


# ---------------------------------------------------------------- broker away


async def test_nothing_is_marked_published_while_the_broker_is_unreachable(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.append("app-1", NEW_STREAM, [noted(1), noted(2)], context("app-1"))
    relay = OutboxRelay(store, "127.0.0.1:1", "voucher.events", min_backoff=0.05)
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="shared.relay"):
        running = asyncio.create_task(relay.run(stop))
        await asyncio.sleep(1.0)
        assert not running.done()  # still trying, not crashed
        assert await unpublished_count(store) == 2
        assert relay.published_total == 0
        assert relay.failures >= 2
        stop.set()
        await asyncio.wait_for(running, 5)  # stops cleanly, raising nothing
    assert any("failing" in r.getMessage() for r in caplog.records)
    assert await unpublished_count(store) == 2


async def test_a_cancelled_relay_during_an_outage_raises_only_the_cancellation(
    store: EventStore,
) -> None:
    await store.append("app-1", NEW_STREAM, [noted(1)], context("app-1"))
    relay = OutboxRelay(store, "127.0.0.1:1", "voucher.events", min_backoff=0.05)
    running = asyncio.create_task(relay.run())
    await asyncio.sleep(0.3)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not relay.holds_lock
    assert await unpublished_count(store) == 1


# ---------------------------------------------------------------- recovery


async def test_republish_sends_every_event_again_unchanged(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    versions = {f"app-{n}": NEW_STREAM for n in range(5)}
    for round_ in range(3):
        for app, version in versions.items():
            sealed = await store.append(app, version, [noted(round_)], context(app))
            versions[app] = StreamVersion.after(sealed)
    before = await store.read_all()
    relay = OutboxRelay(store, kafka_bootstrap, topic)
    try:
        assert await relay.publish_pending() == 15
        assert await relay.republish() == 15
        assert await unpublished_count(store) == 15
        assert await relay.publish_pending() == 15
    finally:
        await relay.close()
    after = await store.read_all()
    assert [e.envelope for e in after] == [e.envelope for e in before]
    assert all(e.published for e in after)

    records = await read_records(kafka_bootstrap, topic, 30)
    copies: dict[str, list[dict[str, Any]]] = {}
    position_of = {e.envelope["event_id"]: e.position for e in before}
    for record in records:
        envelope = json.loads(record.value or b"")
        copies.setdefault(envelope["event_id"], []).append(envelope)
        # both copies carry the event's position: the checkpoints' leaves stay rebuildable
        assert dict(record.headers)["position"] == str(position_of[envelope["event_id"]]).encode()
    assert len(records) == 30
    assert set(copies) == {e.envelope["event_id"] for e in before}
    for envelopes in copies.values():
        assert len(envelopes) == 2
        assert envelopes[0] == envelopes[1]
        assert hash_fields(envelopes[1]) == envelopes[1]["hash"]
    for envelopes in by_key(records).values():
        seqs = [e["aggregate_seq"] for e in envelopes]
        assert seqs == [1, 2, 3, 1, 2, 3]


async def test_a_running_relay_republishes_without_being_told_twice(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    await store.append("app-1", NEW_STREAM, [noted(1), noted(2)], context("app-1"))
    relay = OutboxRelay(store, kafka_bootstrap, topic, poll_interval=30)
    stop = asyncio.Event()
    running = asyncio.create_task(relay.run(stop))
    try:

        def published(count: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return relay.published_total >= count

            return check

        await until(published(2))
        assert await relay.republish() == 2
        # the poll interval is 30 s: only the wake-up from republish() can send them this fast
        await until(published(4), within=5)
    finally:
        stop.set()
        await running
    records = await read_records(kafka_bootstrap, topic, 4)
    assert [json.loads(r.value or b"")["aggregate_seq"] for r in records] == [1, 2, 1, 2]


def test_relay_connects_to_nothing_when_built() -> None:
    engine = create_engine(f"postgresql+asyncpg://nobody@127.0.0.1:1/{uuid.uuid4().hex}")
    relay = OutboxRelay(EventStore(engine, SystemClock()), "127.0.0.1:1", "voucher.events")
    assert relay.published_total == 0 and not relay.holds_lock


async def test_the_relay_finds_what_is_unpublished_through_its_index_not_by_reading_the_log(
    store: EventStore, kafka_bootstrap: str, topic: str
) -> None:
    """A long log, nearly all of it published: every read of the relay for what is left goes
    through ``ix_events_unpublished``, in the plan made for its values and in the one
    PostgreSQL makes for any values (a prepared statement's generic plan). (With
    ``published IS false`` PostgreSQL did not use the index and read the whole log for each
    batch: 12 ms a batch at 6,000 events, growing. A count below the cursor without an
    order read the whole log in the generic plan: 1.2 ms a batch at 2,400 events.)"""
    for n in range(0, 2000, 50):  # 2,000 events, in 40 transactions
        await store.append(f"app-{n}", NEW_STREAM, [noted(i) for i in range(50)], context("a"))
    async with store.engine.begin() as connection:
        await connection.execute(
            sa.update(events_table).where(events_table.c.position <= 1995).values(published=True)
        )
    read: list[tuple[str, Any]] = []

    def remember(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "published" in statement:
            read.append((statement, parameters))

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", remember)
    try:
        # batches of 2 for the 5 left: the relay also checks that nothing was passed over
        relay = OutboxRelay(store, kafka_bootstrap, topic, batch_size=2)
        try:
            assert await relay.drain() == 5
        finally:
            await relay.close()
        assert len(await store.unpublished(10)) == 0
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", remember)
    if not is_sqlite(store.engine):  # there the relay reads through the driver itself
        # the pipelined read: 1996 and 1997 in flight, the check below them, the batch above
        read.append((pending_sql, (1997, 2, [1996, 1997])))
    # the relay's own reads: the batch and the check that nothing was passed over
    assert any("position <" in statement for statement, _ in read), read
    async with store.engine.connect() as connection:
        plans = []
        for n, (statement, parameters) in enumerate(read):
            if is_sqlite(store.engine):
                explain = "EXPLAIN QUERY PLAN " + statement
                plans.append((await connection.exec_driver_sql(explain, parameters)).all())
                continue
            await connection.exec_driver_sql(f"PREPARE read_{n} AS {statement}")
            values = ", ".join(
                f"ARRAY{list(v)}::bigint[]" if isinstance(v, list) else str(int(v))
                for v in parameters
            )
            for mode in ("force_custom_plan", "force_generic_plan"):
                await connection.exec_driver_sql(f"SET plan_cache_mode = {mode}")
                explain = f"EXPLAIN EXECUTE read_{n}({values})"
                plans.append((await connection.exec_driver_sql(explain)).all())
    for plan in plans:
        steps = [str(step) for step in plan]
        # every step that reads events reads them through the index, none by position
        reads_of_the_log = [step for step in steps if _reads_events(step)]
        assert reads_of_the_log, steps
        for step in reads_of_the_log:
            assert "ix_events_unpublished" in step, steps


def _reads_events(step: str) -> bool:
    """Whether a step of a query plan (PostgreSQL or SQLite) reads the events table."""
    return (
        " on events" in step  # Seq Scan / Index Scan / Index Only Scan ... on events
        or "Bitmap Index Scan" in step
        or "SCAN events" in step
        or "SEARCH events" in step
    ) and "Bitmap Heap Scan" not in step


async def test_the_broker_is_asked_its_cluster_again_only_once_the_producer_reconnected(
    store: EventStore, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that lost its log is a new process: the relay's connections to the old one
    closed. While they stand, the answer stands; once one was made anew, the broker is asked."""
    asked: list[str] = []
    ask = relay_module._cluster_id

    async def counted(producer: Any) -> str:
        asked.append(answer := await ask(producer))
        return answer

    monkeypatch.setattr(relay_module, "_cluster_id", counted)
    for n in range(10):
        await store.append(f"app-{n}", NEW_STREAM, [noted(n)], context(f"app-{n}"))
    relay = OutboxRelay(store, kafka_bootstrap, topic, batch_size=2)
    try:
        assert await relay.drain() == 10  # five batches
        # the first cluster seen is recorded, the log read again and the answer checked
        assert len(asked) == 2 and asked[0] == asked[1]
        for n in range(10, 14):
            await store.append(f"app-{n}", NEW_STREAM, [noted(n)], context(f"app-{n}"))
        assert await relay.drain() == 4
        assert len(asked) == 2
        producer = relay._producer
        assert producer is not None
        for connection in list(producer.client._conns.values()):
            connection.close()  # as a broker's restart closes them
        for n in range(14, 16):  # one batch: asked before it is sent
            await store.append(f"app-{n}", NEW_STREAM, [noted(n)], context(f"app-{n}"))
        assert await relay.drain() == 2
        assert len(asked) == 3 and asked[2] == asked[0]
    finally:
        await relay.close()
    assert len(await read_records(kafka_bootstrap, topic, 16)) == 16
