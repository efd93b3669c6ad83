"""The outbox relay: the event log is the outbox; unpublished events go to Kafka in position order.

At least once: an event is marked published only after the broker acknowledged it
(acks=all), so a crash between the two re-sends it and consumers drop the
duplicate by ``event_id``. One relay per database publishes at a time: a
PostgreSQL advisory lock, or an exclusive file lock beside a SQLite file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from typing import IO

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.eventstore import EventStore, is_sqlite

log = logging.getLogger(__name__)


class OutboxRelay:
    """Publishes a service's event log to ``topic``; run one per service process."""

    def __init__(
        self,
        store: EventStore,
        bootstrap_servers: str,
        topic: str,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.05,
        max_backoff: float = 5.0,
        linger_ms: int = 2,
    ) -> None:
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.linger_ms = linger_ms
        self.published_total = 0
        self.last_batch_seconds = 0.0
        self.holds_lock = False
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None

    def notify(self) -> None:
        """New events were committed: publish now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop`` is set (or the task is cancelled), riding out broker outages."""
        stop = stop or asyncio.Event()
        try:
            async with self._exclusive(stop):
                if not stop.is_set():
                    await self._loop(stop)
        finally:
            await self._stop_producer()

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                if self._producer is None:
                    self._producer = await self._start_producer()
                published = await self.publish_pending()
                backoff = 0.1
            except Exception as error:  # broker or database away: back off, never die
                log.warning("relay to %s failing, retry in %.1fs: %r", self.topic, backoff, error)
                await self._stop_producer()
                await _sleep_or(stop, backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            if published < self.batch_size:
                self._wake.clear()
                await _sleep_or(stop, self.poll_interval, self._wake)

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished events; returns how many were acknowledged."""
        pending = await self.store.pending_messages(self.batch_size)
        if not pending:
            return 0
        started = time.perf_counter()
        producer = self._producer or await self._start_producer()
        if self._producer is None:
            self._producer = producer
        futures = []
        for message in pending:
            futures.append(
                await producer.send(
                    self.topic, message.value, key=message.key, headers=message.headers
                )
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        acknowledged = []
        failure: BaseException | None = None
        for event, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                failure = result
                break  # never mark past a failure: the rest is re-sent in order next time
            acknowledged.append(event.position)
        await self.store.mark_published(acknowledged)
        self.published_total += len(acknowledged)
        self.last_batch_seconds = time.perf_counter() - started
        if failure is not None:
            raise failure
        return len(acknowledged)

    async def republish(self) -> int:
        """Queue the whole log again, for a broker that lost its data; returns the event count."""
        count = await self.store.mark_all_unpublished()
        self.notify()
        return count

    async def _start_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            enable_idempotence=False,  # Tansu refuses idempotent producers; consumers dedupe
            linger_ms=self.linger_ms,
            max_batch_size=256 * 1024,
            request_timeout_ms=10_000,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    @contextlib.asynccontextmanager
    async def _exclusive(self, stop: asyncio.Event) -> AsyncIterator[None]:
        """Hold the database's relay lock for as long as the block runs (waiting for it first)."""
        if is_sqlite(self.store.engine):
            async with self._file_lock(stop):
                yield
        else:
            async with self._advisory_lock(stop):
                yield

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, stop: asyncio.Event) -> AsyncIterator[None]:
        key = _lock_key(self.topic)
        async with self.store.engine.connect() as connection:
            while not stop.is_set():
                got = (
                    await connection.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                ).scalar_one()
                await connection.commit()
                if got:
                    break
                await _sleep_or(stop, 0.5)
            self.holds_lock = not stop.is_set()
            try:
                yield
            finally:
                if self.holds_lock:
                    self.holds_lock = False
                    with contextlib.suppress(Exception):
                        await connection.execute(
                            sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key}
                        )
                        await connection.commit()

    @contextlib.asynccontextmanager
    async def _file_lock(self, stop: asyncio.Event) -> AsyncIterator[None]:
        database = self.store.engine.url.database or "memory"
        # a local lock file: opening it cannot block for long
        handle: IO[bytes] = open(f"{database}.relay.lock", "ab")  # noqa: SIM115, ASYNC230
        try:
            while not stop.is_set():
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await _sleep_or(stop, 0.5)
            self.holds_lock = not stop.is_set()
            yield
        finally:
            self.holds_lock = False
            handle.close()  # closing releases the lock


def _lock_key(topic: str) -> int:
    digest = hashlib.sha256(f"outbox-relay:{topic}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _sleep_or(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None = None) -> None:
    """Sleep ``seconds`` unless ``stop`` (or ``wake``) is set first."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.ensure_future(wake.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


__all__ = ["OutboxRelay"]
