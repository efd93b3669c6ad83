"""Appending one command's events: the store versus raw asyncpg running the same statements.

Each transaction writes an event row with about 1 KB of JSON, updates the
application's projection row and records the inbox row, with 8 concurrent
tasks, on PostgreSQL. The store also seals the event (hash chain) in Python.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import sqlalchemy as sa

from bench.common import drop_database, fresh_database, line
from shared.clock import SystemClock
from shared.contracts import Actor, NewEvent, Role
from shared.eventstore import NEW_STREAM, EventContext, EventStore, create_engine
from shared.migrations import migrations_of, upgrade

TASKS = 8
PAYLOAD: dict[str, Any] = {
    "requested_amount": 12_000_000,
    "purpose": "patent and licensing advice " * 30,
    "firm": {"firm_id": "123-45-67890", "name": "Hanbit Bio", "cluster": "osong"},
}
ACTOR = Actor(sub="bench", role=Role.SYSTEM)

PROJECTION_DDL = (
    "CREATE TABLE applications (id TEXT PRIMARY KEY, status TEXT NOT NULL, version INT NOT NULL)"
)
UPSERT_RAW = (
    "INSERT INTO applications (id, status, version) VALUES ($1, 'submitted', 1)"
    " ON CONFLICT (id) DO UPDATE SET status = excluded.status, version = excluded.version"
)
INSERT_EVENT_RAW = (
    "INSERT INTO events (event_id, aggregate_id, aggregate_seq, type, schema_version,"
    " occurred_at, actor, firm_id, correlation_id, causation_id, payload, prev_hash, hash)"
    " VALUES ($1, $2, $3, $4, $5, now(), $6::jsonb, $7, $8, $9, $10::jsonb, $11, $12)"
)
INSERT_INBOX_RAW = (
    "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, now())"
    " ON CONFLICT DO NOTHING"
)
projection = sa.table("applications", sa.column("id"), sa.column("status"), sa.column("version"))


async def raw_rate(dsn: str, count: int) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=TASKS, max_size=TASKS)
    payload = json.dumps(PAYLOAD)
    actor = ACTOR.model_dump_json()

    async def worker(k: int) -> None:
        for i in range(count // TASKS):
            app = f"raw-{k}-{i}-{uuid.uuid4().hex[:6]}"
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    INSERT_EVENT_RAW,
                    str(uuid.uuid4()),
                    app,
                    1,
                    "bench.application.submitted",
                    1,
                    actor,
                    "123-45-67890",
                    app,
                    None,
                    payload,
                    "0" * 64,
                    "f" * 64,
                )
                await connection.execute(UPSERT_RAW, app)
                await connection.execute(INSERT_INBOX_RAW, "bench", str(uuid.uuid4()))

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(TASKS)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return (count // TASKS * TASKS) / elapsed


async def store_rate(store: EventStore, count: int) -> float:
    upsert = sa.text(
        "INSERT INTO applications (id, status, version) VALUES (:id, 'submitted', 1)"
        " ON CONFLICT (id) DO UPDATE SET status = excluded.status, version = excluded.version"
    )
    event = NewEvent(type="bench.application.submitted", payload=PAYLOAD)

    async def worker(k: int) -> None:
        for i in range(count // TASKS):
            app = f"store-{k}-{i}-{uuid.uuid4().hex[:6]}"
            async with store.transaction() as uow:
                await uow.record_inbox("bench", str(uuid.uuid4()))
                await uow.append(
                    app,
                    NEW_STREAM,
                    [event],
                    EventContext(actor=ACTOR, correlation_id=app, firm_id="123-45-67890"),
                )
                await uow.write(upsert, {"id": app})

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(TASKS)))
    elapsed = time.perf_counter() - started
    return (count // TASKS * TASKS) / elapsed


async def run(count: int = 4000) -> dict[str, float]:
    dsn, url = await fresh_database("append")
    engine = create_engine(url, pool_size=TASKS)
    store = EventStore(engine, SystemClock())
    try:
        # the log as production migrates it; oversight's schema has no applications table
        await upgrade(engine, migrations_of("oversight"))
        async with engine.begin() as connection:
            await connection.execute(sa.text(PROJECTION_DDL))
        # warm both paths, then alternate so drift in the machine hits both alike
        await raw_rate(dsn, 400)
        await store_rate(store, 400)
        raws, stores = [], []
        for _ in range(2):
            raws.append(await raw_rate(dsn, count))
            stores.append(await store_rate(store, count))
        raw, ours = max(raws), max(stores)
    finally:
        await engine.dispose()
        await drop_database(dsn)
    print("append: one command's events + projection + inbox per transaction, PostgreSQL")
    line("raw asyncpg, same 3 statements", f"{raw:,.0f} tx/s")
    line(
        "event store (seal + hash + append)",
        f"{ours:,.0f} tx/s",
        f"ratio {ours / raw:.2f} (target >= 0.60)",
    )
    return {"raw_tx_per_s": raw, "store_tx_per_s": ours, "ratio": ours / raw}
