"""Budgets and capacities that approvals hold: the database makes overspending impossible.

A pool (a programme's budget, a fund's capacity) is one row whose ``available``
amount a check constraint keeps between 0 and ``total``; a hold is one conditional
UPDATE that takes the amount only if it is there, so two approvals racing for the
last won cannot both get it, on PostgreSQL or SQLite.

A pool's ``total`` is the catalogue's: :meth:`Pools.apply_catalogue` opens new pools and
applies a changed total as an event (see :mod:`shared.domain.pools`), at startup.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.contracts import Actor, Envelope
from shared.contracts.canonical import canonical_json
from shared.domain.pools import Catalogue, CutRefused, PoolEvents, Recorded, Refusal, reconcile
from shared.eventstore import (
    ConcurrencyConflict,
    EventContext,
    EventStore,
    StreamVersion,
    UnitOfWork,
)

log = logging.getLogger(__name__)

MAX_AGGREGATE_ID = 64
LOCK_TIMEOUT_SECONDS = 60
"""How long applying the catalogue waits for the pools' locks before the start fails."""


class Pools:
    """The ``pools`` table of one service and the statements on it."""

    def __init__(self, metadata: sa.MetaData, name: str = "pools") -> None:
        self.table = sa.Table(
            name,
            metadata,
            sa.Column("pool_id", sa.String(100), primary_key=True),
            sa.Column("total", sa.BigInteger, nullable=False),
            sa.Column("available", sa.BigInteger, nullable=False),
            sa.CheckConstraint("available >= 0", name=f"ck_{name}_never_negative"),
            sa.CheckConstraint("available <= total", name=f"ck_{name}_within_total"),
        )
        # plain statements, compiled once: on PostgreSQL they go straight to the driver
        self._hold = sa.text(
            f"UPDATE {name} SET available = available - :amount"
            " WHERE pool_id = :pool_id AND available >= :amount"
        )
        self._release = sa.text(
            f"UPDATE {name} SET available = available + :amount WHERE pool_id = :pool_id"
        )
        self._lock_key = int.from_bytes(
            hashlib.sha256(f"pools:{name}".encode()).digest()[:8], "big", signed=True
        )

    async def hold(self, uow: UnitOfWork, pool_id: str, amount: int) -> bool:
        """Take ``amount`` from the pool; ``False`` (and nothing taken) if it cannot hold it."""
        return await uow.write(self._hold, {"pool_id": pool_id, "amount": amount}) == 1

    async def release(self, uow: UnitOfWork, pool_id: str, amount: int) -> None:
        """Give ``amount`` back to the pool."""
        await uow.write(self._release, {"pool_id": pool_id, "amount": amount})

    async def lock(self, uow: UnitOfWork, pool_ids: Sequence[str]) -> dict[str, int]:
        """Hold the pools' rows until the transaction ends, taken in pool order (so that two
        transactions locking overlapping pools cannot deadlock); ``{pool_id: available}``
        as they stand under the lock."""
        t = self.table
        wanted = sorted(set(pool_ids))
        if not wanted:
            return {}
        query = sa.select(t.c.pool_id, t.c.available).where(t.c.pool_id.in_(wanted))
        if uow.connection.dialect.name == "postgresql":
            query = query.order_by(t.c.pool_id).with_for_update()
        rows = await uow.connection.execute(query)
        return {r.pool_id: int(r.available) for r in rows}

    async def hold_all(self, uow: UnitOfWork, amounts: Mapping[str, int]) -> bool:
        """Take each pool's amount, in pool order (two holders never wait on each other in
        a cycle); ``False``, and nothing taken, if any pool cannot hold its amount."""
        held: list[str] = []
        for pool_id in sorted(amounts):
            if not await self.hold(uow, pool_id, amounts[pool_id]):
                for taken in held:
                    await self.release(uow, taken, amounts[taken])
                return False
            held.append(pool_id)
        return True

    async def ensure(self, connection: AsyncConnection, totals: Mapping[str, int]) -> None:
        """Create the pools that do not exist yet, full (replicas starting together may
        both try: the second finds the row there and leaves it)."""
        if not totals:
            return
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        await connection.execute(
            insert(self.table)
            .values([{"pool_id": p, "total": t, "available": t} for p, t in totals.items()])
            .on_conflict_do_nothing(index_elements=["pool_id"])
        )

    async def read(self, connection: AsyncConnection) -> dict[str, tuple[int, int]]:
        """``{pool_id: (total, available)}``."""
        rows = await connection.execute(sa.select(self.table))
        return {r.pool_id: (r.total, r.available) for r in rows}

    async def apply_catalogue(
        self,
        store: EventStore,
        wanted: Mapping[str, int],
        kinds: PoolEvents,
        *,
        stream: str,
        document: Mapping[str, Any],
        actor: Actor,
    ) -> list[Envelope]:
        """Bring every pool of ``wanted`` (``{pool_id: the catalogue's total}``) to its
        total, recording each step as an event on the pool's stream ``<stream>:<pool_id>``,
        in one transaction: a new pool is opened full; a pool older than these events is
        first recorded as found; a changed total is a top-up or a cut, and ``total`` and
        ``available`` move by it. Returns the events recorded (none when every recorded
        total is the catalogue's: a restart with the same file records nothing).

        Raises :class:`~shared.domain.pools.CutRefused`, having written nothing, when the
        catalogue cuts a pool by more than it has available.

        Race-free: on PostgreSQL the whole step runs under an advisory lock of this table
        and the pools' rows are locked, so replicas starting together apply it one after
        the other and the second finds nothing left to do; SQLite lets one writer in at a
        time. The streams' optimistic concurrency stays behind it: an append that lost a
        race rolls everything back and the step is taken again from what is recorded.
        """
        catalogue = Catalogue(
            version=str(document.get("version", "unversioned")),
            digest=hashlib.sha256(canonical_json(dict(document))).hexdigest(),
        )
        context = EventContext(actor=actor, correlation_id=f"catalogue:{catalogue.digest[:40]}")
        for attempt in range(5):
            try:
                async with store.transaction() as uow:
                    return await self._apply(uow, wanted, kinds, stream, catalogue, context)
            except ConcurrencyConflict:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async def _apply(
        self,
        uow: UnitOfWork,
        wanted: Mapping[str, int],
        kinds: PoolEvents,
        stream: str,
        catalogue: Catalogue,
        context: EventContext,
    ) -> list[Envelope]:
        t = self.table
        if uow.connection.dialect.name == "postgresql":
            # a start waits for another replica's step (milliseconds) and for holds under
            # way, never forever behind a transaction that does not end: it fails, saying so
            await uow.connection.execute(
                sa.text(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT_SECONDS * 1000)}ms'")
            )
            await uow.connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": self._lock_key}
            )
        pool_ids = sorted(wanted)
        query = sa.select(t.c.pool_id, t.c.total, t.c.available).where(t.c.pool_id.in_(pool_ids))
        if uow.connection.dialect.name == "postgresql":
            query = query.order_by(t.c.pool_id).with_for_update()
        rows = {
            r.pool_id: (int(r.total), int(r.available)) for r in await uow.connection.execute(query)
        }
        streams = {pool_id: pool_stream(stream, pool_id) for pool_id in pool_ids}
        logs = await uow.read_streams(list(streams.values()))
        refusals: list[Refusal] = []
        steps = []
        for pool_id in pool_ids:
            total, available = rows.get(pool_id, (None, None))
            history = logs[streams[pool_id]]
            if total is None and history:
                raise RuntimeError(
                    f"{kinds.noun} {pool_id} has events on {streams[pool_id]} but no row"
                )
            recorded = Recorded(total=total, available=available, opened=bool(history))
            decided = reconcile(kinds, pool_id, recorded, wanted[pool_id], catalogue)
            if isinstance(decided, Refusal):
                refusals.append(decided)
            else:
                steps.append((pool_id, recorded, decided))
        if refusals:
            raise CutRefused(refusals)
        appended: list[Envelope] = []
        for pool_id, recorded, (payloads, (total, available)) in steps:
            if not payloads:
                continue
            if recorded.total is None:
                await uow.connection.execute(
                    sa.insert(t).values(pool_id=pool_id, total=total, available=available)
                )
            elif (total, available) != (recorded.total, recorded.available):
                moved = await uow.connection.execute(
                    sa.update(t)
                    .where(t.c.pool_id == pool_id)
                    .where(t.c.total == recorded.total)
                    .where(t.c.available == recorded.available)
                    .values(total=total, available=available)
                )
                if moved.rowcount != 1:  # the lock above makes this impossible
                    raise ConcurrencyConflict(streams[pool_id], len(logs[streams[pool_id]]))
            appended += await uow.append(
                streams[pool_id],
                StreamVersion.after(logs[streams[pool_id]]),
                [p.event() for p in payloads],
                context,
            )
        for event in appended:
            log.info("%s %s: %s %s", kinds.noun, event.aggregate_id, event.type, event.payload)
        return appended


def pool_stream(stream: str, pool_id: str) -> str:
    """The aggregate id of a pool's events: ``<stream>:<pool_id>``, or, for an id too long
    for the log's aggregate ids, ``<stream>:`` and the first 40 hex digits of its SHA-256
    (the events name the pool in their payload either way)."""
    plain = f"{stream}:{pool_id}"
    if len(plain) <= MAX_AGGREGATE_ID:
        return plain
    return f"{stream}:" + hashlib.sha256(pool_id.encode()).hexdigest()[:40]
