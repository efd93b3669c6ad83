"""The writing side of the hop-latency bench, in a process of its own.

    python -m bench.hop_appender DATABASE_URL RATE SECONDS

Appends one ~1 KB event at a time, ``RATE`` a second in transactions every 10 ms,
as a service's command handlers would, while the relay under test runs elsewhere.
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvloop

from bench.relay import CONTEXT, EVENT
from shared.clock import SystemClock
from shared.eventstore import NEW_STREAM, EventStore, StreamVersion, create_engine


async def main(url: str, rate: float, seconds: float) -> None:
    engine = create_engine(url)
    store = EventStore(engine, SystemClock())
    per_tick, interval = max(1, round(rate * 0.01)), 0.01
    versions: dict[str, StreamVersion] = {}
    n = 0
    started = time.perf_counter()
    for tick in range(round(seconds / interval)):
        async with store.transaction() as uow:
            for _ in range(per_tick):
                app = f"live-{n % 500}"
                appended = await uow.append(app, versions.get(app, NEW_STREAM), [EVENT], CONTEXT)
                versions[app] = StreamVersion.after(appended)
                n += 1
        await asyncio.sleep(max(0.0, started + (tick + 1) * interval - time.perf_counter()))
    await engine.dispose()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3])))  # as under uvicorn
