"""Budgets and capacities that approvals hold: the database makes overspending impossible.

A pool (a programme's budget, a fund's capacity) is one row whose ``available``
amount a check constraint keeps between 0 and ``total``; a hold is one conditional
UPDATE that takes the amount only if it is there, so two approvals racing for the
last won cannot both get it, on PostgreSQL or SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.eventstore import UnitOfWork


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
