"""Group commit: requests that arrive together share one database transaction.

Under load most of a command's cost is per transaction and per statement, not
per row: BEGIN, COMMIT and its WAL flush, a round trip per statement, a lock on
a hot row (a programme's budget) held until the commit. A :class:`GroupCommit`
queues the commands that arrive while earlier ones are being written and hands
them to ``run_batch`` together; alone, a command goes through the same path as
a batch of one, so nothing waits for company.

``run_batch`` returns one result or exception per item, in order: an item's own
failure (a domain error, decided before anything was written) must not undo the
others. If ``run_batch`` raises, its transaction is gone and each item runs
again alone through ``run_one``, in a transaction of its own, and gets what it
would have got without batching.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]],
        run_one: Callable[[T], Awaitable[R]],
        *,
        max_batch: int = 64,
        concurrency: int = 2,
    ) -> None:
        """``concurrency`` batches may be in flight at once (one committing, one being built)."""
        if max_batch < 1 or concurrency < 1:
            raise ValueError("max_batch and concurrency must be at least 1")
        self.name = name
        self._run_batch = run_batch
        self._run_one = run_one
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._workers: set[asyncio.Task[None]] = set()  # keeps the running tasks referenced
        self._running = 0
        """Workers that will still look at the queue: counted down by the worker itself, in
        the same step in which it finds the queue empty, never later by a done callback."""
        self.batches = 0
        self.items = 0
        self.fallbacks = 0

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._running < self._concurrency:
            self._running += 1
            worker = asyncio.create_task(self._work(), name=f"{self.name}-group-commit")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return await future

    async def _work(self) -> None:
        try:
            while self._queue:
                taken = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                live = [(item, future) for item, future in taken if not future.cancelled()]
                if live:
                    await self._settle(live)
        finally:
            # no await between the empty queue and this: a request queued after it
            # finds a free worker slot and starts one
            self._running -= 1

    async def _settle(self, taken: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in taken]
        self.batches += 1
        self.items += len(items)
        try:
            results: Sequence[R | BaseException] = await self._run_batch(items)
            if len(results) != len(items):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
        except Exception as error:
            if len(items) > 1:
                log.info("%s: batch of %d failed (%r); one by one", self.name, len(items), error)
            self.fallbacks += 1
            results = await asyncio.gather(
                *(self._run_one(item) for item in items), return_exceptions=True
            )
        except BaseException as error:  # cancelled: the callers must not wait forever
            for _, future in taken:
                if not future.done():
                    future.set_exception(error)
            raise
        for (_, future), result in zip(taken, results, strict=True):
            if future.done():
                continue  # the caller went away
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


__all__ = ["GroupCommit"]
