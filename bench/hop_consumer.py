"""The consumer side of the hop-latency bench, in a process of its own (as in production).

    python -m bench.hop_consumer BOOTSTRAP TOPIC EXPECTED

Prints "ready" once it holds its partitions, then, when EXPECTED records arrived
(or after a minute at most), a JSON list of latencies in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

import uvloop
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from shared.consumer import consumer_options


async def main(bootstrap: str, topic: str, expected: int) -> None:
    latencies: list[float] = []
    done = asyncio.Event()
    broker = KafkaBroker(bootstrap, logger=None)

    @broker.subscriber(  # type: ignore[untyped-decorator]
        topic,
        batch=True,
        group_id=f"{topic}-latency",
        ack_policy=AckPolicy.MANUAL,
        max_records=500,
        batch_timeout_ms=5,
        **consumer_options(500, session_timeout_ms=1000),
    )
    async def on_batch(message: KafkaMessage) -> None:
        now = time.time() * 1000
        raw: Any = message.raw_message
        for record in raw if isinstance(raw, tuple) else (raw,):
            latencies.append(now - record.timestamp)
        await message.ack()
        if len(latencies) >= expected:
            done.set()

    await broker.start()
    await asyncio.sleep(1.5)  # the group settles
    print("ready", flush=True)
    with contextlib.suppress(TimeoutError):  # report what arrived, even if some never did
        await asyncio.wait_for(done.wait(), timeout=60)
    await broker.stop()
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))  # as under uvicorn
