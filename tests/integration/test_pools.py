"""Pools (budgets, fund capacity): created once, whoever starts first."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.clock import SystemClock
from shared.contracts import Actor, Envelope, Role
from shared.contracts.canonical import canonical_json
from shared.contracts.chain import verify_chain
from shared.domain.pools import CutRefused, PoolCut, PoolEvents, PoolOpened, PoolToppedUp
from shared.eventstore import EventStore, create_engine
from shared.kit import holds
from shared.kit.holds import Pools, pool_stream
from tests.schema import migrated


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


# --- a catalogue's totals, applied as events at startup ------------------------------------

CATALOGUE_ACTOR = Actor(sub="test-catalogue", role=Role.SYSTEM)
CHANGES = ("test.pool.topped_up", "test.pool.cut")


class Opened(PoolOpened):
    event_type: ClassVar[str] = "test.pool.opened"
    pool: str


class ToppedUp(PoolToppedUp):
    event_type: ClassVar[str] = "test.pool.topped_up"
    pool: str


class Cut(PoolCut):
    event_type: ClassVar[str] = "test.pool.cut"
    pool: str


KINDS = PoolEvents(Opened, ToppedUp, Cut, id_field="pool", noun="test pool")


def catalogue(**totals: int) -> dict[str, Any]:
    return {"version": "v-" + "-".join(f"{k}{v}" for k, v in sorted(totals.items())), **totals}


async def pools_table(engine: AsyncEngine) -> Pools:
    pools = Pools(sa.MetaData(), "test_pools")
    async with engine.begin() as connection:
        await connection.run_sync(pools.table.metadata.create_all)
    return pools


async def apply_totals(store: EventStore, pools: Pools, **totals: int) -> list[Envelope]:
    return await pools.apply_catalogue(
        store, totals, KINDS, stream="pool", document=catalogue(**totals), actor=CATALOGUE_ACTOR
    )


async def pool_events(store: EventStore) -> list[dict[str, Any]]:
    return [e.envelope for e in await store.read_all(limit=10_000)]


async def test_a_catalogue_opens_tops_up_and_cuts_each_pool_once(store: EventStore) -> None:
    pools = await pools_table(store.engine)
    opened = await apply_totals(store, pools, mega=1_000, sub=200)
    assert [(e.aggregate_id, e.type, e.payload["total"]) for e in opened] == [
        ("pool:mega", "test.pool.opened", 1_000),
        ("pool:sub", "test.pool.opened", 200),
    ]
    assert await apply_totals(store, pools, mega=1_000, sub=200) == []  # a restart: nothing
    async with store.transaction() as uow:
        assert await pools.hold(uow, "mega", 300)

    [topped] = await apply_totals(store, pools, mega=1_500, sub=200)
    document = catalogue(mega=1_500, sub=200)
    assert (topped.aggregate_id, topped.aggregate_seq, topped.type) == (
        "pool:mega",
        2,
        "test.pool.topped_up",
    )
    assert topped.payload == {
        "pool": "mega",
        "previous_total": 1_000,
        "new_total": 1_500,
        "change": 500,
        "previous_available": 700,
        "new_available": 1_200,
        "catalogue_version": document["version"],
        "catalogue_digest": hashlib.sha256(canonical_json(document)).hexdigest(),
    }
    assert topped.actor == CATALOGUE_ACTOR and topped.firm_id is None
    [cut] = await apply_totals(store, pools, mega=1_500, sub=50)
    assert (cut.type, cut.payload["change"], cut.payload["new_available"]) == (
        "test.pool.cut",
        150,
        50,
    )
    assert await apply_totals(store, pools, mega=1_500, sub=50) == []
    async with store.engine.connect() as connection:
        assert await pools.read(connection) == {"mega": (1_500, 1_200), "sub": (50, 50)}
    assert [e["type"] for e in await pool_events(store)] == [
        "test.pool.opened",
        "test.pool.opened",
        "test.pool.topped_up",
        "test.pool.cut",
    ]
    chains = verify_chain(e for e in await pool_events(store))
    assert chains.ok and chains.applications == 2  # each pool's events are one hash chain


async def test_a_cut_below_what_is_held_is_refused_whole_and_writes_nothing(
    store: EventStore,
) -> None:
    pools = await pools_table(store.engine)
    await apply_totals(store, pools, mega=1_000, sub=200)
    async with store.transaction() as uow:
        assert await pools.hold(uow, "mega", 700)
    before = await pool_events(store)

    with pytest.raises(CutRefused) as refused:  # 300 available: a cut of 301 cannot be taken
        await apply_totals(store, pools, mega=699, sub=500)
    assert [r.pool_id for r in refused.value.refusals] == ["mega"]
    message = str(refused.value)
    assert "test pool mega" in message and "699" in message and "700 won is held" in message
    assert "lowest total it can be cut to now is 700" in message
    assert await pool_events(store) == before  # sub's top-up was not applied either
    async with store.engine.connect() as connection:
        assert await pools.read(connection) == {"mega": (1_000, 300), "sub": (200, 200)}

    [cut] = await apply_totals(store, pools, mega=700, sub=200)  # down to what is held: fine
    assert (cut.payload["new_total"], cut.payload["new_available"]) == (700, 0)


async def test_a_pool_older_than_its_events_is_first_recorded_as_found(store: EventStore) -> None:
    pools = await pools_table(store.engine)
    async with store.engine.begin() as connection:  # seeded the old way: a row, no event
        await pools.ensure(connection, {"mega": 1_000})
    async with store.transaction() as uow:
        assert await pools.hold(uow, "mega", 400)
    recorded = await apply_totals(store, pools, mega=1_200)
    assert [(e.type, e.aggregate_seq) for e in recorded] == [
        ("test.pool.opened", 1),
        ("test.pool.topped_up", 2),
    ]
    assert (recorded[0].payload["total"], recorded[0].payload["available"]) == (1_000, 600)
    assert recorded[1].payload["new_available"] == 800
    assert await apply_totals(store, pools, mega=1_200) == []


@pytest.mark.parametrize("first_start", [True, False], ids=["opening", "top-up"])
async def test_replicas_applying_a_catalogue_at_once_record_each_change_once(
    postgres_url: str, first_start: bool
) -> None:
    """Two replicas start together with the same file, each on its own connections: the
    pools are opened, or topped up, once; over several rounds, whichever wins."""
    engines = [create_engine(postgres_url), create_engine(postgres_url)]
    stores = [EventStore(engine, SystemClock()) for engine in engines]
    try:
        await migrated(engines[0])
        pools = await pools_table(engines[0])
        totals = {"mega": 1_000, "sub": 200}
        if not first_start:
            await apply_totals(stores[0], pools, **totals)
        for round_ in range(1, 6):
            totals = {"mega": 1_000 + 100 * round_, "sub": 200 + 10 * round_}
            if first_start:
                totals = {f"new{round_}": 50 * round_}
            found = await asyncio.gather(*(apply_totals(s, pools, **totals) for s in stores))
            assert sorted(len(f) for f in found) == [0, len(totals)]
        events = [e["type"] for e in await pool_events(stores[0])]
        if first_start:
            assert events == ["test.pool.opened"] * 5
        else:
            assert events == ["test.pool.opened"] * 2 + ["test.pool.topped_up"] * 10
        async with engines[0].connect() as connection:
            read = await pools.read(connection)
        assert read == (
            {f"new{n}": (50 * n, 50 * n) for n in range(1, 6)}
            if first_start
            else {"mega": (1_500, 1_500), "sub": (250, 250)}
        )
    finally:
        for engine in engines:
            await engine.dispose()


def test_a_pool_id_too_long_for_the_log_gets_a_stream_named_by_its_digest() -> None:
    assert pool_stream("budget", "short") == "budget:short"
    long = pool_stream("budget", "x" * 100)
    assert (
        len(long) == 47 and long.startswith("budget:") and long != pool_stream("budget", "y" * 100)
    )


async def test_a_start_behind_a_transaction_that_never_ends_fails_instead_of_waiting(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    try:
        await migrated(engine)
        pools = await pools_table(engine)
        await apply_totals(store, pools, mega=1_000)
        monkeypatch.setattr(holds, "LOCK_TIMEOUT_SECONDS", 0.5)
        async with engine.connect() as stuck:  # holds the pool's row and never ends
            await stuck.execute(sa.text("SELECT * FROM test_pools FOR UPDATE"))
            with pytest.raises(DBAPIError, match="lock timeout"):
                await apply_totals(store, pools, mega=2_000)
            await stuck.rollback()
        [topped] = await apply_totals(store, pools, mega=2_000)
        assert topped.payload["change"] == 1_000
    finally:
        await engine.dispose()
