"""The programme budget can never be overspent, however many officers approve at once."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from services.voucher.adapters.tables import budgets
from services.voucher.main import create_app, default_catalogue
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import VoucherHarness, application_body, wait_for_status

AMOUNT = 1_000_000
PROGRAMME = "cluster-startup-support-2026"


@pytest.fixture
async def small_budget(
    postgres_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[VoucherHarness]:
    catalogue = copy.deepcopy(default_catalogue())
    programme = next(p for p in catalogue["programmes"] if p["id"] == PROGRAMME)
    programme["budget_total"] = 20 * AMOUNT
    settings = service_settings(
        "voucher", postgres_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    )
    async with running(create_app, settings, catalogue=catalogue) as harness:
        yield harness


async def verified_application(harness: VoucherHarness, n: int) -> str:
    firm_id = f"{100 + n:03d}-45-{10000 + n:05d}"
    response = await harness.client.post(
        "/v1/applications",
        json=application_body(firm_id=firm_id, requested_amount=AMOUNT),
        headers={**harness.firm(firm_id=firm_id), "Idempotency-Key": f"k{n}"},
    )
    assert response.status_code == 201, response.text
    application_id: str = response.json()["id"]
    await wait_for_status(harness, application_id, "verified")
    return application_id


async def budget_left_and_approvals(harness: VoucherHarness) -> tuple[int, int]:
    """What the programme's budget row has left, and how many approvals the log holds."""
    async with harness.service.store.engine.connect() as connection:
        available = (
            await connection.execute(
                sa.select(budgets.table.c.available).where(budgets.table.c.pool_id == PROGRAMME)
            )
        ).scalar_one()
    approved = [
        e
        for e in await harness.service.store.read_all(limit=10_000)
        if e.envelope["type"] == "voucher.application.approved"
    ]
    return int(available), len(approved)


async def test_fifty_concurrent_approvals_against_a_budget_of_twenty_approve_exactly_twenty(
    small_budget: VoucherHarness,
) -> None:
    ids = [await verified_application(small_budget, n) for n in range(50)]
    officer = small_budget.officer()

    async def approve(application_id: str) -> httpx.Response:
        return await small_budget.client.post(
            f"/v1/applications/{application_id}/decisions",
            json={"decision": "approve", "reason": "eligible"},
            headers=officer,
        )

    responses = await asyncio.gather(*(approve(i) for i in ids))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 20 + [409] * 30
    assert {r.json()["type"].rsplit("/", 1)[1] for r in responses if r.status_code == 409} == {
        "budget_exhausted"
    }
    assert await budget_left_and_approvals(small_budget) == (0, 20)
    listed = await small_budget.client.get(
        "/v1/applications", params={"status": "verified", "limit": 200}, headers=officer
    )
    assert len(listed.json()["items"]) == 30  # refused approvals left nothing behind


async def test_across_two_replicas_fifty_approvals_against_twenty_still_approve_twenty(
    postgres_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """Each replica group-commits its own requests: the budget row, not either process,
    decides. Half the approvals go to each replica, all at once; the two replicas also split
    the stages' partitions between them."""
    catalogue = copy.deepcopy(default_catalogue())
    programme = next(p for p in catalogue["programmes"] if p["id"] == PROGRAMME)
    programme["budget_total"] = 20 * AMOUNT
    settings = service_settings(
        "voucher", postgres_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    )
    async with (
        running(create_app, settings, catalogue=catalogue) as first,
        running(create_app, settings, catalogue=catalogue) as second,
    ):
        ids = [await verified_application(first, n) for n in range(50)]
        stages = [
            s.consumer
            for replica in (first, second)
            for s in replica.app.state.runtime.broker.subscribers
            if s.consumer is not None and str(s.group_id).endswith("voucher-stages")
        ]
        held = [c.assignment() for c in stages]
        assert all(held) and not held[0] & held[1]  # the group split the partitions

        async def approve(n: int, application_id: str) -> httpx.Response:
            replica = first if n % 2 else second
            return await replica.client.post(
                f"/v1/applications/{application_id}/decisions",
                json={"decision": "approve", "reason": "eligible"},
                headers=replica.officer(),
            )

        responses = await asyncio.gather(*(approve(n, i) for n, i in enumerate(ids)))
        assert sorted(r.status_code for r in responses) == [200] * 20 + [409] * 30
        assert await budget_left_and_approvals(first) == (0, 20)
