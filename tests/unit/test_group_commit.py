"""Group commit: requests arriving together share a batch, and each gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.batching import GroupCommit


class Refused(Exception):
    pass


class Ledger:
    """A stand-in for a database: a batch is one transaction, all or nothing."""

    def __init__(self, fail_batches_with: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.alone: list[int] = []
        self.committed: list[int] = []
        self.fail_batches_with = fail_batches_with or set()

    async def run_batch(self, items: Sequence[int]) -> list[int | Exception]:
        self.batches.append(list(items))
        await asyncio.sleep(0.01)  # the transaction's round trips: others queue meanwhile
        if self.fail_batches_with & set(items):
            raise RuntimeError("the transaction failed")  # rolled back: nothing committed
        results: list[int | Exception] = []
        for item in items:
            if item < 0:
                results.append(Refused(f"{item} refused"))
            else:
                self.committed.append(item)
                results.append(item * 10)
        return results

    async def run_one(self, item: int) -> int:
        self.alone.append(item)
        if item < 0 or item in self.fail_batches_with:
            raise Refused(f"{item} refused")
        self.committed.append(item)
        return item * 10


async def test_requests_arriving_together_share_batches_and_get_their_own_answers() -> None:
    ledger = Ledger()
    commit = GroupCommit("test", ledger.run_batch, ledger.run_one, concurrency=1)
    answers = await asyncio.gather(*(commit(n) for n in range(20)))
    assert answers == [n * 10 for n in range(20)]
    assert len(ledger.batches) < 20  # the first goes alone; the rest queued behind it
    assert sorted(n for batch in ledger.batches for n in batch) == list(range(20))
    assert ledger.alone == []


async def test_one_refused_request_does_not_undo_the_others() -> None:
    ledger = Ledger()
    commit = GroupCommit("test", ledger.run_batch, ledger.run_one, concurrency=1)
    results = await asyncio.gather(*(commit(n) for n in (1, 2, -3, 4)), return_exceptions=True)
    assert results[:2] == [10, 20] and results[3] == 40
    assert isinstance(results[2], Refused)
    assert sorted(ledger.committed) == [1, 2, 4]


async def test_a_failed_batch_is_retried_one_by_one() -> None:
    ledger = Ledger(fail_batches_with={7})
    commit = GroupCommit("test", ledger.run_batch, ledger.run_one, concurrency=1)
    first = asyncio.create_task(commit(0))  # occupies the worker so the rest batch up
    await asyncio.sleep(0)
    results = await asyncio.gather(*(commit(n) for n in (5, 6, 7, 8)), return_exceptions=True)
    assert await first == 0
    assert results[0] == 50 and results[1] == 60 and results[3] == 80
    assert isinstance(results[2], Refused)
    assert [5, 6, 7, 8] in ledger.batches
    assert sorted(ledger.alone) == [5, 6, 7, 8]
    assert sorted(ledger.committed) == [0, 5, 6, 8]  # each exactly once


async def test_a_caller_that_goes_away_does_not_stop_the_batch() -> None:
    ledger = Ledger()
    commit = GroupCommit("test", ledger.run_batch, ledger.run_one, concurrency=1)
    first = asyncio.create_task(commit(1))
    await asyncio.sleep(0)
    impatient = asyncio.create_task(commit(2))
    patient = asyncio.create_task(commit(3))
    await asyncio.sleep(0)
    impatient.cancel()
    assert await first == 10 and await patient == 30
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert 2 not in ledger.committed  # cancelled while queued: never run


def test_sizes_are_checked() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError):
        GroupCommit("test", ledger.run_batch, ledger.run_one, max_batch=0)


async def test_a_request_arriving_just_as_the_last_worker_exits_is_served() -> None:
    ledger = Ledger()
    commit = GroupCommit("test", ledger.run_batch, ledger.run_one, concurrency=1)
    async with asyncio.timeout(2):  # in this task: wait_for would start commit(2) a pass later
        assert await commit(1) == 10
        # The worker that answered 1 has just found the queue empty and ended; this task
        # runs on in the very next loop pass, before the worker's task is reaped. Its next
        # request must start a worker of its own, not wait for one that is gone.
        assert await commit(2) == 20
        assert await commit(3) == 30
