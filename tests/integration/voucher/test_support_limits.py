"""Cross-programme support limits in the running voucher service (PostgreSQL and SQLite, the
real broker): other programmes' grants refuse a voucher at verification, the voucher's own
grant reaches the read model, and the policy in force is public."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.fund.domain.events import InvestmentCommitted
from services.taxcredit.domain.events import CertificateIssued, Programme
from services.voucher.adapters.tables import support_grants
from services.voucher.main import create_app
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.domain.support import SupportFacts
from shared.kit.support import SupportBook, default_policy
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import (
    FIRM_ID,
    VoucherHarness,
    application_body,
    wait_for_status,
)

COST = "FACILITY-OSONG-2026-07"
GRANTED_AT = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)


def certificate_issued(
    *, amount: int = 1_500_000_000, cost: str = COST, application_id: str = "app_tc_1"
) -> Envelope:
    """A tax credit certified by taxcredit, as its relay publishes it."""
    payload = CertificateIssued(
        number="TC-2026-000001",
        amount=amount,
        issued_on=date(2026, 10, 1),
        firm_id=FIRM_ID,
        tax_year=2026,
        programme=Programme.STRATEGIC_INVESTMENT,
        cost_reference=cost,
    )
    return sealed(payload.event(), application_id)


def investment_committed(*, amount: int, cost: str, application_id: str = "app_fund_1") -> Envelope:
    payload = InvestmentCommitted(
        committed_on=date(2026, 10, 1),
        amount=amount,
        firm_id=FIRM_ID,
        year=2026,
        fund_id="bio-mega-fund",
        cost_reference=cost,
    )
    return sealed(payload.event(), application_id)


def sealed(event: NewEvent, application_id: str) -> Envelope:
    return Envelope.seal(
        aggregate_id=application_id,
        aggregate_seq=7,
        event=event,
        occurred_at=GRANTED_AT,
        actor=Actor(sub="stage", role=Role.SYSTEM),
        firm_id=FIRM_ID,
        correlation_id="corr-elsewhere",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def book_of(voucher: VoucherHarness) -> SupportBook:
    book = voucher.app.state.support
    assert isinstance(book, SupportBook)
    return book


async def record(voucher: VoucherHarness, *grants: Envelope) -> None:
    """The grants, as the support consumer records them from the other programmes' topics."""
    async with voucher.service.store.transaction() as uow:
        await book_of(voucher).apply(uow, list(grants))


async def support_facts(
    voucher: VoucherHarness, cost: str | None = COST, book: SupportBook | None = None
) -> SupportFacts:
    async with voucher.service.store.transaction() as uow:
        [facts] = await (book or book_of(voucher)).facts(uow, [(FIRM_ID, 2026, cost)])
    return facts


async def until(check: Callable[[], Any], what: str, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {within} s")


async def apply_for(voucher: VoucherHarness, key: str, **overrides: Any) -> str:
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(**overrides),
        headers={**voucher.firm(), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def codes(document: dict[str, Any]) -> list[str]:
    return [r["code"] for r in document["rejection_reasons"]]


async def test_a_cost_a_tax_credit_already_supports_refuses_the_voucher(
    voucher: VoucherHarness,
) -> None:
    await record(voucher, certificate_issued(application_id="app_tc_42"))

    application_id = await apply_for(voucher, "dup", cost_reference=COST)
    document = await wait_for_status(voucher, application_id, "rejected")

    assert document["cost_reference"] == COST
    assert codes(document) == ["duplicate_support"]
    message = document["rejection_reasons"][0]["message"]
    assert COST in message and "taxcredit application app_tc_42" in message
    chain = await voucher.client.get(
        f"/v1/applications/{application_id}/events", headers=voucher.auth_auditor()
    )
    rejected = chain.json()[-1]
    assert rejected["type"] == "voucher.application.rejected"
    support = rejected["payload"]["facts"]["support"]
    assert support["supported_elsewhere"] == "taxcredit application app_tc_42"
    assert support["cost_reference"] == COST and support["year"] == 2026
    assert support["combined_support"] == 1_500_000_000


async def test_the_same_firm_naming_another_cost_is_verified(voucher: VoucherHarness) -> None:
    await record(voucher, certificate_issued())

    application_id = await apply_for(voucher, "other-cost", cost_reference="CONTRACT-LEGAL-9")

    document = await wait_for_status(voucher, application_id, "verified")
    assert document["cost_reference"] == "CONTRACT-LEGAL-9"


async def test_a_firm_whose_grants_would_pass_the_combined_cap_is_refused(
    voucher: VoucherHarness,
) -> None:
    cap = book_of(voucher).policy.combined_yearly_cap
    await record(voucher, investment_committed(amount=cap - 8_000_000 + 1, cost="TRIAL-1"))

    application_id = await apply_for(voucher, "over", requested_amount=8_000_000)
    document = await wait_for_status(voucher, application_id, "rejected")

    assert codes(document) == ["combined_cap_exceeded"]
    assert f"cap of {cap} won" in document["rejection_reasons"][0]["message"]


async def test_a_grant_published_on_another_programmes_topic_refuses_the_voucher(
    voucher: VoucherHarness,
) -> None:
    runtime = voucher.app.state.runtime
    grant = certificate_issued(application_id="app_tc_published")
    producer = AIOKafkaProducer(
        bootstrap_servers=runtime.settings.kafka_bootstrap_servers, acks="all"
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            runtime.topic("taxcredit.events"),
            json.dumps(grant.to_json_dict()).encode(),
            key=grant.aggregate_id.encode(),
        )
    finally:
        await producer.stop()

    async def recorded() -> bool:
        return (await support_facts(voucher)).supported_elsewhere is not None

    await until(recorded, "the support consumer recording the tax credit")
    application_id = await apply_for(voucher, "after-publish", cost_reference=COST)
    document = await wait_for_status(voucher, application_id, "rejected")
    assert codes(document) == ["duplicate_support"]


async def test_a_grant_made_elsewhere_after_verification_stops_the_voucher_at_issue(
    voucher: VoucherHarness,
) -> None:
    """Checked again at the grant: a fund investment in the same cost, committed between the
    voucher's verification and its issue, makes the issue stage reject it, and the budget
    the approval held goes back to the programme."""

    async def money() -> dict[str, Any]:
        response = await voucher.client.get("/v1/programmes", headers=voucher.officer())
        [programme] = [p for p in response.json() if p["id"] == "cluster-startup-support-2026"]
        return dict(programme["money"])

    application_id = await apply_for(voucher, "late", cost_reference=COST)
    await wait_for_status(voucher, application_id, "verified")
    before = await money()
    await record(voucher, investment_committed(amount=300_000_000, cost=COST))

    approved = await voucher.client.post(
        f"/v1/applications/{application_id}/decisions",
        json={"decision": "approve", "reason": "eligible"},
        headers={**voucher.officer(), "Idempotency-Key": "approve-late"},
    )
    assert approved.status_code == 200, approved.text
    document = await wait_for_status(voucher, application_id, "rejected")

    assert codes(document) == ["duplicate_support"]
    assert document.get("voucher") is None
    chain = await voucher.client.get(
        f"/v1/applications/{application_id}/events", headers=voucher.auth_auditor()
    )
    refusal = chain.json()[-1]
    assert refusal["actor"]["sub"] == "voucher-issue"
    assert refusal["payload"]["stage"] == "issue"
    assert refusal["payload"]["support"]["supported_elsewhere"] == "fund application app_fund_1"
    assert await money() == before  # the approval's hold is back in the budget
    assert (await support_facts(voucher)).combined_support == 300_000_000  # no voucher granted


async def test_an_issued_voucher_is_a_grant_the_other_programmes_see(
    voucher: VoucherHarness,
) -> None:
    application_id = await apply_for(voucher, "granted", cost_reference=COST)
    await wait_for_status(voucher, application_id, "verified")
    approved = await voucher.client.post(
        f"/v1/applications/{application_id}/decisions",
        json={"decision": "approve", "reason": "eligible"},
        headers={**voucher.officer(), "Idempotency-Key": "approve"},
    )
    assert approved.status_code == 200, approved.text
    await wait_for_status(voucher, application_id, "issued")

    async def recorded() -> bool:
        return (await support_facts(voucher)).combined_support == 8_000_000

    await until(recorded, "the support consumer recording the voucher")
    # for a fund application naming the same cost, the voucher is a duplicate
    as_fund = SupportBook(support_grants, "fund", book_of(voucher).policy)
    facts = await support_facts(voucher, book=as_fund)
    assert facts.supported_elsewhere == f"voucher application {application_id}"


async def test_the_support_policy_in_force_is_public(voucher: VoucherHarness) -> None:
    _, document = default_policy()

    for headers in ({}, voucher.firm(), voucher.auth_auditor()):
        response = await voucher.client.get("/v1/support-policy", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["combined_yearly_cap"] == document["combined_yearly_cap"] == 50_000_000_000
        assert body["assumption"] == document["assumption"]
        assert "duplicate_support" in body["rejection_reasons"]


@pytest.fixture
async def capped_voucher(
    database_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> AsyncIterator[VoucherHarness]:
    """A voucher service whose support policy caps a firm at 10,000,000 won a year."""
    policy = tmp_path / "support-policy.json"
    policy.write_text(
        json.dumps(
            {
                "version": "test-10m",
                "combined_yearly_cap": 10_000_000,
                "currency": "KRW",
                "assumption": "a cap small enough to reach in a test",
            }
        ),
        encoding="utf-8",
    )
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    ).model_copy(update={"support_policy_path": policy})
    async with running(create_app, settings) as harness:
        yield harness


async def test_the_combined_cap_is_the_configured_policys(capped_voucher: VoucherHarness) -> None:
    voucher = capped_voucher
    policy = await voucher.client.get("/v1/support-policy")
    assert policy.json()["combined_yearly_cap"] == 10_000_000
    assert policy.json()["assumption"] == "a cap small enough to reach in a test"
    await record(voucher, certificate_issued(amount=3_000_000, cost="FAC-ELSEWHERE"))

    over = await apply_for(voucher, "over", requested_amount=7_000_001)
    rejected = await wait_for_status(voucher, over, "rejected")
    assert codes(rejected) == ["combined_cap_exceeded"]

    exactly = await apply_for(voucher, "exactly", requested_amount=7_000_000)
    verified = await wait_for_status(voucher, exactly, "verified")
    assert verified["requested_amount"] == 7_000_000
