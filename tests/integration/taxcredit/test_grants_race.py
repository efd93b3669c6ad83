"""Within one programme the database decides the support limits: claims of one firm, all
verified before any is granted, approved at once and certified by two replicas of the service
at the same time, are granted only as far as the limits allow. The rest are rejected at the
certificate stage with the reason verification would have given.

PostgreSQL only: the point is concurrent grant transactions on one database, from two
replicas in one consumer group, each certifying its share of the topic's partitions. On
SQLite one writer at a time already makes them one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from services.taxcredit.adapters.tables import support_grants
from services.taxcredit.main import create_app
from tests.integration.harness import ServiceHarness, running, service_settings, wait_for_status
from tests.integration.taxcredit.conftest import decide, strategic, submit

CLAIMS = 12
CREDIT = 35_000_000
"""0.25 × 100,000,000 + 0.10 × (100,000,000 − 0): an SME's credit with no history."""


@contextlib.asynccontextmanager
async def two_replicas(
    postgres_url: str, kafka_bootstrap: str, prefix: str, state: Path, cap: int
) -> AsyncIterator[tuple[ServiceHarness, ServiceHarness]]:
    """Two replicas of taxcredit on one database, under a support policy with ``cap``."""
    policy = state / "support-policy.json"
    policy.write_text(
        json.dumps({"version": "race", "combined_yearly_cap": cap, "assumption": "a test cap"})
    )
    settings = service_settings("taxcredit", postgres_url, kafka_bootstrap, prefix, state)
    settings = settings.model_copy(update={"support_policy_path": policy})
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running(create_app, settings))
        second = await stack.enter_async_context(running(create_app, settings))
        await asyncio.sleep(2)  # both replicas hold partitions of the stages' group
        yield first, second


async def certify_all_at_once(
    first: ServiceHarness, second: ServiceHarness, cost: Callable[[int], str]
) -> list[dict[str, Any]]:
    """The firm's claims, verified one by one, then approved all at once: the two replicas'
    certificate stages take them as they come. Returns each claim once settled."""
    ids = []
    for n in range(CLAIMS):
        body = strategic(100_000_000, reference=f"FAC-{n}")
        body["cost_reference"] = cost(n)
        created = await submit(first, body, key=f"claim-{n}")
        ids.append(created["id"])
    for claim in ids:
        await wait_for_status(first, claim, "verified")
    answers = await asyncio.gather(
        *(decide(first if n % 2 else second, claim, "officer-kim") for n, claim in enumerate(ids))
    )
    assert [a.status_code for a in answers] == [200] * CLAIMS
    settled = []
    for claim in ids:
        settled.append(await wait_for_status_in(first, claim, {"certified", "rejected"}, within=60))
    return settled


async def wait_for_status_in(
    harness: ServiceHarness, claim: str, statuses: set[str], within: float
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        body: dict[str, Any] = (
            await harness.client.get(f"/v1/applications/{claim}", headers=harness.officer())
        ).json()
        if body["status"] in statuses:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{claim} never settled: {body}")
        await asyncio.sleep(0.05)


async def granted(harness: ServiceHarness) -> list[dict[str, Any]]:
    async with harness.service.store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(support_grants).where(support_grants.c.programme == "taxcredit")
        )
        return [dict(row._mapping) for row in rows]


@pytest.fixture
def prefix(unique_name: Callable[[str], str]) -> str:
    return unique_name("t") + "."


async def test_one_cost_is_certified_once_however_the_replicas_race(
    postgres_url: str, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    async with two_replicas(postgres_url, kafka_bootstrap, prefix, tmp_path, 10**12) as (a, b):
        settled = await certify_all_at_once(a, b, cost=lambda n: "COST-OSONG-PLANT")
        [grant] = await granted(a)

    certified = [c for c in settled if c["status"] == "certified"]
    rejected = [c for c in settled if c["status"] == "rejected"]
    assert [c["id"] for c in certified] == [grant["application_id"]]
    assert len(rejected) == CLAIMS - 1
    for claim in rejected:
        [reason] = claim["rejection_reasons"]
        assert reason["code"] == "duplicate_support"
        assert f"taxcredit application {grant['application_id']}" in reason["message"]


async def test_a_firm_is_certified_up_to_its_cap_however_the_replicas_race(
    postgres_url: str, kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    cap = 2 * CREDIT + CREDIT // 2  # room for two credits, not three
    async with two_replicas(postgres_url, kafka_bootstrap, prefix, tmp_path, cap) as (a, b):
        settled = await certify_all_at_once(a, b, cost=lambda n: f"COST-{n}")
        grants = await granted(a)

    certified = [c for c in settled if c["status"] == "certified"]
    assert len(certified) == 2
    assert sum(g["granted"] for g in grants) == 2 * CREDIT <= cap
    assert {g["application_id"] for g in grants} == {c["id"] for c in certified}
    for claim in settled:
        if claim["status"] == "rejected":
            assert [r["code"] for r in claim["rejection_reasons"]] == ["combined_cap_exceeded"]
