"""The event store on real PostgreSQL and SQLite: every test runs on both."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from shared.clock import SystemClock
from shared.contracts import Actor, NewEvent, Role, verify_chain
from shared.eventstore import (
    NEW_STREAM,
    ConcurrencyConflict,
    EventContext,
    EventStore,
    StreamVersion,
    create_engine,
    events,
)
from tests.schema import migrated

FIRM = Actor(sub="firm-user-1", role=Role.FIRM)


def context(firm_id: str = "123-45-67890") -> EventContext:
    return EventContext(actor=FIRM, correlation_id=str(uuid.uuid4()), firm_id=firm_id)


def submitted(amount: int = 5_000_000) -> NewEvent:
    return NewEvent(
        type="voucher.application.submitted",
        payload={"requested_amount": amount, "purpose": "patent filing", "note": "특허 출원"},
    )


async def test_appended_events_read_back_identical_and_chained(store: EventStore) -> None:
    first = await store.append("app-1", NEW_STREAM, [submitted()], context())
    more = await store.append(
        "app-1",
        StreamVersion.after(first),
        [NewEvent(type="voucher.application.verified", payload={})],
        context(),
    )
    stored = await store.read_stream("app-1")
    assert stored == first + more
    assert [e.aggregate_seq for e in stored] == [1, 2]
    assert stored[1].prev_hash == stored[0].hash
    assert stored[0].occurred_at.tzinfo is not None
    assert verify_chain(e.to_json_dict() for e in stored).ok
    async with store.transaction() as uow:
        assert await uow.read_stream("app-1") == stored


async def test_money_round_trips_as_exact_integer_won(store: EventStore) -> None:
    big = 987_654_321_012
    await store.append("app-1", NEW_STREAM, [submitted(big)], context())
    (event,) = await store.read_stream("app-1")
    assert event.payload["requested_amount"] == big
    assert isinstance(event.payload["requested_amount"], int)


async def test_append_at_a_stale_version_is_refused_and_writes_nothing(store: EventStore) -> None:
    first = await store.append("app-1", NEW_STREAM, [submitted()], context())
    with pytest.raises(ConcurrencyConflict) as caught:
        await store.append(
            "app-1",
            NEW_STREAM,
            [submitted(), NewEvent(type="voucher.application.verified", payload={})],
            context(),
        )
    assert caught.value.aggregate_id == "app-1"
    assert await store.read_stream("app-1") == first


async def test_projection_and_inbox_roll_back_with_a_conflicting_append(
    store: EventStore,
) -> None:
    projection = sa.table("projection", sa.column("id"), sa.column("status"))
    async with store.engine.begin() as connection:
        await connection.execute(
            sa.text("CREATE TABLE projection (id TEXT PRIMARY KEY, status TEXT)")
        )
    await store.append("app-1", NEW_STREAM, [submitted()], context())

    with pytest.raises(ConcurrencyConflict):
        async with store.transaction() as uow:
            assert await uow.record_inbox("verifier", "evt-1")
            await uow.connection.execute(sa.insert(projection).values(id="app-1", status="x"))
            await uow.append("app-1", NEW_STREAM, [submitted()], context())

    async with store.transaction() as uow:
        # the inbox row went with the failed transaction, so the event can still be processed
        assert await uow.record_inbox("verifier", "evt-1")
        assert not await uow.record_inbox("verifier", "evt-1")
        rows = (await uow.connection.execute(sa.select(projection))).all()
    assert rows == []


async def test_read_all_lists_every_application_in_position_order(store: EventStore) -> None:
    for name in ("a", "b", "c"):
        await store.append(name, NEW_STREAM, [submitted()], context())
    everything = await store.read_all()
    assert [e.envelope["aggregate_id"] for e in everything] == ["a", "b", "c"]
    positions = [e.position for e in everything]
    assert positions == sorted(positions)
    assert [e.envelope["aggregate_id"] for e in await store.read_all(after=positions[0])] == [
        "b",
        "c",
    ]
    assert not any(e.published for e in everything)


async def test_naive_time_is_refused(store: EventStore) -> None:
    class NaiveClock:
        def now(self) -> datetime:
            return datetime(2026, 11, 25, 9, 0)

    naive = EventStore(store.engine, NaiveClock())
    with pytest.raises(ValueError, match="timezone"):
        await naive.append("app-1", NEW_STREAM, [submitted()], context())
    assert await store.read_stream("app-1") == []


async def test_concurrent_appends_at_the_same_version_one_wins_on_postgres(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    await migrated(store.engine)
    try:
        for round_ in range(20):
            app = f"app-{round_}"
            start = asyncio.Event()

            async def contender(n: int, app: str = app, start: asyncio.Event = start) -> str:
                async with store.transaction() as uow:
                    await uow.record_inbox("approver", f"{app}-cmd-{n}")
                    await start.wait()
                    await uow.append(
                        app,
                        NEW_STREAM,
                        [NewEvent(type="voucher.application.submitted", payload={"by": n})],
                        context(),
                    )
                return "ok"

            tasks = [asyncio.create_task(contender(n)) for n in range(2)]
            await asyncio.sleep(0.01)
            start.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert results.count("ok") == 1
            (loser,) = [r for r in results if r != "ok"]
            assert isinstance(loser, ConcurrencyConflict)
            stored = await store.read_stream(app)
            assert len(stored) == 1
            async with engine.connect() as connection:
                inbox_rows = (
                    await connection.execute(
                        sa.text("SELECT event_id FROM inbox WHERE event_id LIKE :p"),
                        {"p": f"{app}-cmd-%"},
                    )
                ).all()
                event_rows = (
                    await connection.execute(
                        sa.select(sa.func.count()).where(events.c.aggregate_id == app)
                    )
                ).scalar_one()
            # the loser's inbox row and event row are both gone
            assert [r.event_id for r in inbox_rows] == [f"{app}-cmd-{stored[0].payload['by']}"]
            assert event_rows == 1
    finally:
        await engine.dispose()


async def test_occurred_at_is_utc_whatever_zone_the_clock_uses(store: EventStore) -> None:
    from datetime import timedelta, timezone

    class SeoulClock:
        def now(self) -> datetime:
            return datetime(2026, 11, 25, 18, 0, tzinfo=timezone(timedelta(hours=9)))

    seoul = EventStore(store.engine, SeoulClock())
    await seoul.append("app-1", NEW_STREAM, [submitted()], context())
    (event,) = await store.read_stream("app-1")
    assert event.occurred_at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    assert event.to_json_dict()["occurred_at"] == "2026-11-25T09:00:00.000000Z"
