"""Relay throughput to the embedded broker, and the broker hop latency at half that rate.

Throughput: 20,000 events of about 1 KB over 200 applications, drained by the
relay in batches, beside a bare aiokafka producer sending the same messages
(the ceiling the relay's database work is measured against).
Latency: events appended at half the relay's measured peak while the relay runs;
a FastStream batch subscriber notes, for each record, the time from the relay's
send (the record's CreateTime) to the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.append import PAYLOAD
from bench.common import drop_database, fresh_database, line, percentile
from shared.broker import EmbeddedBroker, die_with_parent, wait_for_broker
from shared.clock import SystemClock
from shared.contracts import Actor, NewEvent, Role
from shared.eventstore import NEW_STREAM, EventContext, EventStore, StreamVersion, create_engine
from shared.migrations import migrations_of, upgrade
from shared.relay import OutboxRelay
from shared.topics import TopicSpec, ensure_topics

EVENTS, APPLICATIONS = 20_000, 200
CONTEXT = EventContext(actor=Actor(sub="bench", role=Role.SYSTEM), correlation_id="bench")
EVENT = NewEvent(type="bench.application.noted", payload=PAYLOAD)


@contextlib.asynccontextmanager
async def broker_for_bench() -> AsyncIterator[str]:
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    embedded = EmbeddedBroker(port=port)
    embedded.start()
    try:
        await wait_for_broker(embedded.bootstrap_servers)
        yield embedded.bootstrap_servers
    finally:
        embedded.stop()


async def fill(store: EventStore, per_application: int) -> None:
    versions = {f"app-{n}": NEW_STREAM for n in range(APPLICATIONS)}
    for _ in range(per_application // 10):
        async with store.transaction() as uow:
            for app, version in versions.items():
                appended = await uow.append(app, version, [EVENT] * 10, CONTEXT)
                versions[app] = StreamVersion.after(appended)


async def bare_producer_rate(bootstrap: str, topic: str, store: EventStore) -> float:
    messages = await store.pending_messages(EVENTS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=2, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        started = time.perf_counter()
        for chunk in range(0, len(messages), 2000):
            futures = [
                await producer.send(topic, m.value, key=m.key, headers=m.headers)
                for m in messages[chunk : chunk + 2000]
            ]
            await asyncio.gather(*futures)
        return len(messages) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def relay_rate(relay: OutboxRelay) -> float:
    started = time.perf_counter()
    sent = await relay.drain()
    elapsed = time.perf_counter() - started
    await relay.close()
    return sent / elapsed


async def hop_latency(
    store: EventStore, bootstrap: str, topic: str, rate: float, seconds: float = 6.0
) -> list[float]:
    """Writers (one process) append at ``rate``; this process relays; a consumer process
    notes each record's hop from the relay's send to its handler."""
    per_tick, interval = max(1, round(rate * 0.01)), 0.01
    expected = per_tick * round(seconds / interval)
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.hop_consumer",
        bootstrap,
        topic,
        str(expected),
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent,
    )
    assert consumer.stdout is not None
    if (await consumer.stdout.readline()).strip() != b"ready":
        raise RuntimeError("the latency consumer did not start")
    relay = OutboxRelay(store, bootstrap, topic, batch_size=1000, poll_interval=0.002)
    stop = asyncio.Event()
    relay_task = asyncio.create_task(relay.run(stop))
    writers = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.hop_appender",
        store.engine.url.render_as_string(hide_password=False),
        str(rate),
        str(seconds),
        preexec_fn=die_with_parent,
    )
    await writers.wait()
    output = (await consumer.stdout.read()).decode()
    await consumer.wait()
    stop.set()
    await relay_task
    latencies: list[float] = json.loads(output)
    return latencies[len(latencies) // 10 :]  # drop the warm-up tenth


async def run() -> dict[str, Any]:
    async with broker_for_bench() as bootstrap:
        dsn, url = await fresh_database("relay")
        engine = create_engine(url)
        store = EventStore(engine, SystemClock())
        try:
            # the log as production migrates it; oversight's schema has no applications table
            await upgrade(engine, migrations_of("oversight"))
            await fill(store, EVENTS // APPLICATIONS)
            topics = [TopicSpec(f"bench.relay.{n}", 8) for n in range(3)]
            await ensure_topics(bootstrap, topics)
            bare = await bare_producer_rate(bootstrap, topics[0].name, store)
            ours = await relay_rate(OutboxRelay(store, bootstrap, topics[1].name, batch_size=2000))
            target = ours / 2
            latencies = await hop_latency(store, bootstrap, topics[2].name, target)
        finally:
            await engine.dispose()
            await drop_database(dsn)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"relay: {EVENTS:,} events of ~1 KB over {APPLICATIONS} applications, PostgreSQL to Tansu"
    )
    line("bare aiokafka producer, same messages", f"{bare:,.0f} events/s")
    line(
        "outbox relay (read, send, acks=all, mark)",
        f"{ours:,.0f} events/s",
        f"ratio {ours / bare:.2f} of bare; target >= 20,000/s",
    )
    line(
        f"hop latency at {target:,.0f} events/s (half of peak)",
        f"p50 {p50:.1f} ms",
        f"p99 {p99:.1f} ms (target < 50 ms), {len(latencies):,} samples",
    )
    return {
        "bare_events_per_s": bare,
        "relay_events_per_s": ours,
        "latency_rate": target,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
    }
