"""Redemptions paid by a treasury over HTTP that fails, times out and answers twice (both
backends, the real broker, a real local HTTP server as the treasury).

The payout worker calls the treasury outside any command's transaction, once per due
payout, with the payout id as the Idempotency-Key: however the treasury misbehaves, each
redemption is paid once, there and in the log. One that keeps failing becomes
``payout_failed``; an officer retries it, or cancels it (its amount back on the voucher),
unless the treasury paid it after all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.voucher.main import create_app
from tests.integration.harness import running, service_settings
from tests.integration.treasury import Treasury, paid_by
from tests.integration.voucher.conftest import VoucherHarness
from tests.integration.voucher.test_decisions_and_redemptions import issued_voucher, redeem


@pytest.fixture
async def voucher(
    database_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    treasury: tuple[Treasury, str],
) -> AsyncIterator[VoucherHarness]:
    settings = paid_by(
        service_settings(
            "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
        ),
        treasury[1],
        payout_max_attempts=3,
    )
    async with running(create_app, settings) as harness:
        yield harness


async def redemption(voucher: VoucherHarness, voucher_id: str, invoice: str) -> dict[str, Any]:
    listed = await voucher.client.get(
        f"/v1/vouchers/{voucher_id}/redemptions", headers=voucher.officer()
    )
    [found] = [r for r in listed.json() if r["invoice_number"] == invoice]
    return dict(found)


async def until_status(
    voucher: VoucherHarness, voucher_id: str, invoice: str, status: str, within: float = 20
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await redemption(voucher, voucher_id, invoice)
        if found["status"] == status:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{invoice} stayed {found['status']}, expected {status}")
        await asyncio.sleep(0.05)


async def paid_events(voucher: VoucherHarness, application_id: str) -> list[dict[str, Any]]:
    chain = await voucher.client.get(
        f"/v1/applications/{application_id}/events", headers=voucher.auth_auditor()
    )
    return [e for e in chain.json() if e["type"] == "voucher.redemption.paid"]


async def test_failing_timing_out_and_answering_twice_each_redemption_is_paid_once(
    voucher: VoucherHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    application_id, voucher_id = await issued_voucher(voucher)
    fake.failing, fake.hanging = 2, 2  # two 500s, then two payments answered too late
    invoices = [f"INV-{n}" for n in range(3)]
    for invoice in invoices:
        assert (await redeem(voucher, voucher_id, invoice, 1_000_000)).status_code == 202

    for invoice in invoices:
        await until_status(voucher, voucher_id, invoice, "paid")
    assert len(fake.paid) == 3  # once each at the treasury, though asked more often
    assert fake.requests > 3
    paid = await paid_events(voucher, application_id)
    assert sorted(e["payload"]["payout_id"] for e in paid) == sorted(fake.paid)


async def test_a_payout_that_keeps_failing_waits_for_an_officer_who_retries_it(
    voucher: VoucherHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    application_id, voucher_id = await issued_voucher(voucher)
    fake.down = True
    assert (await redeem(voucher, voucher_id, "INV-1", 2_000_000)).status_code == 202
    failed = await until_status(voucher, voucher_id, "INV-1", "payout_failed")
    chain = await voucher.client.get(
        f"/v1/applications/{application_id}/events", headers=voucher.auth_auditor()
    )
    [event] = [e for e in chain.json() if e["type"] == "voucher.redemption.payout_failed"]
    assert event["payload"]["attempts"] == 3 and "503" in event["payload"]["reason"]

    path = f"/v1/vouchers/{voucher_id}/redemptions/{failed['id']}"
    refused = await voucher.client.post(
        f"{path}/retry", json={"reason": "treasury back"}, headers=voucher.firm()
    )
    assert refused.status_code == 403
    fake.down = False
    retried = await voucher.client.post(
        f"{path}/retry", json={"reason": "treasury back"}, headers=voucher.officer()
    )
    assert retried.status_code == 200, retried.text
    await until_status(voucher, voucher_id, "INV-1", "paid")
    assert len(fake.paid) == 1 and len(await paid_events(voucher, application_id)) == 1
    again = await voucher.client.post(
        f"{path}/retry", json={"reason": "again"}, headers=voucher.officer()
    )
    assert again.status_code == 409  # paid: nothing to retry


async def test_a_cancelled_failed_payout_goes_back_on_the_voucher_unless_it_was_paid(
    voucher: VoucherHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    application_id, voucher_id = await issued_voucher(voucher)
    balance = (
        await voucher.client.get(f"/v1/applications/{application_id}", headers=voucher.officer())
    ).json()["voucher"]["balance"]
    fake.down = True
    assert (await redeem(voucher, voucher_id, "INV-1", 2_000_000)).status_code == 202
    failed = await until_status(voucher, voucher_id, "INV-1", "payout_failed")
    path = f"/v1/vouchers/{voucher_id}/redemptions/{failed['id']}/cancellation"
    body = {"reason": "invoice withdrawn by the provider"}
    fake.lookups_down = True  # whether it paid cannot be learnt: nothing is cancelled
    unknown = await voucher.client.post(path, json=body, headers=voucher.officer())
    assert unknown.status_code == 503, unknown.text
    assert unknown.headers["content-type"] == "application/problem+json"
    assert (await redemption(voucher, voucher_id, "INV-1"))["status"] == "payout_failed"
    fake.lookups_down = False
    cancelled = await voucher.client.post(path, json=body, headers=voucher.officer())
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    document = (
        await voucher.client.get(f"/v1/applications/{application_id}", headers=voucher.officer())
    ).json()
    assert document["voucher"]["balance"] == balance  # the amount is back on the voucher

    # the treasury paid one whose answers all came too late: cancelling records it paid
    fake.down, fake.hanging = False, 3
    assert (await redeem(voucher, voucher_id, "INV-2", 1_000_000)).status_code == 202
    failed = await until_status(voucher, voucher_id, "INV-2", "payout_failed")
    assert len(fake.paid) == 1  # it was paid, the first time
    refused = await voucher.client.post(
        f"/v1/vouchers/{voucher_id}/redemptions/{failed['id']}/cancellation",
        json={"reason": "no answer"},
        headers=voucher.officer(),
    )
    assert refused.status_code == 409, refused.text
    assert "paid" in refused.json()["detail"]
    await until_status(voucher, voucher_id, "INV-2", "paid")
    document = (
        await voucher.client.get(f"/v1/applications/{application_id}", headers=voucher.officer())
    ).json()
    assert document["voucher"]["balance"] == balance - 1_000_000
