"""Idempotent consumer handlers on FastStream's in-memory broker (no Kafka), SQLite store."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fast_depends.utils
import pytest
import sqlalchemy as sa
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from shared.clock import SystemClock
from shared.consumer import (
    ConsumerUnavailable,
    DeadLetter,
    Delivery,
    IdempotentConsumer,
    PoisonKind,
    broker_dead_letters,
    consumer_settings,
)
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role, hash_fields
from shared.eventstore import EventStore, UnitOfWork, create_engine
from tests.schema import migrated

TOPIC, DLQ = "voucher.events", "test.dlq"
SUBMITTED = "voucher.application.submitted"
APPROVED = "voucher.application.approved"

effects = sa.Table(
    "unit_effects",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False),
)


def sealed(
    event_type: str = SUBMITTED, seq: int = 1, aggregate: str = "app-1", event_id: str | None = None
) -> Envelope:
    return Envelope.seal(
        event_id=event_id,
        aggregate_id=aggregate,
        aggregate_seq=seq,
        event=NewEvent(type=event_type, payload={"amount": str(seq * 1000)}),
        occurred_at=datetime.now(UTC),
        actor=Actor(sub="firm-1", role=Role.FIRM),
        firm_id="firm-1",
        correlation_id="corr-1",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def value(envelope: Envelope) -> bytes:
    return json.dumps(envelope.to_json_dict()).encode()


def rehashed(envelope: Envelope, **changes: Any) -> bytes:
    """An envelope changed and hashed again: well-formed JSON, a valid hash, a bad field."""
    document = {**envelope.to_json_dict(), **changes}
    document["hash"] = hash_fields(document)
    return json.dumps(document).encode()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[EventStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/unit.db")
    event_store = EventStore(engine, SystemClock())
    await migrated(engine)
    async with engine.begin() as connection:
        await connection.run_sync(effects.metadata.create_all)
    yield event_store
    await engine.dispose()


async def applied(store: EventStore) -> list[str]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.select(effects.c.event_id).order_by(effects.c.n))
        return [row.event_id for row in rows]


async def record(uow: UnitOfWork, envelope: Envelope) -> None:
    await uow.connection.execute(effects.insert().values(event_id=envelope.event_id))


@dataclass
class Service:
    """What a service's composition root builds: a broker, a consumer, a DLQ watcher."""

    broker: KafkaBroker
    consumer: IdempotentConsumer
    dead: list[tuple[bytes, dict[str, str], bytes | None]] = field(default_factory=list)


def service(store: EventStore, *, batch: bool = True, **options: Any) -> Service:
    broker = KafkaBroker("localhost:9092", acks="all", enable_idempotence=False)
    consumer = IdempotentConsumer("voucher-verifier", store, dlq_topic=DLQ, **options)
    built = Service(broker, consumer)

    @broker.subscriber(DLQ)
    async def watch_dlq(message: KafkaMessage) -> None:
        raw: Any = message.raw_message
        built.dead.append((message.body, dict(message.headers), raw.key))

    return built


async def test_each_event_is_handled_once_and_a_redelivery_changes_nothing(
    store: EventStore,
) -> None:
    svc = service(store)
    svc.consumer.handles(SUBMITTED)(record)
    svc.consumer.subscribe(svc.broker, TOPIC)
    events = [sealed(seq=n) for n in (1, 2, 3)]
    async with TestKafkaBroker(svc.broker) as broker:
        for _ in range(2):
            for e in events:
                await broker.publish(value(e), TOPIC, key=e.aggregate_id.encode())
    assert await applied(store) == [e.event_id for e in events]
    assert svc.consumer.stats.applied == 3
    assert svc.consumer.stats.duplicates == 3
    assert svc.dead == []


async def test_a_batch_is_handled_on_the_event_loop_not_handed_to_a_worker_thread(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler takes the message as its argument: a ``KafkaMessage`` parameter was looked
    up in FastStream's context, synchronously, so in a worker thread, once for every batch."""
    hops: list[Any] = []
    hand_over = fast_depends.utils.run_in_threadpool

    async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(function)
        return await hand_over(function, *args, **kwargs)

    monkeypatch.setattr(fast_depends.utils, "run_in_threadpool", counted)
    svc = service(store)
    svc.consumer.handles(SUBMITTED)(record)
    svc.consumer.subscribe(svc.broker, TOPIC)
    events = [sealed(seq=n) for n in (1, 2, 3)]
    async with TestKafkaBroker(svc.broker) as broker:
        for e in events:
            await broker.publish(value(e), TOPIC, key=e.aggregate_id.encode())
    assert await applied(store) == [e.event_id for e in events]
    assert hops == []


async def test_the_subscriber_commits_by_hand_and_reads_the_way_tansu_needs(
    store: EventStore,
) -> None:
    svc = service(store)
    svc.consumer.handles(SUBMITTED)(record)
    subscriber = svc.consumer.subscribe(svc.broker, TOPIC, max_records=200)
    assert subscriber.ack_policy is AckPolicy.MANUAL
    settings = subscriber._connection_args
    assert settings["enable_auto_commit"] is False
    assert settings["fetch_max_wait_ms"] == 10
    assert settings["auto_offset_reset"] == "earliest"
    assert settings["max_poll_records"] == 200
    assert subscriber.group_id == "voucher-verifier"
    assert consumer_settings(100) | {"max_poll_records": 100} == consumer_settings(100)
    assert consumer_settings()["enable_auto_commit"] is False


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single"])
@pytest.mark.parametrize(
    ("kind", "poison", "reason"),
    [
        (PoisonKind.INVALID, lambda: b"\xff\xfe not json", "not JSON"),
        (PoisonKind.INVALID, lambda: b'{"hello": "world"}', "not an event envelope"),
        (PoisonKind.INVALID, lambda: rehashed(sealed(), event_id="x" * 37), "event_id"),
        (
            PoisonKind.TAMPERED,
            lambda: json.dumps({**sealed().to_json_dict(), "payload": {"amount": "1"}}).encode(),
            "does not match its hash",
        ),
        (
            PoisonKind.UNKNOWN_TYPE,
            lambda: value(sealed("voucher.provider.registered")),
            "no handler for voucher.provider.registered",
        ),
        (PoisonKind.HANDLER_FAILED, lambda: value(sealed(seq=13)), "not in a cluster site"),
    ],
    ids=["not-json", "not-an-envelope", "long-event-id", "tampered", "unknown-type", "handler"],
)
async def test_a_poison_message_goes_to_the_dlq_and_the_next_one_is_handled(
    store: EventStore, kind: PoisonKind, poison: Any, reason: str, batch: bool
) -> None:
    svc = service(store, max_attempts=2, retry_delay=0)
    tries: list[str] = []

    @svc.consumer.handles(SUBMITTED)
    async def verify(uow: UnitOfWork, envelope: Envelope) -> None:
        tries.append(envelope.event_id)
        await record(uow, envelope)
        if envelope.aggregate_seq == 13:
            raise ValueError("firm is not in a cluster site")  # a deliberate domain rejection

    svc.consumer.subscribe(svc.broker, TOPIC, batch=batch)
    bad, good = poison(), sealed(seq=2)
    async with TestKafkaBroker(svc.broker) as broker:
        await broker.publish(bad, TOPIC, key=b"app-1")
        await broker.publish(value(good), TOPIC, key=b"app-1")

    assert await applied(store) == [good.event_id]
    [(body, headers, key)] = svc.dead
    assert body == bad and key == b"app-1"
    assert headers["error_kind"] == kind
    assert reason in headers["reason"]
    assert headers["consumer"] == "voucher-verifier"
    assert headers["source_topic"] == TOPIC
    assert {"reason", "source_partition", "source_offset"} <= headers.keys()
    if kind is PoisonKind.HANDLER_FAILED:
        assert headers["event_id"] == json.loads(bad)["event_id"]
        assert tries.count(headers["event_id"]) == 2  # max_attempts, each rolled back
    if kind in (PoisonKind.TAMPERED, PoisonKind.UNKNOWN_TYPE):
        assert headers["event_id"] == json.loads(bad)["event_id"]


async def test_a_consumer_of_a_shared_topic_may_ignore_other_types(store: EventStore) -> None:
    svc = service(store, ignore_unknown=True)
    svc.consumer.handles(SUBMITTED)(record)
    svc.consumer.subscribe(svc.broker, TOPIC)
    mine, other = sealed(), sealed("voucher.provider.registered")
    async with TestKafkaBroker(svc.broker) as broker:
        await broker.publish(value(other), TOPIC)
        await broker.publish(value(mine), TOPIC)
    assert await applied(store) == [mine.event_id]
    assert svc.consumer.stats.ignored == 1
    assert svc.dead == []


async def test_an_ignoring_consumer_passes_by_other_types_on_their_header_alone(
    store: EventStore,
) -> None:
    svc = service(store, ignore_unknown=True)
    svc.consumer.handles(SUBMITTED)(record)
    svc.consumer.subscribe(svc.broker, TOPIC)
    mine = sealed()
    async with TestKafkaBroker(svc.broker) as broker:
        # not parsed, not hashed: no handler here wants the type its header names
        await broker.publish(b"{not json", TOPIC, headers={"type": "voucher.voucher.issued"})
        # a type it handles is checked whole: this one is no envelope
        await broker.publish(b"{not json", TOPIC, headers={"type": SUBMITTED})
        await broker.publish(value(mine), TOPIC, headers={"type": SUBMITTED})
    assert await applied(store) == [mine.event_id]
    assert svc.consumer.stats.ignored == 1
    assert [headers["error_kind"] for _, headers, _ in svc.dead] == [PoisonKind.INVALID]


async def test_headers_that_are_not_text_do_not_stop_the_consumer(store: EventStore) -> None:
    svc = service(store)
    svc.consumer.handles(SUBMITTED)(record)
    subscriber = svc.consumer.subscribe(svc.broker, TOPIC)
    e = sealed()
    raw = ConsumerRecord(
        topic=TOPIC,
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"app-1",
        value=value(e),
        checksum=None,
        serialized_key_size=5,
        serialized_value_size=0,
        headers=[("binary", b"\xff\x00"), ("null", None), ("type", SUBMITTED.encode())],
    )
    async with TestKafkaBroker(svc.broker):
        await subscriber.process_message((raw,))
    assert await applied(store) == [e.event_id]


def test_dead_letters_are_refused_without_acks_all() -> None:
    with pytest.raises(ValueError, match="acks='all'"):
        broker_dead_letters(KafkaBroker("localhost:9092"))
    with pytest.raises(ValueError, match="acks='all'"):
        broker_dead_letters(KafkaBroker("localhost:9092", acks=1))
    broker_dead_letters(KafkaBroker("localhost:9092", acks="all"))


def delivery(payload: bytes, offset: int) -> Delivery:
    return Delivery(topic=TOPIC, partition=1, offset=offset, key=b"app-1", value=payload)


async def test_a_failing_message_does_not_hold_back_the_rest_of_its_batch(
    store: EventStore,
) -> None:
    letters: list[DeadLetter] = []

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    consumer = IdempotentConsumer("batcher", store, dead_letters=sink, retry_delay=0)
    failing = sealed(seq=3)
    uows: list[UnitOfWork] = []

    @consumer.handles(SUBMITTED)
    async def verify(uow: UnitOfWork, envelope: Envelope) -> None:
        uows.append(uow)
        await record(uow, envelope)
        if envelope.event_id == failing.event_id:
            raise RuntimeError("boom")

    events = [sealed(seq=n) for n in (1, 2)] + [failing] + [sealed(seq=n) for n in (4, 5)]
    healthy = [e for e in events if e is not failing]

    first = await consumer.process([delivery(value(e), n) for n, e in enumerate(healthy)])
    assert first.applied == 4 and first.transactions == 1 and not first.fell_back
    assert len({id(u) for u in uows}) == 1  # the whole batch shared one transaction

    report = await consumer.process([delivery(value(e), 10 + n) for n, e in enumerate(events)])
    assert report.fell_back
    assert (report.applied, report.duplicates) == (0, 4)
    assert sorted(await applied(store)) == sorted(e.event_id for e in healthy)
    [letter] = letters
    assert letter.kind is PoisonKind.HANDLER_FAILED
    assert letter.event_id == failing.event_id
    assert letter.delivery.offset == 12


async def test_a_dlq_that_does_not_answer_makes_the_batch_come_again(store: EventStore) -> None:
    async def unreachable(letter: DeadLetter) -> None:
        raise ConnectionError("broker away")

    consumer = IdempotentConsumer("stubborn", store, dead_letters=unreachable)
    consumer.handles(SUBMITTED)(record)
    good = sealed()
    with pytest.raises(ConsumerUnavailable):
        await consumer.process([delivery(b"junk", 0), delivery(value(good), 1)])
    # the good message committed its transaction: its redelivery will be a duplicate
    again = await consumer.process([delivery(value(good), 1)])
    assert (again.applied, again.duplicates) == (0, 1)
    assert await applied(store) == [good.event_id]


async def test_a_database_that_does_not_answer_is_not_blamed_on_the_message(
    tmp_path: Path,
) -> None:
    missing_dir = tmp_path / "gone" / "nothing.db"
    engine = create_engine(f"sqlite+aiosqlite:///{missing_dir}")
    consumer = IdempotentConsumer(
        "patient",
        EventStore(engine, SystemClock()),
        dead_letters=lambda letter: pytest.fail("a database outage went to the DLQ"),
        retry_delay=0,
    )
    consumer.handles(SUBMITTED)(record)
    try:
        with pytest.raises(ConsumerUnavailable):
            await consumer.process([delivery(value(sealed()), 0)])
    finally:
        await engine.dispose()


def test_names_and_attempts_are_checked() -> None:
    store: Any = object()
    with pytest.raises(ValueError):
        IdempotentConsumer("", store)
    with pytest.raises(ValueError):
        IdempotentConsumer("x" * 101, store)
    with pytest.raises(ValueError):
        IdempotentConsumer("ok", store, max_attempts=0)
    consumer = IdempotentConsumer(f"ok-{uuid.uuid4().hex[:4]}", store)
    consumer.handles("a.b")(record)
    with pytest.raises(ValueError):
        consumer.handles("a.b")(record)


async def test_the_relay_is_woken_once_per_batch_that_applied_something(
    store: EventStore,
) -> None:
    wakes: list[int] = []
    consumer = IdempotentConsumer("voucher-verifier", store, on_applied=lambda: wakes.append(1))
    consumer.handles(SUBMITTED)(record)
    events = [sealed(seq=n) for n in (1, 2)]
    await consumer.process([delivery(value(e), n) for n, e in enumerate(events)])
    assert len(wakes) == 1
    assert sorted(await applied(store)) == sorted(e.event_id for e in events)
    await consumer.process([delivery(value(e), n) for n, e in enumerate(events)])
    assert len(wakes) == 1  # a redelivery applied nothing: nobody is woken


def verifier_and_issuer(
    store: EventStore,
) -> tuple[IdempotentConsumer, list[tuple[str, list[str]]]]:
    """A consumer whose submissions go to a batch handler and approvals one at a time; the
    calls each handler got, as ("batch" or "one", event ids)."""
    consumer = IdempotentConsumer("runs", store, retry_delay=0)
    calls: list[tuple[str, list[str]]] = []

    @consumer.handles_batch(SUBMITTED)
    async def verify_all(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
        calls.append(("batch", [e.event_id for e in envelopes]))
        for envelope in envelopes:
            await record(uow, envelope)

    @consumer.handles(APPROVED)
    async def issue(uow: UnitOfWork, envelope: Envelope) -> None:
        calls.append(("one", [envelope.event_id]))
        await record(uow, envelope)

    return consumer, calls


async def test_a_batch_handler_gets_its_events_of_a_batch_together_and_each_once(
    store: EventStore,
) -> None:
    """Partitions interleave in a batch: each handler is called once for all its events,
    in their order, as long as no application's events change their order."""
    consumer, calls = verifier_and_issuer(store)
    a, b, c, d = (sealed(seq=n, aggregate=f"app-{n}") for n in range(1, 5))
    approved = sealed(APPROVED, seq=2, aggregate="app-1")
    order = [a, b, b, approved, c, d]  # b redelivered inside the same batch
    report = await consumer.process([delivery(value(e), n) for n, e in enumerate(order)])

    assert (report.applied, report.duplicates, report.transactions) == (5, 1, 1)
    assert calls == [
        ("batch", [a.event_id, b.event_id, c.event_id, d.event_id]),
        ("one", [approved.event_id]),  # after app-1's submission, as it came
    ]
    assert await applied(store) == [e.event_id for e in (a, b, c, d, approved)]
    again = await consumer.process([delivery(value(e), 10 + n) for n, e in enumerate(order)])
    assert (again.applied, again.duplicates) == (0, 6)


async def test_a_batch_keeps_each_application_in_order_when_grouping_by_handler_cannot(
    store: EventStore,
) -> None:
    """app-2 is approved, then submitted again (a redelivery can do this): taking its
    submission with the batch's first one would put it before its approval."""
    consumer, calls = verifier_and_issuer(store)
    a = sealed(seq=1, aggregate="app-1")
    approved = sealed(APPROVED, seq=2, aggregate="app-2")
    again = sealed(seq=3, aggregate="app-2")
    order = [a, approved, again]
    await consumer.process([delivery(value(e), n) for n, e in enumerate(order)])
    assert calls == [
        ("batch", [a.event_id]),
        ("one", [approved.event_id]),
        ("batch", [again.event_id]),
    ]
    assert await applied(store) == [e.event_id for e in order]


async def test_runs_of_different_applications_commit_apart_and_only_a_failing_one_is_redone(
    store: EventStore,
) -> None:
    """Two stages' events for different applications in one batch: each stage's run commits
    on its own, so one stage failing on the batch leaves the other's work standing, and
    only its own events are then taken one by one."""
    consumer = IdempotentConsumer("runs", store, retry_delay=0)
    calls: list[tuple[str, list[str]]] = []

    @consumer.handles_batch(SUBMITTED)
    async def verify_all(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
        calls.append(("verify", [e.aggregate_id for e in envelopes]))
        for envelope in envelopes:
            await record(uow, envelope)

    @consumer.handles_batch(APPROVED)
    async def issue_all(uow: UnitOfWork, envelopes: Sequence[Envelope]) -> None:
        calls.append(("issue", [e.aggregate_id for e in envelopes]))
        for envelope in envelopes:
            await record(uow, envelope)
        if len(envelopes) > 1:
            raise RuntimeError("two certificates clash")  # alone, each goes through

    order = [
        sealed(seq=1, aggregate="app-1"),
        sealed(APPROVED, seq=3, aggregate="app-3"),
        sealed(seq=1, aggregate="app-2"),
        sealed(APPROVED, seq=3, aggregate="app-4"),
    ]
    report = await consumer.process([delivery(value(e), n) for n, e in enumerate(order)])

    assert (report.applied, report.duplicates, report.fell_back) == (4, 0, True)
    assert report.transactions == 4  # the two runs, then app-3 and app-4 alone
    assert sorted(calls) == [
        ("issue", ["app-3"]),
        ("issue", ["app-3", "app-4"]),
        ("issue", ["app-4"]),
        ("verify", ["app-1", "app-2"]),  # once: its commit stood
    ]
    assert sorted(await applied(store)) == sorted(e.event_id for e in order)
