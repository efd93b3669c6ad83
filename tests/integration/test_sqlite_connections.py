"""SQLite: a connection thrown away in the middle of a transaction must not keep the
database's write lock. The services throw connections away when a task is cancelled
mid-query (a stop, a restart in the same process), and a cursor of that query can live on
in the cancellation's traceback: closed with it alive, SQLite keeps the connection as a
"zombie", and a zombie inside a transaction held the lock until the garbage collector
came, so the next start of a service in the same process waited out the busy timeout or
failed with "database is locked"."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shared.eventstore.database import create_engine


async def test_a_connection_thrown_away_mid_transaction_leaves_the_write_lock_free(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    first, second = create_engine(url), create_engine(url)

    @sa.event.listens_for(second.sync_engine, "connect")
    def _wait_briefly(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=1000")  # after the engine's own 30 s
        cursor.close()

    try:
        async with first.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE t (n INTEGER)"))
            await connection.execute(sa.text("INSERT INTO t VALUES (1), (2), (3)"))

        gc.disable()  # the zombie is ended by the collector: keep it from helping
        connection = await first.connect()
        await connection.begin()  # BEGIN IMMEDIATE: this connection holds the write lock
        alive = await connection.stream(sa.text("SELECT n FROM t"))  # an unfinished cursor
        await connection.invalidate()  # thrown away, as after a cancellation
        await connection.close()

        async with second.begin() as other:  # waits at most 1 s for the lock
            await other.execute(sa.text("INSERT INTO t VALUES (4)"))
            assert await other.scalar(sa.text("SELECT count(*) FROM t")) == 4
        del alive
    finally:
        gc.enable()
        await first.dispose()
        await second.dispose()
