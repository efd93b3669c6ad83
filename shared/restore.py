"""After a database restore: does the restored log still agree with what its topic holds?

A service's log is its database; the topic is a copy the relay made of it. A backup
restored to an earlier moment than the last commit has lost the events after it, and the
topic, which the consumers have already applied, still holds them. A service started on
such a database would append new events at positions and sequence numbers the topic
already gives to others: a fork every reader would see. So before a restored service
starts, its log is compared with its topic:

- events the database has and the topic has not: nothing to do, the relay publishes
  what is marked unpublished (and ``incentives republish`` sends everything again if the
  marks are in doubt; consumers drop what their inbox already has, by ``event_id``);
- events the topic has beyond the database: the restore lost them; the service must not
  start until they are back (a point-in-time recovery to the latest commit);
- a position both hold with different hashes: the two logs forked; the service must not
  start, and an auditor must look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.eventstore.schema import events


@dataclass(frozen=True)
class RestoreCheck:
    """How a service's restored database stands against its topic."""

    service: str
    database_last: int
    """The highest position in the database (0: an empty log)."""
    topic_last: int
    """The highest position on the topic (0: nothing published)."""
    lost: list[int] = field(default_factory=list)
    """Positions the topic has and the database has not."""
    forked: list[int] = field(default_factory=list)
    """Positions both have, holding different events."""

    @property
    def safe_to_start(self) -> bool:
        return not self.lost and not self.forked

    def describe(self) -> str:
        head = (
            f"{self.service}: the database's log ends at position {self.database_last}, "
            f"the topic's at {self.topic_last}"
        )
        if self.forked:
            return (
                f"{head}; {len(self.forked)} position(s) hold different events on each side "
                f"(first {self.forked[0]}): the logs forked, do not start the service"
            )
        if self.lost:
            return (
                f"{head}; the restore lost {len(self.lost)} event(s) the topic holds "
                f"(positions {self.lost[0]}..{self.lost[-1]}): restore to a later moment, "
                "do not start the service"
            )
        unpublished = self.database_last - self.topic_last
        if unpublished > 0:
            return f"{head}; safe to start: the relay publishes the {unpublished} newer event(s)"
        return f"{head}; safe to start: the two agree"


async def check_restore(
    engine: AsyncEngine, service: str, on_topic: Iterable[tuple[int, Any]]
) -> RestoreCheck:
    """Compare the log in ``engine``'s database with ``on_topic``: ``(position, envelope)``
    pairs as read from the service's events topic (redelivered copies are fine)."""
    topic: dict[int, str] = {}
    for position, envelope in on_topic:
        topic[position] = str(envelope["hash"] if isinstance(envelope, dict) else envelope.hash)
    async with engine.connect() as connection:
        last = (await connection.execute(sa.select(sa.func.max(events.c.position)))).scalar()
        stored: dict[int, str] = {}
        if topic:  # a range, not a list of positions: a long log would pass any bind limit
            rows = await connection.stream(
                sa.select(events.c.position, events.c.hash).where(
                    events.c.position.between(min(topic), max(topic))
                )
            )
            async for row in rows:
                stored[int(row.position)] = str(row.hash)
    lost = sorted(p for p in topic if p not in stored)
    forked = sorted(p for p, h in stored.items() if p in topic and topic[p] != h)
    return RestoreCheck(
        service=service,
        database_last=int(last or 0),
        topic_last=max(topic, default=0),
        lost=lost,
        forked=forked,
    )
