"""A fund's capacity can never be overcommitted, however many approvals race for it.

PostgreSQL only: the point is concurrent transactions holding capacity from the same rows,
from two replicas of the service on one database, each consuming its share of the topic's
partitions. SQLite lets one writer in at a time, so a race there proves nothing about the
holds; the holds' correctness on SQLite is the same conditional UPDATE the other tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.fund.adapters.tables import capacity
from services.fund.main import create_app
from tests.integration.fund.conftest import (
    GOIF,
    MEGA,
    MEGA_MEMBERS,
    MEMBERS,
    apply_as,
    codes,
    events_of,
    funds,
    small_catalogue,
    vote,
)
from tests.integration.harness import ServiceHarness, running, service_settings

AMOUNT = 1_000_000_000
MEGA_CAPACITY = 15 * AMOUNT
"""The parent fund holds exactly 15 of the 40 investments."""
GOIF_CAPACITY = 10 * AMOUNT
"""The sub-fund's own pool holds 10, carved out of the parent's 15."""
APPLICATIONS = 40
QUORUM = {MEGA: MEGA_MEMBERS[:3], GOIF: MEMBERS[:2]}
"""Just enough ``for`` votes to approve, per fund."""


@pytest.fixture
async def replicas(
    postgres_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[tuple[ServiceHarness, ServiceHarness]]:
    """Two replicas of the fund service on one PostgreSQL database, in one consumer group."""
    catalogue = small_catalogue(mega_capacity=MEGA_CAPACITY, goif_capacity=GOIF_CAPACITY)
    settings = service_settings(
        "fund", postgres_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running(create_app, settings, catalogue=catalogue))
        second = await stack.enter_async_context(running(create_app, settings, catalogue=catalogue))
        yield first, second


async def all_applications(harness: ServiceHarness) -> list[dict[str, Any]]:
    response = await harness.client.get(
        "/v1/applications", params={"limit": 200}, headers=harness.officer()
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def until_all(
    harness: ServiceHarness, settled: Callable[[dict[str, Any]], bool], within: float = 60
) -> list[dict[str, Any]]:
    """Poll the applications until every one of them is ``settled``."""
    deadline = asyncio.get_running_loop().time() + within
    items: list[dict[str, Any]] = []
    while asyncio.get_running_loop().time() < deadline:
        items = await all_applications(harness)
        if len(items) == APPLICATIONS and all(settled(a) for a in items):
            return items
        await asyncio.sleep(0.05)
    stuck = sorted({a["status"] for a in items if not settled(a)})
    raise AssertionError(f"{len(items)} applications, some still {stuck}")


async def pools(harness: ServiceHarness) -> dict[str, int]:
    """``fund_capacity`` as the database holds it: pool id -> available."""
    async with harness.service.store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(capacity.table.c.pool_id, capacity.table.c.available)
        )
        return {r.pool_id: int(r.available) for r in rows}


async def test_forty_concurrent_commitments_against_capacity_for_fifteen_commit_exactly_fifteen(
    replicas: tuple[ServiceHarness, ServiceHarness],
) -> None:
    first, second = replicas
    fund_of = {n: MEGA if n % 2 else GOIF for n in range(APPLICATIONS)}
    ids = await asyncio.gather(
        *(
            apply_as((first, second)[n % 2], n, fund_id=fund_of[n], amount=AMOUNT)
            for n in range(APPLICATIONS)
        )
    )
    await until_all(first, lambda a: a["status"] == "verified")  # all fit, before any commits
    fund_by_id = dict(zip(ids, fund_of.values(), strict=True))

    seen: dict[str, list[int]] = {MEGA: [], GOIF: []}
    seen_in_database: list[dict[str, int]] = []
    done = asyncio.Event()

    async def watch() -> None:
        """What a ministry analyst watching /v1/funds sees while the commitments race."""
        turn = 0
        while not done.is_set():
            figures = await funds((first, second)[turn % 2])
            for fund_id, figure in seen.items():
                figure.append(figures[fund_id]["available"])
                assert figures[fund_id]["committed"] >= 0, figures[fund_id]
            seen_in_database.append(await pools(first))
            turn += 1
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    ballots = [
        (application_id, member, (i + j) % 2)  # one application's votes reach both replicas
        for i, application_id in enumerate(ids)
        for j, member in enumerate(QUORUM[fund_by_id[application_id]])
    ]
    responses = await asyncio.gather(
        *(vote((first, second)[r], application_id, member) for application_id, member, r in ballots)
    )
    assert [r.status_code for r in responses] == [200] * len(ballots), [
        r.text for r in responses if r.status_code != 200
    ]
    settled = await until_all(first, lambda a: a["status"] in ("committed", "rejected"))
    done.set()
    await watcher

    for replica in (first, second):  # each took its share of the partitions
        stages = next(
            c for c in replica.app.state.runtime.extras["consumers"] if c.name.endswith("-stages")
        )
        assert stages.stats.applied > 0, "one replica did all the work: no race between them"
    committed = [a for a in settled if a["status"] == "committed"]
    rejected = [a for a in settled if a["status"] == "rejected"]
    assert len(committed) == 15
    assert len(rejected) == APPLICATIONS - 15
    assert all(codes(a) == ["insufficient_capacity"] for a in rejected)
    for application in rejected[:5]:
        [refusal] = [
            e
            for e in await events_of(first, application["id"])
            if e["type"] == "fund.application.rejected"
        ]
        assert refusal["payload"]["stage"] == "commitment"
        assert refusal["payload"]["available_capacity"] < AMOUNT

    in_sub_fund = sum(1 for a in committed if a["fund_id"] == GOIF)
    assert in_sub_fund <= 10  # the sub-fund's own pool
    final = await funds(second)
    assert final[MEGA]["available"] == MEGA_CAPACITY - 15 * AMOUNT == 0
    assert final[MEGA]["committed"] == 15 * AMOUNT
    assert final[GOIF]["available"] == GOIF_CAPACITY - in_sub_fund * AMOUNT
    assert final[GOIF]["committed"] == in_sub_fund * AMOUNT

    for fund_id, available in seen.items():
        assert available, "the watcher saw nothing"
        assert min(available) >= 0, (fund_id, available)
        assert available == sorted(available, reverse=True), (fund_id, available)  # only held
    assert seen[MEGA][0] > 0  # the watcher saw the race, not only its end
    assert all(v >= 0 for snapshot in seen_in_database for v in snapshot.values())
    assert await pools(first) == {MEGA: 0, GOIF: GOIF_CAPACITY - in_sub_fund * AMOUNT}

    committed_events = [
        e
        for e in await first.service.store.read_all(limit=100_000)
        if e.envelope["type"] == "fund.investment.committed"
    ]
    assert len(committed_events) == 15
    assert sorted(e.envelope["aggregate_id"] for e in committed_events) == sorted(
        a["id"] for a in committed
    )
