"""Officer decisions and provider redemptions over HTTP: four eyes and each refusal (PostgreSQL
and SQLite). Decisions go through group commit; each answer must be the one it gets alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx

from tests.integration.voucher.conftest import VoucherHarness, application_body, wait_for_status

PROVIDER = "prov-hanbit-law"  # registered for legal and intellectual_property


async def verified(voucher: VoucherHarness, amount: int, key: str = "k") -> str:
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(requested_amount=amount),
        headers={**voucher.firm(), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    application_id = str(response.json()["id"])
    await wait_for_status(voucher, application_id, "verified")
    return application_id


async def decide(
    voucher: VoucherHarness, application_id: str, officer: str, **body: object
) -> httpx.Response:
    return await voucher.client.post(
        f"/v1/applications/{application_id}/decisions",
        json={"decision": "approve", "reason": "eligible", **body},
        headers=voucher.officer(officer),
    )


async def issued_voucher(voucher: VoucherHarness, amount: int = 15_000_000) -> tuple[str, str]:
    application_id = await verified(voucher, amount)
    for officer in ("officer-kim", "officer-park"):
        assert (await decide(voucher, application_id, officer)).status_code == 200
    issued = await wait_for_status(voucher, application_id, "issued")
    return application_id, str(issued["voucher"]["id"])


async def redeem(
    voucher: VoucherHarness, voucher_id: str, invoice: str, amount: int, **more: str
) -> httpx.Response:
    return await voucher.client.post(
        f"/v1/vouchers/{voucher_id}/redemptions",
        json={"invoice_number": invoice, "amount": amount, "service_category": "legal", **more},
        headers={**voucher.provider(PROVIDER), "Idempotency-Key": invoice},
    )


async def test_above_the_threshold_two_distinct_officers_approve(voucher: VoucherHarness) -> None:
    application_id = await verified(voucher, 15_000_000)  # threshold: 10,000,000
    first = await decide(voucher, application_id, "officer-kim")
    assert first.status_code == 200
    assert first.json()["status"] == "verified"
    assert [a["officer"] for a in first.json()["approvals"]] == ["officer-kim"]

    again = await decide(voucher, application_id, "officer-kim")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"

    second = await decide(voucher, application_id, "officer-park")
    assert second.status_code == 200
    assert second.json()["status"] == "approved"
    assert second.json()["approved_amount"] == 15_000_000


async def test_an_officer_rejects_a_verified_application(voucher: VoucherHarness) -> None:
    application_id = await verified(voucher, 5_000_000)
    response = await decide(voucher, application_id, "officer-kim", decision="reject")
    assert response.status_code == 200
    assert response.json()["status"] == "rejected"
    late = await decide(voucher, application_id, "officer-park")
    assert late.status_code == 409


async def test_a_decision_on_an_unknown_application_is_404(voucher: VoucherHarness) -> None:
    assert (await decide(voucher, "app_missing", "officer-kim")).status_code == 404


async def test_redemptions_are_refused_for_each_reason_and_nothing_is_recorded(
    voucher: VoucherHarness,
) -> None:
    _, voucher_id = await issued_voucher(voucher)

    accepted = await redeem(voucher, voucher_id, "INV-1", 5_000_000)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "requested"

    over = await redeem(voucher, voucher_id, "INV-2", 10_000_001)  # 10,000,000 left
    assert over.status_code == 422
    category = await redeem(voucher, voucher_id, "INV-3", 1_000, service_category="tax")
    assert category.status_code == 422  # the provider is not registered for tax
    twice = await redeem(voucher, voucher_id, "INV-1", 5_000_000)
    assert twice.status_code == 202 and twice.json()["id"] == accepted.json()["id"]  # same key
    same_invoice = await voucher.client.post(
        f"/v1/vouchers/{voucher_id}/redemptions",
        json={"invoice_number": "INV-1", "amount": 1_000, "service_category": "legal"},
        headers={**voucher.provider(PROVIDER), "Idempotency-Key": "another-key"},
    )
    assert same_invoice.status_code == 409

    listed = await voucher.client.get(
        f"/v1/vouchers/{voucher_id}/redemptions", headers=voucher.provider(PROVIDER)
    )
    assert [r["invoice_number"] for r in listed.json()] == ["INV-1"]


async def test_an_expired_voucher_takes_no_redemption(voucher: VoucherHarness) -> None:
    application_id, voucher_id = await issued_voucher(voucher)
    voucher.clock.advance(timedelta(days=400))  # validity: 365 days
    assert await voucher.service.expire_due_vouchers() == 1
    document = await wait_for_status(voucher, application_id, "expired")
    assert document["returned_amount"] == 15_000_000
    response = await redeem(voucher, voucher_id, "INV-9", 1_000)
    assert response.status_code == 409


async def money(voucher: VoucherHarness) -> dict[str, int]:
    response = await voucher.client.get("/v1/programmes", headers=voucher.officer())
    programme = next(p for p in response.json() if p["id"] == "cluster-startup-support-2026")
    figures: dict[str, int] = programme["money"]
    assert figures["available"] == programme["budget_available"]
    return figures


async def test_the_programme_shows_money_held_paid_and_available(voucher: VoucherHarness) -> None:
    total = 5_000_000_000
    assert await money(voucher) == {
        "budget_total": total,
        "committed": 0,
        "paid": 0,
        "available": total,
    }
    application_id, voucher_id = await issued_voucher(voucher, 15_000_000)
    assert await money(voucher) == {
        "budget_total": total,
        "committed": 15_000_000,
        "paid": 0,
        "available": total - 15_000_000,
    }
    assert (await redeem(voucher, voucher_id, "INV-1", 5_000_000)).status_code == 202
    deadline = asyncio.get_running_loop().time() + 20
    while (await money(voucher))["paid"] == 0:  # the payout stage pays it shortly
        assert asyncio.get_running_loop().time() < deadline, "the redemption was never paid"
        await asyncio.sleep(0.05)
    assert await money(voucher) == {
        "budget_total": total,
        "committed": 10_000_000,
        "paid": 5_000_000,
        "available": total - 15_000_000,
    }
    voucher.clock.advance(timedelta(days=400))
    assert await voucher.service.expire_due_vouchers() == 1
    await wait_for_status(voucher, application_id, "expired")
    assert await money(voucher) == {  # the unspent rest went back
        "budget_total": total,
        "committed": 0,
        "paid": 5_000_000,
        "available": total - 5_000_000,
    }
