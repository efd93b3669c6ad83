"""Helpers shared by the benchmarks: fresh databases, timing, printing."""

from __future__ import annotations

import os
import statistics
import uuid

import asyncpg

POSTGRES = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def fresh_database(prefix: str, server: str = POSTGRES) -> tuple[str, str]:
    """Create an empty database on ``server``; returns (asyncpg DSN, SQLAlchemy URL)."""
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(plain(server))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    head, _, rest = plain(server).partition("://")
    authority = rest.split("/", 1)[0]
    dsn = f"{head}://{authority}/{name}"
    return dsn, dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def drop_database(dsn: str, server: str = POSTGRES) -> None:
    name = dsn.rsplit("/", 1)[1]
    admin = await asyncpg.connect(plain(server))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def percentile(samples: list[float], p: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<52} {value:>18}  {note}")


def median(values: list[float]) -> float:
    return statistics.median(values)
