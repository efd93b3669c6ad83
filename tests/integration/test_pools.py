"""Pools (budgets, fund capacity): created once, whoever starts first."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from shared.clock import SystemClock
from shared.eventstore import EventStore, create_engine
from shared.kit.holds import Pools


async def test_replicas_starting_together_create_each_pool_once(postgres_url: str) -> None:
    """Two replicas start at once: both find no pool; the second's creation waits for the
    first's and then leaves the row as it is (PostgreSQL: SQLite has one writer anyway)."""
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    pools = Pools(sa.MetaData(), "capacity")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(pools.table.metadata.create_all)
        async with engine.begin() as first:
            await pools.ensure(first, {"mega": 1_000, "sub": 200})

            async def second() -> None:
                async with engine.begin() as connection:
                    await pools.ensure(connection, {"mega": 1_000, "sub": 200})

            racing = asyncio.create_task(second())
            await asyncio.sleep(0.3)  # the second is waiting on the first's rows now
        await racing
        async with store.transaction() as uow:
            assert await pools.hold(uow, "mega", 300)
        async with engine.begin() as connection:  # a restart finds them and changes nothing
            await pools.ensure(connection, {"mega": 1_000, "sub": 200})
        async with engine.connect() as connection:
            assert await pools.read(connection) == {"mega": (1_000, 700), "sub": (200, 200)}
    finally:
        await engine.dispose()
