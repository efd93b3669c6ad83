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
import functools
import hashlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Coroutine
from typing import IO, Any, NamedTuple, TypeVar

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.metadata import MetadataRequest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.eventstore import EventStore, OutboxMessage, PendingBatch, is_sqlite

log = logging.getLogger(__name__)

T = TypeVar("T")


@functools.lru_cache(maxsize=65536)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


async def _cluster_id(producer: AIOKafkaProducer) -> str:
    """The id of the cluster the producer's broker belongs to (a metadata request for no topic)."""
    client = producer.client
    response: Any = await client.send(client.get_random_node(), MetadataRequest([]))
    return str(response.cluster_id)


def _connections(producer: AIOKafkaProducer) -> list[Any] | None:
    """The producer's broker connections (all it sends through), or None if this version of
    aiokafka does not show them."""
    connections = getattr(producer.client, "_conns", None)
    return list(connections.values()) if isinstance(connections, dict) else None


class _Answered(NamedTuple):
    """The cluster id a broker gave, and the connections open when it answered."""

    cluster_id: str
    connections: weakref.WeakSet[Any]

    def still(self, producer: AIOKafkaProducer, cluster_id: str) -> bool:
        """Whether ``cluster_id`` is the answer, and the producer has talked to no broker
        since but over those connections: a restarted broker cannot keep a connection."""
        if cluster_id != self.cluster_id:
            return False
        now = _connections(producer)
        if not now:
            return False
        return all(c in self.connections and c.connected() for c in now)


def key_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """Kafka's default key partitioning (murmur2, as the Java client), remembering each key's hash.

    aiokafka's murmur2 is pure Python and an application's events share one key, so the
    relay hashes each application once instead of once per event.
    """
    if key is None:
        return int(DefaultPartitioner()(key, all_partitions, available))
    return all_partitions[_key_hash(key) % len(all_partitions)]


def _append(builder: Any, message: OutboxMessage) -> bool:
    """Add ``message`` to a record batch; ``False`` when the batch is full."""
    added = builder.append(
        key=message.key, value=message.value, timestamp=None, headers=message.headers
    )
    return added is not None


class OutboxRelay:
    """Publishes a service's event log to ``topic``; run one per service process.

    Nothing connects until :meth:`run` or :meth:`publish_pending` is awaited.
    Plain attributes for metrics: ``published_total``, ``last_batch_seconds``
    (read, send, acknowledge and mark of the last batch), ``failures`` (failed
    attempts since start) and ``holds_lock``.
    """

    def __init__(
        self,
        store: EventStore,
        bootstrap_servers: str,
        topic: str,
        *,
        batch_size: int = 1000,
        poll_interval: float = 0.05,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
        lock_retry_interval: float = 0.5,
        lock_check_interval: float = 1.0,
        linger_ms: int = 2,
        producer_options: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.lock_retry_interval = lock_retry_interval
        self.lock_check_interval = lock_check_interval
        self.linger_ms = linger_ms
        self.producer_options = dict(producer_options or {})
        self.published_total = 0
        self.last_batch_seconds = 0.0
        self.failures = 0
        self.holds_lock = False
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._answered: _Answered | None = None

    def notify(self) -> None:
        """New events were committed: publish now rather than at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until ``stop`` is set (or the task is cancelled), riding out broker outages.

        Waits first for the database's relay lock, so a second relay stands by
        until the first one stops or its process dies. The lock is checked every
        ``lock_check_interval``: a relay whose lock went with its database session
        (the connection was cut, the server ended it) stops publishing within that
        time, since another relay may hold the lock now, and waits for it again.
        """
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                lost = asyncio.Event()
                async with self._exclusive(stop, lost):
                    if stop.is_set():
                        break
                    halt = asyncio.Event()
                    watching = [
                        asyncio.ensure_future(_set_when(stop, halt)),
                        asyncio.ensure_future(_set_when(lost, halt)),
                    ]
                    try:
                        await self._loop(halt)
                    finally:
                        for task in watching:
                            task.cancel()
                if lost.is_set():
                    log.warning("relay to %s lost its lock: standing by", self.topic)
        finally:
            await self.close()

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = self.min_backoff
        while not stop.is_set():
            # cleared before reading, so a notify() during the drain is not lost
            self._wake.clear()
            try:
                await self.drain(stop)
                backoff = self.min_backoff
            except Exception as error:  # broker or database away: back off, never die
                self.failures += 1
                log.warning("relay to %s failing, retry in %.1fs: %r", self.topic, backoff, error)
                await self.close()
                await _sleep_or(stop, backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            await _sleep_or(stop, self.poll_interval, self._wake)

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished events; returns how many were acknowledged.

        Marks published only the acknowledged prefix of the batch, in position
        order; if any send failed, the rest is re-sent in order next time and the
        failure is raised. Takes no relay lock: for tests, benchmarks and tools.
        """
        read = await _finish(self._read())
        while read.messages and not await self._same_broker(read):
            read = await _finish(self._read())  # the whole log, queued again
        if not read.messages:
            return 0
        started = time.perf_counter()
        acknowledged, failure = await self._send(read.messages)
        await self._mark(acknowledged, read.epoch)
        self.last_batch_seconds = time.perf_counter() - started
        if failure is not None:
            raise failure
        return len(acknowledged)

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Publish until nothing is pending (or ``stop`` is set); returns how many were marked.

        Pipelined while there is a backlog: while one full batch is sent, the next is
        read; the previous one is marked meanwhile. Without a backlog the next read waits
        for the send to be acknowledged, so that it finds what committed meanwhile: read
        during the send, it would find little, and what committed during the send would
        wait a round longer. Still one batch on the wire at a time, so a retry cannot
        reorder an application's events. Before each batch the broker's cluster id is
        checked (:meth:`_same_broker`). Takes no relay lock; :meth:`run` holds it around this.
        """
        stop = stop or asyncio.Event()
        marked_before = self.published_total
        marking: asyncio.Task[None] | None = None
        being_marked: list[int] = []
        reading: asyncio.Task[PendingBatch] | None = None
        read = await _finish(self._read())
        try:
            while read.messages and not stop.is_set():
                if not await self._same_broker(read):
                    if marking is not None:
                        await marking
                        marking = None
                    read = await _finish(self._read())  # the whole log, queued again
                    continue
                started = time.perf_counter()
                batch = read.messages
                sending = [message.position for message in batch]
                in_flight = being_marked + sending if marking is not None else sending
                if len(batch) >= self.batch_size:  # a backlog: the next batch is waiting
                    reading = asyncio.create_task(
                        _finish(self._read(after=sending[-1], in_flight=in_flight))
                    )
                acknowledged, failure = await self._send(batch)
                if marking is not None:
                    await marking
                    marking = None
                if failure is not None:
                    await self._mark(acknowledged, read.epoch)
                    raise failure
                marking = asyncio.create_task(self._mark(acknowledged, read.epoch))
                being_marked = acknowledged
                if reading is not None:
                    following = await reading
                    reading = None
                else:
                    following = await _finish(self._read(after=sending[-1], in_flight=in_flight))
                if following.messages and (
                    following.epoch != read.epoch  # the log was queued again meanwhile
                    or following.passed_over
                ):
                    # a transaction committed late below the read cursor: its events must go
                    # before anything newer of the same application, so read from the start
                    await marking
                    marking = None
                    following = await _finish(self._read())
                read = following
                self.last_batch_seconds = time.perf_counter() - started
            if marking is not None:
                await marking
                marking = None
        finally:
            if reading is not None:
                await _settle(reading)
            if marking is not None:
                # the batch was acknowledged: record it if we can, else it is simply re-sent
                await _settle(marking)
        return self.published_total - marked_before

    async def _read(self, after: int = 0, in_flight: list[int] | None = None) -> PendingBatch:
        """The next batch to send after position ``after``, with the broker state it is to be
        sent under; ``in_flight``: what was read at or below ``after`` and is not yet marked."""
        return await self.store.pending_batch(self.batch_size, after, in_flight or ())

    async def _same_broker(self, read: PendingBatch) -> bool:
        """Whether the broker answering is the cluster the log was published to when ``read``
        was made. If not, another cluster lost the log (a broker that keeps nothing
        restarted) and the whole log is queued again: read again, from its start, so that
        each application's events reach the new broker in order.

        The broker is asked its cluster id again only once the producer has opened a
        connection since it last answered: a restarted broker shows itself by a connection
        closed and made anew. (A restart between the answer and the send can still put a
        batch ahead of the log sent again: consumers apply each event once, in any order,
        and stages act on the database.)"""
        if self._producer is None:
            self._producer = await self._start_producer()
        if self._answered is not None and self._answered.still(self._producer, read.cluster_id):
            return True
        self._answered = None
        cluster = await _cluster_id(self._producer)
        if cluster == read.cluster_id:
            self._answered = _Answered(cluster, weakref.WeakSet(_connections(self._producer) or ()))
            return True
        requeued = await _finish(self.store.note_broker(cluster))
        if read.cluster_id:  # not merely the first cluster seen: a producer that learns
            await self.close()  # the new broker's topics afresh
            self._producer = await self._start_producer()
        if requeued is not None:
            log.warning(
                "relay to %s: the broker lost its log (cluster %s, now %s); %d events queued "
                "to publish again",
                self.topic,
                read.cluster_id or "none yet",
                cluster,
                requeued,
            )
        return False

    async def _send(self, batch: list[OutboxMessage]) -> tuple[list[int], BaseException | None]:
        """Send ``batch`` and wait for every acknowledgement.

        Messages are packed into one record batch per partition (in position order) rather
        than sent one by one: per-message ``send`` costs more than the database work.
        Returns the positions of the acknowledged prefix and the first failure, if any.
        """
        if self._producer is None:
            self._producer = await self._start_producer()
        producer = self._producer
        builders: list[tuple[int, Any]] = []  # (partition, record batch), in creation order
        batch_of: list[int] = []  # for each message, the index of its record batch
        futures: list[asyncio.Future[Any]] = []
        failure: BaseException | None = None
        try:
            partitions = sorted(await producer.partitions_for(self.topic))
            current: dict[int, int] = {}  # partition -> index of its open record batch
            for message in batch:
                partition = key_partitioner(message.key, partitions, partitions)
                index = current.get(partition)
                if index is None or not _append(builders[index][1], message):
                    builders.append((partition, producer.create_batch()))
                    index = current[partition] = len(builders) - 1
                    if not _append(builders[index][1], message):
                        raise ValueError(f"event at position {message.position} is too large")
                batch_of.append(index)
            for partition, builder in builders:  # creation order keeps each partition in order
                futures.append(await producer.send_batch(builder, self.topic, partition=partition))
        except Exception as error:  # what was not handed to the producer is sent next time
            failure = error
        results: list[Any] = list(await asyncio.gather(*futures, return_exceptions=True))
        acknowledged: list[int] = []
        for message, index in zip(batch, batch_of, strict=False):
            result = results[index] if index < len(results) else failure
            if index >= len(results) or isinstance(result, BaseException):
                if isinstance(result, BaseException):
                    failure = result
                break  # never mark past a failure: the rest is re-sent in order next time
            acknowledged.append(message.position)
        return acknowledged, failure

    async def _mark(self, positions: list[int], epoch: int) -> None:
        async def mark() -> None:
            if await self.store.mark_published(positions, epoch):
                self.published_total += len(positions)
            else:  # the broker lost its log meanwhile: sent again with the rest of it
                log.warning("relay to %s: the broker's log was lost while sending", self.topic)
                self.notify()

        await _finish(mark())

    async def republish(self) -> int:
        """Queue the whole log again, for a broker that lost its data; returns the event count.

        A running relay picks it up at once; without one, send it with :meth:`drain`.
        """
        count = await _finish(self.store.mark_all_unpublished())
        self.notify()
        return count

    async def close(self) -> None:
        """Flush and stop the producer, if one is running (``run`` does this itself)."""
        producer, self._producer = self._producer, None
        self._answered = None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _start_producer(self) -> AIOKafkaProducer:
        options: dict[str, Any] = {
            "max_batch_size": 256 * 1024,
            "metadata_max_age_ms": 5000,  # a topic made again may have other partitions
            "request_timeout_ms": 10_000,
            "partitioner": key_partitioner,
            **self.producer_options,
        }
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            enable_idempotence=False,  # Tansu refuses idempotent producers; consumers dedupe
            linger_ms=self.linger_ms,
            **options,
        )
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    @contextlib.asynccontextmanager
    async def _exclusive(self, stop: asyncio.Event, lost: asyncio.Event) -> AsyncIterator[None]:
        """Hold the database's relay lock for as long as the block runs (waiting for it first);
        ``lost`` is set if the lock goes before the block ends."""
        if is_sqlite(self.store.engine):
            async with self._file_lock(stop):  # a local file lock goes only with the process
                yield
        else:
            async with self._advisory_lock(stop, lost):
                yield

    @contextlib.asynccontextmanager
    async def _advisory_lock(self, stop: asyncio.Event, lost: asyncio.Event) -> AsyncIterator[None]:
        key = _lock_key(self.topic)
        connection = await self._acquire_advisory_lock(key, stop)
        if connection is None:
            yield
            return
        self.holds_lock = True
        checking = asyncio.ensure_future(self._check_lock(connection, key, lost))
        try:
            yield
        finally:
            checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checking
            self.holds_lock = False
            await _end_session(connection)

    async def _check_lock(self, connection: AsyncConnection, key: int, lost: asyncio.Event) -> None:
        """Every ``lock_check_interval``: does the session still hold the lock? Sets ``lost``
        when it does not, or does not answer."""
        held = sa.text(  # a bigint key is held as its high (classid) and low (objid) halves
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid() AND objsubid = 1"
            " AND classid::bigint = :high AND objid::bigint = :low)"
        )
        halves = {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}
        while True:
            await asyncio.sleep(self.lock_check_interval)
            try:
                answer = await asyncio.wait_for(
                    connection.execute(held, halves), self.lock_check_interval * 2
                )
                still = bool(answer.scalar_one())
                await connection.commit()
            except Exception as error:
                log.warning("relay lock for %s: its session does not answer: %r", self.topic, error)
                still = False
            if not still:
                self.holds_lock = False
                lost.set()
                return

    async def _acquire_advisory_lock(self, key: int, stop: asyncio.Event) -> AsyncConnection | None:
        """A connection holding the session-level lock ``key``, or None if stopped first."""
        connection: AsyncConnection | None = None
        backoff = self.min_backoff
        try:
            while not stop.is_set():
                try:
                    if connection is None:
                        connection = await self.store.engine.connect()
                    got = (
                        await connection.execute(
                            sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}
                        )
                    ).scalar_one()
                    await connection.commit()
                    if got:
                        acquired, connection = connection, None
                        return acquired
                    backoff = self.min_backoff
                    await _sleep_or(stop, self.lock_retry_interval)
                except Exception as error:  # database away: back off, never die
                    self.failures += 1
                    log.warning("relay lock for %s failing: %r", self.topic, error)
                    if connection is not None:
                        await _end_session(connection)
                        connection = None
                    await _sleep_or(stop, backoff)
                    backoff = min(backoff * 2, self.max_backoff)
            return None
        finally:
            if connection is not None:
                await _end_session(connection)

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
                    await _sleep_or(stop, self.lock_retry_interval)
            self.holds_lock = not stop.is_set()
            yield
        finally:
            self.holds_lock = False
            handle.close()  # closing releases the lock, as does the process dying


async def _end_session(connection: AsyncConnection) -> None:
    """Close the database session itself, releasing any advisory lock it holds.

    A connection merely returned to the pool is reset with a rollback, which keeps
    session-level advisory locks: the next relay would wait for a lock no one uses.
    """
    with contextlib.suppress(Exception):
        await connection.invalidate()
    with contextlib.suppress(Exception):
        await connection.close()


def _lock_key(topic: str) -> int:
    digest = hashlib.sha256(f"outbox-relay:{topic}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _finish(operation: Coroutine[Any, Any, T], grace: float = 40.0) -> T:
    """Run a database call to its end even if the caller is cancelled meanwhile, then re-raise.

    A transaction abandoned half-way can leave its pooled connection inside a
    transaction the pool does not know of; a relay stopping mid-batch must not do that.
    A database that does not answer in ``grace`` seconds does not hold the stop up.
    ``grace`` outlasts SQLite's busy timeout (30 s), so a call waiting for the write lock
    ends before the engine is disposed rather than running on against a closed engine.
    (What once left a restarted service's SQLite file locked was a connection closed with
    a live cursor; ``shared.eventstore.database`` rolls back before closing for that.)
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task], timeout=grace)
        raise


async def _settle(task: asyncio.Task[Any]) -> None:
    """Wait for ``task`` to end, ignoring how it ended (a cancellation of ours still propagates)."""
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as lost


async def _set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


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
