"""Poison on every topic a service consumes goes to the DLQ with its reason, and the service
catches up (issue 9, "Reliability and security proof").

Each service runs in-process on PostgreSQL and the real broker, on topics of its own. Its
subscriptions are read off its running app (the FastStream broker's subscribers), not
listed here: a new subscription is covered as soon as it exists. Every topic they read
gets poison records, then a valid record on each partition. Then, for every subscription
and every topic it reads:

- each poison record is on the DLQ exactly once, as ``incentives dlq list`` reads it, from
  that consumer, naming its source (topic, partition, offset), its kind and its reason;
- the valid records were applied (in the consumer's inbox; a checkpoint verified) and none
  was dead-lettered: the consumer did not crash, it moved on;
- the group's committed offset reaches the high watermark of every partition: lag 0.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fastapi import FastAPI
from faststream.kafka.subscriber.usecase import LogicSubscriber

from services.oversight.adapters.tables import checkpoints as oversight_checkpoints
from shared.checkpoints import ZERO_HASH, SigningKey, signed_bytes
from shared.consumer import IdempotentConsumer, PoisonKind
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role, hash_fields
from shared.contracts.envelope import format_timestamp
from shared.contracts.merkle import EMPTY_ROOT
from shared.dlq import Letter, list_letters
from shared.domain.support import GRANT_EVENTS
from shared.eventstore import inbox
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import DLQ_TOPIC, SERVICES, checkpoints_topic, events_topic
from tests.integration.harness import running, service_settings

pytestmark = [pytest.mark.postgres, pytest.mark.kafka]

AT = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
WITHIN = 45.0
"""Seconds a service has to dead-letter its poison and catch up (it needs a few)."""


def create_app_of(service: str) -> Callable[..., FastAPI]:
    """The service's composition root, as ``uvicorn services.<service>.main:create_app``."""
    factory: Callable[..., FastAPI] = importlib.import_module(f"services.{service}.main").create_app
    return factory


# --- what the running app consumes -------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    group: str
    topics: tuple[str, ...]
    consumer: IdempotentConsumer | None
    """The idempotent consumer behind it; None: raw records (``subscribe_records``)."""


def subscriptions_of(runtime: ServiceRuntime) -> list[Subscription]:
    consumers = {c.name: c for c in runtime.extras.get("consumers", [])}
    found = []
    for subscriber in runtime.broker.subscribers:
        assert isinstance(subscriber, LogicSubscriber), subscriber
        group = str(subscriber.group_id)
        found.append(Subscription(group, tuple(subscriber.topic_names), consumers.get(group)))
    assert set(consumers) <= {s.group for s in found}, "a consumer that subscribes nothing"
    return found


def topic_kind(topic: str, prefix: str) -> tuple[str, str]:
    """``("events" | "checkpoints", service)`` of a topic of the deployment."""
    name = topic.removeprefix(prefix)
    for service in SERVICES:
        if name == events_topic(service):
            return "events", service
        if name == checkpoints_topic(service):
            return "checkpoints", service
    raise AssertionError(f"{topic}: a new kind of topic; say here what is valid and poison on it")


# --- records ---------------------------------------------------------------------------------------

Expectation = tuple[PoisonKind, str] | None
"""A dead letter's kind and a fragment of its reason; None: no dead letter."""


def never(_: IdempotentConsumer) -> Expectation:
    return None


@dataclass(frozen=True)
class Record:
    name: str
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    expect: Callable[[IdempotentConsumer], Expectation] | None = None
    """What an idempotent consumer does with this poison (a raw subscriber dead-letters
    every poison record); None: a valid record, applied by whoever handles it."""
    event: Envelope | None = None
    """The event it carries, if it is one."""


def seal(event_type: str, payload: dict[str, Any], aggregate_id: str, firm_id: str) -> Envelope:
    return Envelope.seal(
        aggregate_id=aggregate_id,
        aggregate_seq=1,
        event=NewEvent(type=event_type, payload=payload),
        occurred_at=AT,
        actor=Actor(sub="poison-test", role=Role.SYSTEM),
        firm_id=firm_id,
        correlation_id=f"corr-{aggregate_id}",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def as_relayed(name: str, event: Envelope, position: int, **options: Any) -> Record:
    """``event`` as the relay sends it: the envelope, with the relay's headers."""
    headers = (
        ("type", event.type.encode()),
        ("event_id", event.event_id.encode()),
        ("correlation_id", event.correlation_id.encode()),
        ("schema_version", str(event.schema_version).encode()),
        ("position", str(position).encode()),
    )
    value = json.dumps(event.to_json_dict()).encode()
    return Record(name, value, headers, event=event, **options)


def grant_type(service: str) -> str:
    """The programme's grant event: every programme's support read model reads it."""
    [found] = [t for t, (programme, _) in GRANT_EVENTS.items() if programme == service]
    return found


def grant(service: str, tag: str) -> Envelope:
    """A valid grant of ``service``, with the members of the shared grant contract."""
    _, year_member = GRANT_EVENTS[grant_type(service)]
    firm = f"firm-{tag}"
    payload = {"firm_id": firm, "amount": 1_000, year_member: 2026, "cost_reference": tag}
    return seal(grant_type(service), payload, f"app-{tag}", firm)


def always(kind: PoisonKind, fragment: str) -> Callable[[IdempotentConsumer], Expectation]:
    return lambda _: (kind, fragment)


def common_poison() -> list[Record]:
    """Poison on any topic: not JSON, no value at all, JSON that is no object of ours."""
    invalid = PoisonKind.INVALID
    return [
        Record(
            "garbage",
            b"\x00\xff\xfe{not json",
            (("junk", b"\xff\xfe\x00"),),  # a header FastStream cannot decode either
            always(invalid, "not JSON"),
        ),
        Record("tombstone", None, expect=always(invalid, "not JSON")),
        Record("array", b"[1, 2, 3]", expect=always(invalid, "not a JSON object")),
        Record(
            "stranger",
            json.dumps({"event_id": "evt-stranger", "hello": "world"}).encode(),
            expect=always(invalid, "not an event envelope"),
        ),
    ]


def events_poison(service: str, tag: str) -> list[Record]:
    """Poison of an events topic: envelopes that do not verify, or do not fit their type."""
    original = seal(grant_type(service), {"amount": 1}, f"app-tampered-{tag}", "firm-x")
    tampered = {**original.to_json_dict(), "payload": {"amount": 10**12}}
    unpublished = {**original.to_json_dict(), "occurred_at": "2026-11-25T01:00:00+00:00"}
    unpublished["hash"] = hash_fields(unpublished)  # hashes as it stands, not as published
    # in order as a link of its chain, but its payload is not what its type's contract says
    misfit = seal(grant_type(service), {"amount": "plenty"}, f"app-misfit-{tag}", "firm-x")

    def misfit_expect(consumer: IdempotentConsumer) -> Expectation:
        if misfit.type in consumer.event_types:  # a handler of its own, that reads it
            return PoisonKind.HANDLER_FAILED, f"{misfit.type} handler failed"
        return None  # passed by; or kept by a consumer of every event (oversight's log)

    # valid JSON and a valid link, but no PostgreSQL text column takes its ids
    nul = grant(service, f"nul\x00{tag}")

    def nul_expect(consumer: IdempotentConsumer) -> Expectation:
        if consumer.applies(nul.type):
            return PoisonKind.HANDLER_FAILED, f"{nul.type} handler failed"
        return None  # passed by, unread

    return [
        Record(
            "tampered",
            json.dumps(tampered).encode(),
            expect=always(PoisonKind.TAMPERED, "does not match its hash"),
        ),
        Record(
            "unpublished",
            json.dumps(unpublished).encode(),
            expect=always(PoisonKind.INVALID, "not in its published form"),
        ),
        as_relayed("misfit", misfit, 1, expect=misfit_expect),
        as_relayed("nul", nul, 2, expect=nul_expect),
    ]


def checkpoint(service: str, settings: ServiceSettings) -> dict[str, Any]:
    """The checkpoint of ``service``'s empty log, signed with the key oversight trusts in
    development (that of its state directory)."""
    key = SigningKey.from_seed(
        settings.signing_seed(), settings.checkpoint_key_valid_from, settings.checkpoint_key_id
    )
    body: dict[str, Any] = {
        "service": service,
        "tree_size": 0,
        "last_position": 0,
        "root_hash": EMPTY_ROOT.hex(),
        "previous_checkpoint_hash": ZERO_HASH,
        "sealed_at": format_timestamp(AT),
        "key_id": key.key_id,
    }
    body["signature"] = base64.b64encode(key.sign(signed_bytes(body))).decode()
    return body


def checkpoints_poison(service: str, settings: ServiceSettings) -> list[Record]:
    """Poison of a checkpoints topic: objects that are not checkpoints of its service."""
    other = next(s for s in SERVICES if s != service)
    huge = {**checkpoint(service, settings), "tree_size": 1e300}
    nul = {**checkpoint(service, settings), "sealed_at": "2026-11-25\x00"}
    not_envelope = always(PoisonKind.INVALID, "not an event envelope")
    return [
        Record("other-service", json.dumps(checkpoint(other, settings)).encode(), (), not_envelope),
        Record("huge-size", json.dumps(huge).encode(), (), not_envelope),
        Record("nul-sealed-at", json.dumps(nul).encode(), (), not_envelope),
        as_relayed("an-event", grant(service, "on-checkpoints"), 1, expect=never),
    ]


def records_for(topic: str, prefix: str, settings: ServiceSettings) -> tuple[list[Record], Any]:
    """The poison for ``topic``, and a function of a partition giving a valid record for it."""
    kind, owner = topic_kind(topic, prefix)
    if kind == "events":

        def valid_event(partition: int) -> Record:
            return as_relayed("valid", grant(owner, f"{owner}-{partition}"), partition + 1)

        return common_poison() + events_poison(owner, owner), valid_event

    def valid_checkpoint(partition: int) -> Record:
        return Record("valid", json.dumps(checkpoint(owner, settings)).encode())

    return common_poison() + checkpoints_poison(owner, settings), valid_checkpoint


@dataclass(frozen=True)
class Sent:
    topic: str
    partition: int
    offset: int
    record: Record


async def produce(
    bootstrap: str, topic: str, poison: list[Record], valid: Callable[[int], Record]
) -> list[Sent]:
    """The poison (keyed, so spread over partitions), then a valid record on every partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        sent = []
        for n, record in enumerate(poison):
            meta = await producer.send_and_wait(
                topic, record.value, key=f"poison-{n}".encode(), headers=list(record.headers)
            )
            sent.append(Sent(topic, meta.partition, meta.offset, record))
        for partition in sorted(await producer.partitions_for(topic)):
            record = valid(partition)
            meta = await producer.send_and_wait(
                topic, record.value, partition=partition, headers=list(record.headers)
            )
            sent.append(Sent(topic, meta.partition, meta.offset, record))
        return sent
    finally:
        await producer.stop()


# --- reading back -------------------------------------------------------------------------------


async def lags(bootstrap: str, subscriptions: list[Subscription]) -> dict[tuple[str, str], int]:
    """Each group's lag on each topic it reads: the fetch high watermark (right on Tansu,
    where ``end_offsets`` is not) minus the committed offset, summed over partitions."""
    topics = sorted({t for s in subscriptions for t in s.topics})
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    await reader.start()
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t))
        ]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        marks: dict[TopicPartition, int] = {}
        while len(marks) < len(partitions):  # read each partition to its end
            await reader.getmany(*partitions, timeout_ms=50, max_records=10_000)
            for tp in partitions:
                mark = reader.highwater(tp)
                if mark is not None and await reader.position(tp) >= mark:
                    marks[tp] = mark
    finally:
        await reader.stop()
    found: dict[tuple[str, str], int] = {}
    for subscription in subscriptions:
        group = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=subscription.group, enable_auto_commit=False
        )
        await group.start()  # joins nothing: it only asks for the group's committed offsets
        try:
            for topic in subscription.topics:
                found[(subscription.group, topic)] = sum(
                    [
                        mark - (await group.committed(tp) or 0)
                        for tp, mark in marks.items()
                        if tp.topic == topic
                    ]
                )
        finally:
            await group.stop()
    return found


Coordinates = tuple[str, str, int, int]
"""(consumer, source topic, partition, offset) of a dead letter."""


def coordinates(letter: Letter) -> Coordinates:
    return letter.consumer, letter.source_topic, letter.source_partition, letter.source_offset


async def applied(runtime: ServiceRuntime) -> set[tuple[str, str]]:
    """(consumer, event id) of every event a consumer of the service applied."""
    async with runtime.store.engine.connect() as connection:
        rows = await connection.execute(sa.select(inbox.c.consumer, inbox.c.event_id))
        return {(r.consumer, r.event_id) for r in rows}


async def verified_checkpoints(runtime: ServiceRuntime) -> set[tuple[str, int]]:
    """(service, tree size) of the checkpoints oversight verified."""
    t = oversight_checkpoints
    async with runtime.store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(t.c.service, t.c.tree_size).where(t.c.verified.is_(True))
        )
        return {(r.service, int(r.tree_size)) for r in rows}


@dataclass
class Expected:
    letters: dict[Coordinates, tuple[PoisonKind, str]]
    applied: set[tuple[str, str]]
    """(consumer, event id) that must be in the inbox."""
    checkpoints: set[tuple[str, int]]
    """(service, tree size) oversight must verify."""


def expected_of(subscriptions: list[Subscription], sent: list[Sent], prefix: str) -> Expected:
    found = Expected({}, set(), set())
    for subscription in subscriptions:
        consumer = subscription.consumer
        for s in (s for s in sent if s.topic in subscription.topics):
            record = s.record
            if record.expect is not None:
                # raw records: what is not theirs is poison; an event consumer tells kinds apart
                outcome = (PoisonKind.INVALID, "") if consumer is None else record.expect(consumer)
                if outcome is not None:
                    found.letters[(subscription.group, s.topic, s.partition, s.offset)] = outcome
                    continue
            event = record.event
            if consumer is not None and event is not None and consumer.applies(event.type):
                found.applied.add((consumer.name, event.event_id))
            if consumer is None and topic_kind(s.topic, prefix)[0] == "checkpoints":
                found.checkpoints.add((topic_kind(s.topic, prefix)[1], 0))
    return found


async def until_settled(
    runtime: ServiceRuntime,
    bootstrap: str,
    dlq: str,
    subscriptions: list[Subscription],
    expected: Expected,
) -> tuple[list[Letter], dict[tuple[str, str], int], set[tuple[str, str]], set[Any]]:
    """Poll until every expected letter is in, the valid records applied and the lag is 0
    everywhere (or time is up): what was last seen."""
    deadline = asyncio.get_running_loop().time() + WITHIN
    while True:
        letters = await list_letters(bootstrap, dlq)
        lag = await lags(bootstrap, subscriptions)
        done = await applied(runtime)
        verified = await verified_checkpoints(runtime) if expected.checkpoints else set()
        settled = (
            set(expected.letters) <= {coordinates(x) for x in letters}
            and expected.applied <= done
            and expected.checkpoints <= verified
            and not any(lag.values())
        )
        if settled or asyncio.get_running_loop().time() > deadline:
            return letters, lag, done, verified
        await asyncio.sleep(0.2)


# --- the test -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", [*SERVICES, "oversight"])
async def test_poison_on_every_consumed_topic_is_dead_lettered_and_the_service_catches_up(
    service: str,
    postgres_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    prefix = unique_name("poison") + "."
    settings = service_settings(service, postgres_url, kafka_bootstrap, prefix, tmp_path)
    async with running(create_app_of(service), settings) as harness:
        runtime: ServiceRuntime = harness.app.state.runtime
        subscriptions = subscriptions_of(runtime)
        assert subscriptions, f"{service} consumes nothing?"

        sent: list[Sent] = []
        for topic in sorted({t for s in subscriptions for t in s.topics}):
            poison, valid = records_for(topic, prefix, settings)
            sent += await produce(kafka_bootstrap, topic, poison, valid)
        expected = expected_of(subscriptions, sent, prefix)
        assert expected.letters and (expected.applied or expected.checkpoints)

        dlq = prefix + DLQ_TOPIC
        letters, lag, done, verified = await until_settled(
            runtime, kafka_bootstrap, dlq, subscriptions, expected
        )

    by_source = {(s.topic, s.partition, s.offset): s.record for s in sent}

    def named(at: Coordinates) -> tuple[str, str, str]:
        """(consumer, topic, poison) without the deployment's prefix, for the messages."""
        group, topic, partition, offset = at
        record = by_source.get((topic, partition, offset))
        name = record.name if record else f"{partition}@{offset}"
        return group.removeprefix(prefix), topic.removeprefix(prefix), name

    # every poison record, once, from each consumer of its topic, with its reason
    counts = Counter(coordinates(x) for x in letters)
    assert [named(at) for at, n in counts.items() if n != 1] == [], "dead-lettered twice"
    missing = [named(at) for at in expected.letters if at not in counts]
    assert missing == [], "poison not dead-lettered (committed, or stuck)"
    extra = [named(at) for at in counts if at not in expected.letters]
    assert extra == [], "dead-lettered, but valid or not this consumer's to read"
    for letter in letters:
        at = coordinates(letter)
        kind, fragment = expected.letters[at]
        assert (letter.kind, fragment in letter.reason) == (kind, True), (named(at), letter)
        assert letter.reason.strip(), named(at)
        record = by_source[at[1:]]
        assert letter.value == (record.value or b""), named(at)  # the bytes as they came

    # the valid records after the poison were applied: no consumer stopped
    assert expected.applied - done == set(), "valid events not applied"
    assert expected.checkpoints - verified == set(), "valid checkpoints not verified"
    # and every consumer group caught up with every topic it reads
    behind = {(g.removeprefix(prefix), t.removeprefix(prefix)): n for (g, t), n in lag.items() if n}
    assert behind == {}, "lag did not return to 0"
