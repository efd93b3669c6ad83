"""Cross-programme support limits in the taxcredit service, on PostgreSQL and SQLite with the
real broker: the other programmes' grants arrive on their topics; verification refuses a
cost they granted and a firm over its combined yearly cap; an overlap found afterwards is
recorded as ``support.conflict.detected``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.taxcredit.adapters.tables import support_grants
from shared.contracts import Envelope
from tests.integration.harness import FIRM_ID, START, ServiceHarness, wait_for_status
from tests.integration.taxcredit.conftest import (
    decide,
    other_programme_event,
    programme_topic,
    publish,
    strategic,
    submit,
    until,
    venture,
)

COMBINED_CAP = 50_000_000_000  # the packaged policy, 2026-1


def voucher_issued(
    cost_reference: str,
    amount: int = 30_000_000,
    *,
    voucher: str = "va_0001",
    at: datetime = START,
) -> Envelope:
    """A voucher issued to the firm: the voucher programme's grant."""
    return other_programme_event(
        "voucher.voucher.issued",
        {
            "amount": amount,
            "firm_id": FIRM_ID,
            "year": 2026,
            "programme": "voucher",
            "cost_reference": cost_reference,
        },
        aggregate_id=voucher,
        firm_id=FIRM_ID,
        actor="voucher-issuer",
        seq=4,
        at=at,
    )


def fund_committed(amount: int, *, year: int = 2026) -> Envelope:
    """A fund investment committed to the firm: the fund programme's grant."""
    return other_programme_event(
        "fund.investment.committed",
        {
            "committed_on": f"{year}-06-01",
            "amount": amount,
            "firm_id": FIRM_ID,
            "programme": "fund",
            "year": year,
            "fund_id": "global-open-innovation",
            "cost_reference": "COST-FUND-ROUND-A",
        },
        aggregate_id="fa_0001",
        firm_id=FIRM_ID,
        actor="fund-commitments",
        seq=6,
    )


async def grants(harness: ServiceHarness) -> list[dict[str, Any]]:
    """The service's support read model, row by row."""
    async with harness.service.store.engine.connect() as connection:
        rows = await connection.execute(
            sa.select(support_grants).order_by(support_grants.c.programme)
        )
        return [dict(row._mapping) for row in rows]


async def granted_by(harness: ServiceHarness, programme: str) -> list[dict[str, Any]]:
    return [g for g in await grants(harness) if g["programme"] == programme]


async def test_the_support_policy_is_public(taxcredit: ServiceHarness) -> None:
    for headers in ({}, taxcredit.firm()):
        response = await taxcredit.client.get("/v1/support-policy", headers=headers)
        assert response.status_code == 200, response.text
        policy = response.json()
        assert policy["version"] == "2026-1"
        assert policy["combined_yearly_cap"] == COMBINED_CAP
        assert policy["programmes"] == ["voucher", "taxcredit", "fund"]
        assert policy["rejection_reasons"] == ["duplicate_support", "combined_cap_exceeded"]
    openapi = (await taxcredit.client.get("/openapi.json")).json()
    assert "/v1/support-policy" in openapi["paths"]
    claim = openapi["components"]["schemas"]["StrategicInvestmentIn"]["properties"]
    assert "cost_reference" in claim
    asyncapi = (await taxcredit.client.get("/asyncapi.json")).json()
    assert "support_conflict_detected" in asyncapi["components"]["messages"]


async def test_a_cost_a_voucher_was_issued_for_is_duplicate_support(
    taxcredit: ServiceHarness, kafka_bootstrap: str
) -> None:
    voucher = voucher_issued("COST-OSONG-PLANT")
    await publish(kafka_bootstrap, programme_topic(taxcredit, "voucher"), [voucher])
    await until(lambda: granted_by(taxcredit, "voucher"))

    same_cost = strategic(100_000_000, reference="FAC-1")
    same_cost["cost_reference"] = "COST-OSONG-PLANT"
    created = await submit(taxcredit, same_cost, key="same-cost")
    assert created["cost_reference"] == "COST-OSONG-PLANT"
    rejected = await wait_for_status(taxcredit, created["id"], "rejected")
    [reason] = rejected["rejection_reasons"]
    assert reason["code"] == "duplicate_support"
    assert "voucher application va_0001" in reason["message"]

    other_cost = strategic(100_000_000, reference="FAC-2")
    other_cost["cost_reference"] = "COST-OSONG-LAB"
    created = await submit(taxcredit, other_cost, key="other-cost")
    verified = await wait_for_status(taxcredit, created["id"], "verified")
    assert verified["cost_reference"] == "COST-OSONG-LAB"
    events = await taxcredit.client.get(
        f"/v1/applications/{created['id']}/events", headers=taxcredit.firm()
    )
    facts = events.json()[-1]["payload"]["facts"]
    assert facts["support"] == {
        "policy_version": "2026-1",
        "year": 2026,
        "cost_reference": "COST-OSONG-LAB",
        "supported_elsewhere": None,
        "combined_support": 30_000_000,  # the voucher
        "combined_yearly_cap": COMBINED_CAP,
    }
    assert facts["checks"][-2:] == ["no_duplicate_support", "combined_cap"]

    # without a cost reference the claim's own reference is the cost: a voucher for it counts
    await publish(
        kafka_bootstrap,
        programme_topic(taxcredit, "voucher"),
        [voucher_issued("INV-7", voucher="va_0002")],
    )
    await until(lambda: count(granted_by(taxcredit, "voucher"), 2))
    created = await submit(taxcredit, venture(1_000_000, reference="INV-7"), key="inv-7")
    rejected = await wait_for_status(taxcredit, created["id"], "rejected")
    assert [r["code"] for r in rejected["rejection_reasons"]] == ["duplicate_support"]
    assert rejected["cost_reference"] == "INV-7"


async def count(rows: Any, expected: int) -> bool:
    return len(await rows) == expected


async def test_a_firm_over_its_combined_yearly_cap_is_refused_in_that_year_only(
    taxcredit: ServiceHarness, kafka_bootstrap: str
) -> None:
    committed = fund_committed(COMBINED_CAP - 30_000_000)
    await publish(kafka_bootstrap, programme_topic(taxcredit, "fund"), [committed])
    await until(lambda: granted_by(taxcredit, "fund"))

    # 0.25 × 100,000,000 + 0.10 × 100,000,000 = 35,000,000: 5,000,000 won over the cap
    over = await submit(taxcredit, strategic(100_000_000, reference="FAC-1"), key="over")
    rejected = await wait_for_status(taxcredit, over["id"], "rejected")
    [reason] = rejected["rejection_reasons"]
    assert reason["code"] == "combined_cap_exceeded"
    assert "35000000 won more" in reason["message"]
    # 0.25 × 80,000,000 + 0.10 × 80,000,000 = 28,000,000: within the cap
    within = await submit(taxcredit, strategic(80_000_000, reference="FAC-2"), key="within")
    await wait_for_status(taxcredit, within["id"], "verified")
    # the same credit for the year before counts against that year's support: none
    last_year = strategic(100_000_000, reference="FAC-3", tax_year=2025)
    earlier = await submit(taxcredit, last_year, key="last-year")
    await wait_for_status(taxcredit, earlier["id"], "verified")


async def test_a_grant_made_elsewhere_after_verification_stops_the_certificate(
    taxcredit: ServiceHarness, kafka_bootstrap: str
) -> None:
    """Checked again at the grant: a voucher for the same cost, issued between the claim's
    verification and its certification, makes the certificate stage reject the claim."""
    body = strategic(100_000_000, reference="FAC-1")
    body["cost_reference"] = "COST-OSONG-PLANT"
    created = await submit(taxcredit, body, key="claim")
    await wait_for_status(taxcredit, created["id"], "verified")
    await publish(
        kafka_bootstrap, programme_topic(taxcredit, "voucher"), [voucher_issued("COST-OSONG-PLANT")]
    )
    await until(lambda: granted_by(taxcredit, "voucher"))

    approved = await decide(taxcredit, created["id"], "officer-kim")
    assert approved.status_code == 200, approved.text
    rejected = await wait_for_status(taxcredit, created["id"], "rejected")
    [reason] = rejected["rejection_reasons"]
    assert reason["code"] == "duplicate_support"
    assert rejected.get("certificate") is None
    events = await taxcredit.client.get(
        f"/v1/applications/{created['id']}/events", headers=taxcredit.firm()
    )
    refusal = events.json()[-1]
    assert refusal["type"] == "taxcredit.application.rejected"
    assert refusal["actor"]["sub"] == "taxcredit-certificates"
    assert refusal["payload"]["stage"] == "certification"
    assert refusal["payload"]["support"]["supported_elsewhere"] == "voucher application va_0001"
    assert await granted_by(taxcredit, "taxcredit") == []


async def test_a_certificate_is_a_grant_and_an_overlap_found_afterwards_is_recorded(
    taxcredit: ServiceHarness, kafka_bootstrap: str
) -> None:
    body = strategic(100_000_000, reference="FAC-1")
    body["cost_reference"] = "COST-OSONG-PLANT"
    created = await submit(taxcredit, body, key="claim")
    await wait_for_status(taxcredit, created["id"], "verified")
    taxcredit.clock.advance(timedelta(minutes=5))
    approved = await decide(taxcredit, created["id"], "officer-kim")
    assert approved.status_code == 200, approved.text
    certified = await wait_for_status(taxcredit, created["id"], "certified")
    # recorded in the certificate's own transaction, not when its event comes back
    [grant] = await granted_by(taxcredit, "taxcredit")
    assert grant["application_id"] == created["id"]
    assert grant["cost_reference"] == "COST-OSONG-PLANT"
    assert grant["granted"] == certified["certificate"]["amount"] == 35_000_000
    assert (grant["firm_id"], grant["year"]) == (FIRM_ID, 2026)

    # a voucher for the same cost, issued before the credit was certified, arrives late
    voucher = voucher_issued("COST-OSONG-PLANT", at=START - timedelta(hours=1))
    await publish(kafka_bootstrap, programme_topic(taxcredit, "voucher"), [voucher])
    await until(lambda: granted_by(taxcredit, "voucher"))

    async def conflicts() -> list[dict[str, Any]]:
        stored = await taxcredit.service.store.read_all(limit=10_000)
        return [e.envelope for e in stored if e.envelope["type"] == "support.conflict.detected"]

    [conflict] = await until(conflicts)
    payload = conflict["payload"]
    assert payload["kind"] == "duplicate_support"
    assert payload["detected_by"] == "taxcredit"
    assert payload["cost_reference"] == "COST-OSONG-PLANT"
    assert [a["programme"] for a in payload["applications"]] == ["voucher", "taxcredit"]
    assert conflict["actor"] == {"sub": "taxcredit-support-detector", "role": "system"}
