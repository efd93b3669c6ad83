"""A startup's voucher end to end: the service as its own process, the real broker, PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.contracts import Role, verify_chain
from shared.eventstore import create_engine
from tests.e2e.service_process import ServiceProcess, StartService, read_topic, wait_for_status

FIRM_ID = "214-86-13579"


@pytest.fixture
def voucher_process(start_service: StartService) -> ServiceProcess:
    return start_service("voucher")


def submit(http: httpx.Client, firm: dict[str, str], amount: int) -> str:
    response = http.post(
        "/v1/applications",
        headers={**firm, "Idempotency-Key": str(uuid.uuid4())},
        json={
            "programme_id": "cluster-startup-support-2026",
            "firm": {
                "firm_id": FIRM_ID,
                "name": "Hanbit Bio",
                "founded_on": "2023-03-02",
                "size": "sme",
                "cluster": "osong-bio",
                "industry": "advanced_bio",
            },
            "service_category": "legal",
            "requested_amount": amount,
            "purpose": "patent filing",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def issue_voucher(process: ServiceProcess, http: httpx.Client, amount: int) -> tuple[str, str]:
    firm = process.headers(Role.FIRM, "ceo", firm_id=FIRM_ID)
    application_id = submit(http, firm, amount)
    wait_for_status(http, application_id, "verified", firm)
    for officer in ("officer-kim", "officer-park"):
        response = http.post(
            f"/v1/applications/{application_id}/decisions",
            headers=process.headers(Role.OFFICER, officer),
            json={"decision": "approve", "reason": "eligible"},
        )
        assert response.status_code == 200, response.text
    issued = wait_for_status(http, application_id, "issued", firm)
    return application_id, str(issued["voucher"]["id"])


def test_voucher_from_application_to_paid_invoices(voucher_process: ServiceProcess) -> None:
    process = voucher_process
    provider = process.headers(Role.PROVIDER, "clerk", provider_id="prov-hanbit-law")
    firm = process.headers(Role.FIRM, "ceo", firm_id=FIRM_ID)
    with httpx.Client(base_url=process.url, timeout=10) as http:
        application_id, voucher_id = issue_voucher(process, http, 15_000_000)
        for invoice, amount in (("INV-1", 9_000_000), ("INV-2", 6_000_000)):
            response = http.post(
                f"/v1/vouchers/{voucher_id}/redemptions",
                headers={**provider, "Idempotency-Key": invoice},
                json={"invoice_number": invoice, "amount": amount, "service_category": "legal"},
            )
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "requested"
        closed = wait_for_status(http, application_id, "closed", firm)
        assert closed["voucher"]["balance"] == 0
        redemptions = http.get(f"/v1/vouchers/{voucher_id}/redemptions", headers=provider).json()
        assert [r["status"] for r in redemptions] == ["paid", "paid"]
        assert all(r["payout_id"] for r in redemptions)
        # the whole chain, officers named, as an auditor sees it (a firm sees them as a role)
        auditor = process.headers(Role.AUDITOR, "auditor-lee")
        served = http.get(f"/v1/applications/{application_id}/events", headers=auditor).json()
        metrics = http.get("/metrics").text

    def metric(name: str, consumer: str | None = None) -> float:
        """A metric's value; ``consumer``: the one of the consumer whose name ends so."""
        labels = rf'consumer="[^"]*{consumer}"' if consumer else "[^}]*"
        (value,) = re.findall(rf"^{name}{{{labels}}} (\S+)$", metrics, flags=re.MULTILINE)
        return float(value)

    assert metric("incentives_relay_published_total") >= len(served)  # plus the seeded providers
    # verify, issue, pay, pay (the support read model's consumer is counted apart)
    assert metric("incentives_consumer_applied_total", "voucher-stages") >= 4
    # what the stage here could not take is shown (none, in a calm run, or a few)
    assert metric("incentives_consumer_left_to_broker_total", "voucher-stages") >= 0
    types = [e["type"] for e in served]
    assert types[:5] == [
        "voucher.application.submitted",
        "voucher.application.verified",
        "voucher.application.approval_recorded",
        "voucher.application.approved",
        "voucher.voucher.issued",
    ]
    # INV-1 may be paid before INV-2 is requested: the two interleave either way
    assert (
        sorted(types[5:9]) == ["voucher.redemption.paid"] * 2 + ["voucher.redemption.requested"] * 2
    )
    assert types[9:] == ["voucher.voucher.closed"]
    paid = [e["payload"]["redemption_id"] for e in served if e["type"].endswith(".paid")]
    requested = [e["payload"]["redemption_id"] for e in served if e["type"].endswith(".requested")]
    assert sorted(paid) == sorted(requested)
    assert verify_chain(served).ok
    records = asyncio.run(
        read_topic(process.bootstrap, f"{process.topic_prefix}voucher.events", count=100, within=5)
    )
    on_kafka = [json.loads(r.value) for r in records if r.key == application_id.encode()]
    assert on_kafka == served


def test_killed_during_a_redemption_burst_every_accepted_redemption_is_paid_once(
    voucher_process: ServiceProcess,
) -> None:
    process = voucher_process
    provider = process.headers(Role.PROVIDER, "clerk", provider_id="prov-hanbit-law")
    with httpx.Client(base_url=process.url, timeout=10) as http:
        application_id, voucher_id = issue_voucher(process, http, 30_000_000)

    async def burst() -> list[str]:
        accepted: list[str] = []
        async with httpx.AsyncClient(base_url=process.url, timeout=5) as client:

            async def redeem(n: int) -> None:
                try:
                    response = await client.post(
                        f"/v1/vouchers/{voucher_id}/redemptions",
                        headers={**provider, "Idempotency-Key": f"inv-{n}"},
                        json={
                            "invoice_number": f"INV-{n}",
                            "amount": 500_000,
                            "service_category": "legal",
                        },
                    )
                except httpx.HTTPError:
                    return  # the service died under this request
                if response.status_code == 202:
                    accepted.append(response.json()["id"])

            async def killer() -> None:
                for _ in range(200):  # kill once a few were accepted, with more in flight
                    if len(accepted) >= 5:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(process.kill)

            await asyncio.gather(*(redeem(n) for n in range(40)), killer())
        return accepted

    accepted = asyncio.run(burst())
    assert accepted, "nothing was accepted before the kill; the test proves nothing"
    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            redemptions = http.get(
                f"/v1/vouchers/{voucher_id}/redemptions", headers=provider
            ).json()
            if all(r["status"] == "paid" for r in redemptions):
                break
            time.sleep(0.1)
        # the whole chain, officers named, as an auditor sees it (a firm sees them as a role)
        auditor = process.headers(Role.AUDITOR, "auditor-lee")
        served = http.get(f"/v1/applications/{application_id}/events", headers=auditor).json()
    by_id = {r["id"]: r for r in redemptions}
    assert set(accepted) <= set(by_id), "an accepted redemption was lost"
    assert all(r["status"] == "paid" for r in redemptions)
    paid_events = [e for e in served if e["type"] == "voucher.redemption.paid"]
    assert sorted(e["payload"]["redemption_id"] for e in paid_events) == sorted(by_id)

    async def ledger() -> list[Any]:
        engine = create_engine(process.database_url)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    sa.text("SELECT payout_id, reference, amount FROM ledger_entries")
                )
                return list(rows)
        finally:
            await engine.dispose()

    entries = asyncio.run(ledger())
    assert sorted(e.reference for e in entries) == sorted(by_id)
    assert {e.payout_id for e in entries} == {r["payout_id"] for r in redemptions}
    assert verify_chain(served).ok
