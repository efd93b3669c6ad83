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
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.voucher.main import create_app
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import VoucherHarness
from tests.integration.voucher.test_decisions_and_redemptions import issued_voucher, redeem


@dataclass
class Treasury:
    """A treasury that pays each Idempotency-Key once, and misbehaves as told."""

    failing: int = 0
    """The next so many payment requests answer 500 (nothing paid)."""
    hanging: int = 0
    """The next so many pay, then answer only after the client gave up."""
    down: bool = False
    """Every payment request answers 503 until this is False again."""
    paid: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0

    async def pay(self, request: Request) -> JSONResponse:
        self.requests += 1
        key = request.headers["Idempotency-Key"]
        body = await request.json()
        assert body["payout_id"] == key
        if self.down:
            return JSONResponse({"error": "maintenance"}, status_code=503)
        if self.failing:
            self.failing -= 1
            return JSONResponse({"error": "try later"}, status_code=500)
        first = self.paid.setdefault(key, {**body, "reference": f"TR-{len(self.paid) + 1}"})
        if self.hanging:
            self.hanging -= 1
            await asyncio.sleep(2)  # paid, but the answer comes too late
        return JSONResponse({"reference": first["reference"]}, status_code=201)

    async def find(self, request: Request) -> JSONResponse:
        found = self.paid.get(request.path_params["payout_id"])
        if found is None:
            return JSONResponse({"error": "no such payout"}, status_code=404)
        return JSONResponse({"reference": found["reference"]})


@contextlib.asynccontextmanager
async def serving(treasury: Treasury) -> AsyncIterator[str]:
    app = Starlette(
        routes=[
            Route("/payouts", treasury.pay, methods=["POST"]),
            Route("/payouts/{payout_id}", treasury.find, methods=["GET"]),
        ]
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(500):  # up within ten seconds
        if server.started:
            break
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/payouts"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def treasury() -> AsyncIterator[tuple[Treasury, str]]:
    fake = Treasury()
    async with serving(fake) as url:
        yield fake, url


@pytest.fixture
async def voucher(
    database_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    treasury: tuple[Treasury, str],
) -> AsyncIterator[VoucherHarness]:
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    ).model_copy(
        update={
            "treasury_url": treasury[1],
            "treasury_timeout_seconds": 0.5,
            "payout_max_attempts": 3,
            "payout_first_backoff_seconds": 0.05,
        }
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
    cancelled = await voucher.client.post(
        f"/v1/vouchers/{voucher_id}/redemptions/{failed['id']}/cancellation",
        json={"reason": "invoice withdrawn by the provider"},
        headers=voucher.officer(),
    )
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
