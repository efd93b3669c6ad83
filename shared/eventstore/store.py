"""The append-only event store, its outbox marker and the consumer inbox.

One table per service database holds every application's hash chain. An append
names the version it expects; the unique ``(aggregate_id, aggregate_seq)`` pair
makes a concurrent writer fail with :class:`ConcurrencyConflict` and write
nothing. Projection updates and inbox rows share the appending transaction
through :class:`UnitOfWork`.

The hot statements run on the driver connection under SQLAlchemy's transaction
when the database is PostgreSQL (asyncpg): the Core layer costs about half of a
3-statement transaction's throughput there (see ``make bench``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import jsontext
from shared.clock import Clock
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, format_timestamp
from shared.eventstore.database import is_sqlite
from shared.eventstore.schema import UNPUBLISHED, broker_log, events, inbox

log = logging.getLogger(__name__)


class ConcurrencyConflict(Exception):
    """Another writer appended to the application first; nothing was written."""

    def __init__(self, aggregate_id: str, expected_seq: int) -> None:
        super().__init__(
            f"application {aggregate_id} has moved past version {expected_seq}; reload and retry"
        )
        self.aggregate_id = aggregate_id
        self.expected_seq = expected_seq


@dataclass(frozen=True, slots=True)
class StreamVersion:
    """Where an application's chain stands: its last sequence number and hash."""

    seq: int = 0
    hash: str = GENESIS_HASH

    @classmethod
    def after(cls, envelopes: Sequence[Envelope]) -> StreamVersion:
        if not envelopes:
            return cls()
        return cls(seq=envelopes[-1].aggregate_seq, hash=envelopes[-1].hash)


NEW_STREAM = StreamVersion()


@dataclass(frozen=True, slots=True)
class EventContext:
    """Who and what caused the events being appended."""

    actor: Actor
    correlation_id: str
    causation_id: str | None = None
    firm_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An envelope with its storage-only fields beside it."""

    position: int
    published: bool
    envelope: dict[str, Any]
    """The envelope as its JSON object, exactly as hashed, published and served."""


_ENVELOPE_COLUMNS = (
    events.c.event_id,
    events.c.aggregate_id,
    events.c.aggregate_seq,
    events.c.type,
    events.c.schema_version,
    events.c.occurred_at,
    events.c.actor,
    events.c.firm_id,
    events.c.correlation_id,
    events.c.causation_id,
    events.c.payload,
    events.c.prev_hash,
    events.c.hash,
)

_PLAIN_FIELDS = tuple(c.name for c in _ENVELOPE_COLUMNS if c.name != "actor")

_PG_INSERT_EVENT = (
    "INSERT INTO events (event_id, aggregate_id, aggregate_seq, type, schema_version,"
    " occurred_at, actor, firm_id, correlation_id, causation_id, payload, prev_hash, hash)"
    " SELECT $1::varchar, $2::varchar, $3::int, $4::varchar, $5::int, $6::timestamptz,"
    " $7::jsonb, $8::varchar, $9::varchar, $10::varchar, $11::jsonb, $12::varchar, $13::varchar"
    # the transaction has its id before the position's nextval: see sealable_position
    " WHERE pg_current_xact_id() IS NOT NULL"
)
_PG_SNAPSHOT = (
    "SELECT COALESCE(max(position), 0) AS last, pg_current_snapshot()::text AS snapshot FROM events"
)
_PG_STILL_RUNNING = (
    "SELECT count(*) FROM pg_snapshot_xip(CAST($1::text AS pg_snapshot)) AS x"
    " WHERE pg_xact_status(x) = 'in progress'"
)
_PG_SELECT_ENVELOPES = (
    "SELECT event_id, aggregate_id, aggregate_seq, type, schema_version, occurred_at, actor,"
    " firm_id, correlation_id, causation_id, payload, prev_hash, hash FROM events"
)
_PG_READ_STREAM = _PG_SELECT_ENVELOPES + " WHERE aggregate_id = $1 ORDER BY aggregate_seq"


def _stream_query(aggregate_id: str) -> sa.Select[Any]:
    return (
        sa.select(*_ENVELOPE_COLUMNS)
        .where(events.c.aggregate_id == aggregate_id)
        .order_by(events.c.aggregate_seq)
    )


_PG_READ_STREAMS = (
    _PG_SELECT_ENVELOPES
    + " WHERE aggregate_id = ANY($1::text[]) ORDER BY aggregate_id, aggregate_seq"
)
_PG_INSERT_INBOX_MANY = (
    "INSERT INTO inbox (consumer, event_id, processed_at)"
    " SELECT $1, unnest($2::text[]), $3 ON CONFLICT DO NOTHING RETURNING event_id"
)
_PG_INSERT_INBOX = (
    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING"
)


def _envelope_of(row: Any) -> dict[str, Any]:
    """The envelope's JSON object from a row (a SQLAlchemy mapping or an asyncpg record)."""
    actor, payload = row["actor"], row["payload"]
    return {
        "event_id": row["event_id"],
        "aggregate_id": row["aggregate_id"],
        "aggregate_seq": row["aggregate_seq"],
        "type": row["type"],
        "schema_version": row["schema_version"],
        "occurred_at": format_timestamp(row["occurred_at"]),
        "actor": json.loads(actor) if isinstance(actor, str) else actor,
        "firm_id": row["firm_id"],
        "correlation_id": row["correlation_id"],
        "causation_id": row["causation_id"],
        "payload": json.loads(payload) if isinstance(payload, str) else payload,
        "prev_hash": row["prev_hash"],
        "hash": row["hash"],
    }


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event as the relay sends it: key = application id, value = the envelope's JSON."""

    position: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]

    @classmethod
    def of(cls, event: StoredEvent) -> OutboxMessage:
        envelope = event.envelope
        return cls(
            position=event.position,
            key=envelope["aggregate_id"].encode(),
            value=jsontext.dumps_bytes(envelope),
            headers=_headers(
                envelope["type"],
                envelope["event_id"],
                envelope["correlation_id"],
                envelope["schema_version"],
                event.position,
            ),
        )


def _headers(
    type_: str, event_id: str, correlation_id: str, schema_version: int, position: int
) -> list[tuple[str, bytes]]:
    """The message headers: what a consumer routes on before parsing, and the event's
    ``position`` (decimal ASCII), from which anyone can rebuild the checkpoints' leaves."""
    return [
        _type_header(type_),
        ("event_id", event_id.encode()),
        ("correlation_id", correlation_id.encode()),
        _version_header(schema_version),
        ("position", str(position).encode()),
    ]


@functools.lru_cache(maxsize=1024)
def _type_header(type_: str) -> tuple[str, bytes]:
    return ("type", type_.encode())


@functools.lru_cache(maxsize=64)
def _version_header(schema_version: int) -> tuple[str, bytes]:
    return ("schema_version", str(schema_version).encode())


_PG_PENDING_BATCH = (
    # one snapshot for the broker state, the check below the cursor and the batch; the
    # subqueries refer to no row of the batch: each runs once, and only if there is one
    "SELECT COALESCE((SELECT epoch FROM broker_log WHERE id = 1), 0) AS broker_epoch,"
    " COALESCE((SELECT cluster_id FROM broker_log WHERE id = 1), '') AS broker_cluster,"
    " (SELECT count(*) FROM (SELECT FROM events WHERE NOT published AND position <= $1"
    " ORDER BY position LIMIT cardinality($3::bigint[]) + 1) AS below)"
    " > (SELECT count(*) FROM events WHERE NOT published AND position = ANY($3::bigint[]))"
    " AS passed_over,"
    " position, event_id, aggregate_id, aggregate_seq, type, schema_version,"
    " to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS occurred_at,"
    " actor::text AS actor, firm_id, correlation_id, causation_id, payload::text AS payload,"
    " prev_hash, hash FROM events WHERE NOT published AND position > $1"
    " ORDER BY position LIMIT $2"
)
"""The relay's read. Every unpublished event at or below the cursor ($1) is one the relay
has in flight ($3) or one it passed over: the counts differ only if one was passed over.
The first count stops one past the in-flight ones; in position order, so that even a plan
made for any cursor (PostgreSQL's generic plan) reads ``ix_events_unpublished`` rather
than the log, as the second count and the batch do."""


class PendingBatch(NamedTuple):
    """What :meth:`EventStore.pending_batch` read: the broker state (see
    :meth:`EventStore.note_broker`) as the batch was read, the batch, and whether an
    event below the cursor was passed over. With no batch there is no state to send
    under: it reads (0, '', [], False)."""

    epoch: int
    cluster_id: str
    messages: list[OutboxMessage]
    passed_over: bool


def _message_from_row(row: Any) -> OutboxMessage:
    # event ids, types and hashes are checked on the way in and need no escaping;
    # the free-text identifiers may hold anything and go through the JSON encoder
    text = encode_basestring
    firm_id, causation_id = row["firm_id"], row["causation_id"]
    value = (
        f'{{"event_id":"{row["event_id"]}",'
        f'"aggregate_id":{text(row["aggregate_id"])},'
        f'"aggregate_seq":{row["aggregate_seq"]},'
        f'"type":"{row["type"]}",'
        f'"schema_version":{row["schema_version"]},'
        f'"occurred_at":"{row["occurred_at"]}",'
        f'"actor":{row["actor"]},'
        f'"firm_id":{"null" if firm_id is None else text(firm_id)},'
        f'"correlation_id":{text(row["correlation_id"])},'
        f'"causation_id":{"null" if causation_id is None else text(causation_id)},'
        f'"payload":{row["payload"]},'
        f'"prev_hash":"{row["prev_hash"]}",'
        f'"hash":"{row["hash"]}"}}'
    )
    return OutboxMessage(
        position=row["position"],
        key=row["aggregate_id"].encode(),
        value=value.encode(),
        headers=_headers(
            row["type"],
            row["event_id"],
            row["correlation_id"],
            row["schema_version"],
            row["position"],
        ),
    )


class UnitOfWork:
    """One database transaction: appended events, projection updates and inbox rows commit together."""

    def __init__(self, connection: AsyncConnection, clock: Clock, driver: Any | None) -> None:
        self.connection = connection
        """The SQLAlchemy connection, for the service's own projection statements."""
        self._clock = clock
        self._driver = driver  # asyncpg connection on PostgreSQL, None on SQLite
        self.appended: list[Envelope] = []

    async def write(
        self, statement: sa.TextClause, parameters: dict[str, Any] | None = None
    ) -> int:
        """Run one of the service's own write statements (projections) here; returns rowcount.

        On PostgreSQL the statement goes straight to the driver, compiled once, and the
        parameters reach asyncpg as they are: no SQLAlchemy type processing, so pass
        values asyncpg understands (int, str, date, aware datetime), not dicts for JSON.
        """
        if self._driver is not None:
            sql, names = _compiled(statement, self.connection.dialect)
            values = [(parameters or {})[name] for name in names]
            status: str = await self._driver.execute(sql, *values)
            tail = status.rsplit(" ", 1)[-1]
            return int(tail) if tail.isdigit() else 0
        result = await self.connection.execute(statement, parameters)
        return int(result.rowcount)

    async def fetch_one(
        self, statement: sa.TextClause, parameters: dict[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        """The first row of one of the service's own queries, run here (as :meth:`write`).

        JSON columns come back as the database returns them: text from asyncpg.
        """
        if self._driver is not None:
            sql, names = _compiled(statement, self.connection.dialect)
            row = await self._driver.fetchrow(sql, *[(parameters or {})[n] for n in names])
            return None if row is None else dict(row.items())
        found = (await self.connection.execute(statement, parameters)).first()
        return None if found is None else dict(found._mapping)

    @property
    def now(self) -> datetime:
        return self._clock.now()

    async def fetch_all(
        self, statement: sa.TextClause, parameters: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every row of one of the service's own queries, run here (as :meth:`fetch_one`)."""
        if self._driver is not None:
            sql, names = _compiled(statement, self.connection.dialect)
            rows = await self._driver.fetch(sql, *[(parameters or {})[n] for n in names])
            return [dict(row.items()) for row in rows]
        return [dict(r._mapping) for r in await self.connection.execute(statement, parameters)]

    async def write_many(self, statement: sa.TextClause, rows: Sequence[dict[str, Any]]) -> None:
        """Run one write statement for each of ``rows``, in one round trip where the driver can."""
        if not rows:
            return
        if self._driver is not None:
            sql, names = _compiled(statement, self.connection.dialect)
            await self._driver.executemany(sql, [[row[n] for n in names] for row in rows])
            return
        await self.connection.execute(statement, list(rows))

    async def append(
        self,
        aggregate_id: str,
        expected: StreamVersion,
        new_events: Sequence[NewEvent],
        context: EventContext,
    ) -> list[Envelope]:
        """Seal ``new_events`` onto the chain after ``expected``; raise on a concurrent append."""
        sealed = self.seal(aggregate_id, expected, new_events, context)
        await self.insert(sealed)
        return sealed

    def seal(
        self,
        aggregate_id: str,
        expected: StreamVersion,
        new_events: Sequence[NewEvent],
        context: EventContext,
    ) -> list[Envelope]:
        """The envelopes ``new_events`` become after ``expected``; nothing is written yet.

        For commands that share a transaction: seal each, then :meth:`insert` them all
        in one round trip.
        """
        occurred_at = self._clock.now()
        sealed: list[Envelope] = []
        prev_hash, seq = expected.hash, expected.seq
        for event in new_events:
            seq += 1
            envelope = Envelope.seal(
                aggregate_id=aggregate_id,
                aggregate_seq=seq,
                event=event,
                occurred_at=occurred_at,
                actor=context.actor,
                firm_id=context.firm_id,
                correlation_id=context.correlation_id,
                causation_id=context.causation_id,
                prev_hash=prev_hash,
            )
            sealed.append(envelope)
            prev_hash = envelope.hash
        return sealed

    async def insert(self, sealed: Sequence[Envelope]) -> None:
        """Write sealed envelopes; :class:`ConcurrencyConflict` if a link is taken already."""
        if not sealed:
            return
        try:
            if self._driver is not None:
                rows = [
                    (
                        e.event_id,
                        e.aggregate_id,
                        e.aggregate_seq,
                        e.type,
                        e.schema_version,
                        e.occurred_at,
                        e.actor.model_dump_json(),
                        e.firm_id,
                        e.correlation_id,
                        e.causation_id,
                        jsontext.dumps(e.payload),
                        e.prev_hash,
                        e.hash,
                    )
                    for e in sealed
                ]
                if len(rows) == 1:
                    await self._driver.execute(_PG_INSERT_EVENT, *rows[0])
                else:
                    await self._driver.executemany(_PG_INSERT_EVENT, rows)
            else:
                await self.connection.execute(
                    events.insert(),
                    [
                        {
                            **{name: getattr(e, name) for name in _PLAIN_FIELDS},
                            "actor": e.actor.model_dump(mode="json"),
                        }
                        for e in sealed
                    ],
                )
        except Exception as error:
            if is_unique_violation(error):
                first = sealed[0]
                raise ConcurrencyConflict(first.aggregate_id, first.aggregate_seq - 1) from error
            raise
        self.appended.extend(sealed)

    async def read_stream(self, aggregate_id: str) -> list[Envelope]:
        """One application's events, oldest first, as this transaction sees them."""
        if self._driver is not None:
            rows = await self._driver.fetch(_PG_READ_STREAM, aggregate_id)
        else:
            result = await self.connection.execute(_stream_query(aggregate_id))
            rows = [row._mapping for row in result]
        return [Envelope.model_validate(_envelope_of(row)) for row in rows]

    async def read_streams(self, aggregate_ids: Sequence[str]) -> dict[str, list[Envelope]]:
        """Several applications' events in one query; an application without any maps to ``[]``."""
        found: dict[str, list[Envelope]] = {aggregate_id: [] for aggregate_id in aggregate_ids}
        if not found:
            return found
        if self._driver is not None:
            rows = await self._driver.fetch(_PG_READ_STREAMS, list(found))
        else:
            result = await self.connection.execute(
                sa.select(*_ENVELOPE_COLUMNS)
                .where(events.c.aggregate_id.in_(list(found)))
                .order_by(events.c.aggregate_id, events.c.aggregate_seq)
            )
            rows = [row._mapping for row in result]
        for row in rows:
            found[row["aggregate_id"]].append(Envelope.model_validate(_envelope_of(row)))
        return found

    async def record_inbox(self, consumer: str, event_id: str) -> bool:
        """Claim ``event_id`` for ``consumer``; ``False`` means it was already processed."""
        now = self._clock.now()
        if self._driver is not None:
            status = await self._driver.execute(_PG_INSERT_INBOX, consumer, event_id, now)
            return bool(status.endswith(" 1"))
        result = await self.connection.execute(
            sa.insert(inbox).prefix_with("OR IGNORE"),
            {"consumer": consumer, "event_id": event_id, "processed_at": now},
        )
        return bool(result.rowcount == 1)

    async def record_inbox_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Claim several events at once; returns those not processed before."""
        if self._driver is not None:
            # in one order everywhere: two transactions claiming overlapping events (a
            # stage's own and the broker's delivery of them) queue instead of deadlocking
            rows = await self._driver.fetch(
                _PG_INSERT_INBOX_MANY, consumer, sorted(set(event_ids)), self._clock.now()
            )
            return {row["event_id"] for row in rows}
        return {e for e in dict.fromkeys(event_ids) if await self.record_inbox(consumer, e)}


_PG_MARK_IN_EPOCH = (
    "UPDATE events SET published = true WHERE position = ANY($1::bigint[])"
    " AND EXISTS (SELECT 1 FROM broker_log WHERE id = 1 AND epoch = $2 FOR SHARE)"
)

_COMPILED: dict[tuple[int, str], tuple[weakref.ref[Any], tuple[str, tuple[str, ...]]]] = {}


def _compiled(statement: sa.TextClause, dialect: Any) -> tuple[str, tuple[str, ...]]:
    """The driver's SQL and parameter order for a text statement, compiled once per statement.

    Keyed by identity and checked through a weak reference: once a statement is
    collected its id can be reused by another, which must not get the first's SQL.
    """
    key = (id(statement), dialect.name)
    entry = _COMPILED.get(key)
    if entry is not None and entry[0]() is statement:
        return entry[1]
    compiled = statement.compile(dialect=dialect)
    found = (str(compiled), tuple(compiled.positiontup or ()))

    def forget(_: weakref.ref[Any]) -> None:
        if _COMPILED.get(key, (None,))[0] is _:
            del _COMPILED[key]

    _COMPILED[key] = (weakref.ref(statement, forget), found)
    return found


def is_unique_violation(error: BaseException) -> bool:
    """A unique constraint refused a write, whether the error came through SQLAlchemy
    or straight from the driver (the store's hot statements bypass SQLAlchemy)."""
    if isinstance(error, IntegrityError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return sqlstate == "23505"


async def _driver_in_transaction(connection: AsyncConnection) -> Any:
    """The asyncpg connection under ``connection``, inside SQLAlchemy's transaction.

    SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a
    statement sent straight to the driver before that would autocommit. So the
    transaction is started here, through the adapter, before the driver is used.
    """
    raw = await connection.get_raw_connection()
    adapted = raw.dbapi_connection
    if getattr(adapted, "_transaction", None) is None:
        start = getattr(adapted, "_start_transaction", None)
        if start is not None:
            await start()
        else:  # an adapter without the hook: any statement through it begins
            await connection.execute(sa.text("SELECT 1"))
    return raw.driver_connection


class EventStore:
    """A service's event log, on PostgreSQL or SQLite."""

    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._sqlite = is_sqlite(engine)
        self._on_commit: list[Callable[[Sequence[Envelope]], None]] = []

    def on_commit(self, listener: Callable[[Sequence[Envelope]], None]) -> None:
        """Call ``listener`` with the events a unit of work appended, once it has committed.

        Called in the committing task, so it must be quick and must not raise: it may
        note the events for later work (a stage of this process), never do that work.
        """
        self._on_commit.append(listener)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[UnitOfWork]:
        """A unit of work; it commits when the block ends and rolls back if it raises."""
        async with self.engine.begin() as connection:
            try:
                driver = None
                if not self._sqlite:
                    driver = await _driver_in_transaction(connection)
                uow = UnitOfWork(connection, self.clock, driver)
                yield uow
            except asyncio.CancelledError:
                # Cancelled mid-statement (even mid-BEGIN), the server may hold a transaction
                # SQLAlchemy does not know of; a pooled connection would carry it into the next
                # unit of work, whose commits would then vanish. Throw the connection away.
                await connection.invalidate()
                raise
        if uow.appended:
            for listener in self._on_commit:
                try:
                    listener(uow.appended)
                except Exception:  # committed is committed: the caller must not hear otherwise
                    log.exception("a commit listener failed on %d events", len(uow.appended))

    @asynccontextmanager
    async def _driver_alone(self) -> AsyncIterator[Any]:
        """The asyncpg connection under a pooled one, outside any transaction: a statement
        sent through it commits on its own, in one round trip (no BEGIN, no COMMIT).
        Cancelled mid-statement, the connection is thrown away, as in :meth:`transaction`."""
        async with self.engine.connect() as connection:
            raw = await connection.get_raw_connection()
            try:
                yield raw.driver_connection
            except asyncio.CancelledError:
                await connection.invalidate()
                raise

    async def append(
        self,
        aggregate_id: str,
        expected: StreamVersion,
        new_events: Sequence[NewEvent],
        context: EventContext,
    ) -> list[Envelope]:
        """Append in a transaction of its own."""
        async with self.transaction() as uow:
            return await uow.append(aggregate_id, expected, new_events, context)

    async def read_stream(self, aggregate_id: str) -> list[Envelope]:
        """One application's events, oldest first."""
        async with self.engine.connect() as connection:
            result = await connection.execute(_stream_query(aggregate_id))
            return [Envelope.model_validate(_envelope_of(row._mapping)) for row in result]

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of every application after global position ``after``, in position order."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(events.c.position, events.c.published, *_ENVELOPE_COLUMNS)
                .where(events.c.position > after)
                .order_by(events.c.position)
                .limit(limit)
            )
            return [
                StoredEvent(row.position, row.published, _envelope_of(row._mapping))
                for row in result
            ]

    async def unpublished(self, limit: int, after: int = 0) -> list[StoredEvent]:
        """The oldest events the relay has not yet seen acknowledged, in position order."""
        async with self.engine.connect() as connection:
            result = await connection.execute(
                sa.select(events.c.position, events.c.published, *_ENVELOPE_COLUMNS)
                .where(UNPUBLISHED, events.c.position > after)
                .order_by(events.c.position)
                .limit(limit)
            )
            return [StoredEvent(row.position, False, _envelope_of(row._mapping)) for row in result]

    async def pending_messages(self, limit: int, after: int = 0) -> list[OutboxMessage]:
        """The oldest unpublished events as ready-made Kafka messages, in position order.

        On PostgreSQL the JSON documents are spliced in as the database returns them
        (no parse and re-serialise): the value is the same JSON object, only its
        whitespace may differ from the served form, which JCS hashing ignores.
        """
        return (await self.pending_batch(limit, after)).messages

    async def pending_batch(
        self, limit: int, after: int = 0, in_flight: Sequence[int] = ()
    ) -> PendingBatch:
        """The next ``limit`` unpublished events after position ``after``, with the broker
        state they are to be sent under; one statement on PostgreSQL, no transaction.

        ``in_flight``: the positions at or below ``after`` that the relay has read and not
        yet seen marked published. ``passed_over`` tells whether any other event at or
        below ``after`` is unpublished: a transaction that took its position before
        ``after`` was read and committed since.
        """
        if not self._sqlite:
            async with self._driver_alone() as driver:
                rows = await driver.fetch(_PG_PENDING_BATCH, after, limit, list(in_flight))
            if not rows:
                return PendingBatch(0, "", [], False)
            first = rows[0]
            return PendingBatch(
                int(first["broker_epoch"]),
                str(first["broker_cluster"]),
                [_message_from_row(row) for row in rows],
                bool(first["passed_over"]),
            )
        state = sa.select(broker_log.c.epoch, broker_log.c.cluster_id).where(broker_log.c.id == 1)
        async with self.engine.connect() as connection:
            found = (await connection.execute(state)).first()
            result = await connection.execute(
                sa.select(events.c.position, events.c.published, *_ENVELOPE_COLUMNS)
                .where(UNPUBLISHED, events.c.position > after)
                .order_by(events.c.position)
                .limit(limit)
            )
            messages = [
                OutboxMessage.of(StoredEvent(row.position, False, _envelope_of(row._mapping)))
                for row in result
            ]
            passed_over = False
            if messages and after:
                below = await connection.execute(
                    sa.select(events.c.position)
                    .where(UNPUBLISHED, events.c.position <= after)
                    .order_by(events.c.position)
                    .limit(len(in_flight) + 1)
                )
                passed_over = not set(below.scalars()) <= set(in_flight)
        epoch, cluster = (int(found[0]), str(found[1])) if found is not None else (0, "")
        return PendingBatch(epoch, cluster, messages, passed_over)

    async def mark_published(self, positions: Sequence[int], epoch: int | None = None) -> bool:
        """Mark the events published; with ``epoch`` (as :meth:`pending_batch` read it
        before they were sent), only if no loss of the broker's log was recorded since:
        they may have gone to the broker that lost them. False if they were not marked.
        One statement on PostgreSQL, committed on its own."""
        if not positions:
            return True
        if not self._sqlite:
            async with self._driver_alone() as driver:
                if epoch is None:
                    await driver.execute(
                        "UPDATE events SET published = true WHERE position = ANY($1::bigint[])",
                        list(positions),
                    )
                    return True
                # FOR SHARE: a loss being recorded makes this wait for it, then see its epoch
                status = await driver.execute(_PG_MARK_IN_EPOCH, list(positions), epoch)
                return bool(status != "UPDATE 0")
        async with self.transaction() as uow:
            if epoch is not None:
                current = await uow.connection.scalar(
                    sa.select(broker_log.c.epoch).where(broker_log.c.id == 1)
                )
                if current != epoch:
                    return False
            await uow.connection.execute(
                events.update().where(events.c.position.in_(positions)).values(published=True)
            )
            return True

    async def broker_state(self) -> tuple[int, str]:
        """How many times a loss of the broker's log has been recorded, and the cluster the
        log was last published to ('' if none yet): see :meth:`note_broker`."""
        async with self.engine.connect() as connection:
            found = (
                await connection.execute(
                    sa.select(broker_log.c.epoch, broker_log.c.cluster_id).where(
                        broker_log.c.id == 1
                    )
                )
            ).first()
        return (int(found.epoch), str(found.cluster_id)) if found is not None else (0, "")

    async def note_broker(self, cluster_id: str) -> int | None:
        """Record that the broker answering now is cluster ``cluster_id``.

        The first cluster seen is simply recorded. Another one than recorded lost the log
        (a broker keeping nothing restarted, or a new cluster): the whole log is queued for
        publishing again and the epoch moves on, in one transaction, so that a relay's mark
        of events sent before it cannot stand. Returns how many events were queued again
        then, or None when nothing was lost. Once per change, whatever the replicas.
        """
        async with self.transaction() as uow:
            query = sa.select(broker_log.c.cluster_id).where(broker_log.c.id == 1)
            if not self._sqlite:
                query = query.with_for_update()
            known = await uow.connection.scalar(query)
            if known == cluster_id:
                return None
            if known is None:  # a schema made before the row existed
                await uow.connection.execute(
                    broker_log.insert().values(id=1, cluster_id=cluster_id, epoch=0)
                )
                return None
            lost = bool(known)  # '' (or no row): nothing was published anywhere before
            await uow.connection.execute(
                broker_log.update()
                .where(broker_log.c.id == 1)
                .values(
                    cluster_id=cluster_id,
                    epoch=broker_log.c.epoch + (1 if lost else 0),
                    changed_at=self.clock.now(),
                )
            )
            if not lost:
                return None
            result = await uow.connection.execute(
                events.update().where(events.c.published.is_(True)).values(published=False)
            )
            return int(result.rowcount)

    async def sealable_position(self, within: float = 10.0) -> int | None:
        """The highest position below which no event can still commit (0 for none), or None
        if the transactions that may still commit below it did not end ``within`` seconds.

        On PostgreSQL positions come from a sequence: a transaction may take a lower one and
        commit after a higher one is visible. Such a transaction was running when the
        highest visible position was read (every event insert takes the transaction's id
        before its position), so that position is final once every transaction of that
        moment's snapshot has ended: waited for here, without holding up any writer.
        SQLite has one writer at a time."""
        if self._sqlite:
            async with self.engine.connect() as connection:
                found = await connection.execute(sa.select(sa.func.max(events.c.position)))
                return int(found.scalar_one() or 0)
        async with self.transaction() as uow:
            assert uow._driver is not None
            seen = await uow._driver.fetchrow(_PG_SNAPSHOT)
        deadline = asyncio.get_running_loop().time() + within
        while True:
            async with self.transaction() as uow:
                assert uow._driver is not None
                running = await uow._driver.fetchval(_PG_STILL_RUNNING, seen["snapshot"])
            if not running:
                return int(seen["last"])
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.02)

    async def mark_all_unpublished(self) -> int:
        """Queue the whole log for publishing again (after the broker lost its data); the
        epoch moves on with it, so a relay's mark of what it sent before cannot stand."""
        async with self.transaction() as uow:
            await uow.connection.execute(
                broker_log.update()
                .where(broker_log.c.id == 1)
                .values(epoch=broker_log.c.epoch + 1, changed_at=self.clock.now())
            )
            result = await uow.connection.execute(
                events.update().where(events.c.published.is_(True)).values(published=False)
            )
            return int(result.rowcount)
