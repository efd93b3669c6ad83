"""Engines for the two databases a service can run on."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class _RollbackOnClose(sqlite3.Connection):
    """A SQLite connection that ends its transaction before it closes.

    Closed while a statement of it is still alive (a cursor kept by an exception's
    traceback, after a task was cancelled mid-query), SQLite keeps the connection as a
    "zombie" until that statement is finalized, and a zombie in a transaction keeps the
    write lock: every other writer then waits out its busy timeout. Rolling back first
    leaves the zombie nothing to hold.
    """

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.rollback()
        super().close()


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``postgresql+asyncpg://`` or ``sqlite+aiosqlite://`` URLs.

    SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` so that concurrent
    writers queue for the lock instead of failing half-way through a transaction.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30, "factory": _RollbackOnClose}, **kwargs
        )

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @sa.event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # A fixed pool: an overflow connection is opened for one request and closed after
    # it, and under load that churn (a server process forked, TLS tried, types loaded
    # for each) cost more than everything else the service did.
    kwargs.setdefault("pool_size", 16)
    kwargs.setdefault("max_overflow", 0)
    return create_async_engine(url, **kwargs)
