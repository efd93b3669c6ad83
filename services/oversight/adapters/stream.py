"""Reading the received envelopes in oversight's own order, for the live stream (SSE).

Sequence numbers are taken at insert and show up at commit; a number may show up after
a higher one (two writers), or never (a rolled-back batch). The :class:`Watermark` is
the highest number below which every number has shown up or has been missing for
``hole_after``: a stream never hands out a number past it, so none is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oversight.adapters.tables import received


class Bell:
    """Wakes every waiter when new events committed (in this process)."""

    def __init__(self) -> None:
        self._rung = asyncio.Event()

    def ring(self) -> None:
        self._rung.set()
        self._rung = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Until the next ring, or ``seconds``."""
        rung = self._rung
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rung.wait(), seconds)


class Watermark:
    def __init__(self, engine: AsyncEngine, hole_after: float = 2.0) -> None:
        self.engine = engine
        self.hole_after = hole_after
        self.safe = 0
        self._started = False
        self._hole: tuple[int, float] | None = None
        self._lock = asyncio.Lock()

    async def advance(self) -> int:
        async with self._lock, self.engine.connect() as connection:
            if not self._started:
                # at start every committed number is either there or gone for good
                self.safe = int(
                    await connection.scalar(sa.select(sa.func.max(received.c.seq))) or 0
                )
                self._started = True
                return self.safe
            while True:
                seen = (
                    await connection.scalars(
                        sa.select(received.c.seq)
                        .where(received.c.seq > self.safe)
                        .order_by(received.c.seq)
                        .limit(10_000)
                    )
                ).all()
                if not seen:
                    return self.safe
                moved = self._walk(seen)
                if not moved or len(seen) < 10_000:
                    return self.safe

    def _walk(self, seen: Sequence[int]) -> bool:
        start = self.safe
        for seq in seen:
            if seq == self.safe + 1:
                self.safe = seq
                self._hole = None
                continue
            now = time.monotonic()
            if self._hole is None or self._hole[0] != self.safe + 1:
                self._hole = (self.safe + 1, now)
            if now - self._hole[1] < self.hole_after:
                break
            self.safe = seq  # the hole stayed open: a rolled-back batch
            self._hole = None
        return self.safe != start


@dataclass(frozen=True)
class StreamFilter:
    service: str | None = None
    type: str | None = None
    firm_id: str | None = None


async def read_after(
    engine: AsyncEngine, after: int, upto: int, where: StreamFilter, limit: int = 500
) -> list[tuple[int, str, str]]:
    """``(seq, type, envelope)`` of the received events after ``after`` up to ``upto``."""
    query = (
        sa.select(received.c.seq, received.c.type, received.c.envelope)
        .where(received.c.seq > after)
        .where(received.c.seq <= upto)
        .order_by(received.c.seq)
        .limit(limit)
    )
    if where.service is not None:
        query = query.where(received.c.service == where.service)
    if where.type is not None:
        query = query.where(received.c.type == where.type)
    if where.firm_id is not None:
        query = query.where(received.c.firm_id == where.firm_id)
    async with engine.connect() as connection:
        return [(int(s), t, e) for s, t, e in await connection.execute(query)]


LINE_BREAK = re.compile(r"\r\n|\r|\n")


def sse_event(seq: int, type_: str, envelope: str) -> str:
    """One SSE event: ``id`` oversight's number, ``event`` the type, ``data`` the envelope.

    A line break inside the envelope (JSON allows CR and LF between tokens) starts a
    ``data:`` line of its own, and one in the type becomes a space: neither can make a
    field of its own (a forged ``id:`` would corrupt every client's Last-Event-ID)."""
    data = "".join(f"data: {line}\n" for line in LINE_BREAK.split(envelope))
    return f"id: {seq}\nevent: {LINE_BREAK.sub(' ', type_)}\n{data}\n"
