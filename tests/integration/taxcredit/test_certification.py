"""Tax-credit certification through the service's API, on PostgreSQL and SQLite with the real
broker: worked cases to the won, pinned rate tables, four eyes, duplicate claims, clawback."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest

from services.taxcredit.domain.decider import SubmitClaim
from services.taxcredit.domain.events import Programme
from services.taxcredit.entrypoints.schemas import CorporateVentureInvestmentIn
from shared.contracts import Actor, Role, verify_chain
from shared.eventstore import EventContext
from shared.kit.schemas import FirmIn
from tests.integration.harness import FIRM_ID, ServiceHarness, wait_for_status
from tests.integration.taxcredit.conftest import decide, mna, strategic, submit, venture

# Each figure is worked out by hand from the default table (2023-1: large and medium 15 %,
# SME 25 %, 10 % of the increase over the mean of the previous years, M&A 10 %, venture
# 5 %), floored to the won once at the end.
WORKED_CASES: list[tuple[str, dict[str, Any], int]] = [
    # 0.15 × 1,000,000,000 + 0.10 × (1,000,000,000 − 0) = 150,000,000 + 100,000,000
    ("large, no history", strategic(1_000_000_000, size="large"), 250_000_000),
    # 0.15 × 800,000,000 + 0.10 × (800,000,000 − 600,000,000) = 120,000,000 + 20,000,000
    ("medium, one year", strategic(800_000_000, [600_000_000], size="medium"), 140_000_000),
    # 0.25 × 900,000,000 + 0.10 × (900,000,000 − 600,000,000) = 225,000,000 + 30,000,000
    ("sme, two years", strategic(900_000_000, [700_000_000, 500_000_000]), 255_000_000),
    # 0.25 × 400,000,000 + 0.10 × (400,000,000 − 200,000,000) = 100,000,000 + 20,000,000
    (
        "sme, three years",
        strategic(400_000_000, [300_000_000, 200_000_000, 100_000_000]),
        120_000_000,
    ),
    # falling: the mean 175,000,000 is above 100,000,000, so only 0.25 × 100,000,000
    ("sme, falling history", strategic(100_000_000, [150_000_000, 200_000_000]), 25_000_000),
    # flat: 0.15 × 500,000,000 + 0.10 × 0
    ("large, flat history", strategic(500_000_000, [500_000_000], size="large"), 75_000_000),
    # 0.25 × 103 + 0.10 × (103 − 98) = 25.75 + 0.5 = 26.25 -> 26 (floored apart: 25 + 0 = 25)
    ("sme, rounding once at the end", strategic(103, [98]), 26),
    # 0.15 × 333 + 0.10 × 333 = 49.95 + 33.3 = 83.25 -> 83
    ("medium, fractions of a won", strategic(333, size="medium"), 83),
    # mean (1,000 + 1,000 + 1) / 3 = 667; 0.15 × 1,000 + 0.10 × 333 = 150 + 33.3 -> 183
    ("large, mean of three", strategic(1_000, [1_000, 1_000, 1], size="large"), 183),
    # mean 3,000,000,002 / 3 = 1,000,000,000.67; 0.25 × 1,000,000,001 = 250,000,000.25;
    # 0.10 × 0.33 = 0.03 -> 250,000,000.28 -> 250,000,000
    (
        "sme, a mean that is no finite decimal",
        strategic(1_000_000_001, [1_000_000_000, 1_000_000_000, 1_000_000_002]),
        250_000_000,
    ),
    # 0.10 × 1,234,567,891 = 123,456,789.1 -> 123,456,789
    ("M&A technology value", mna(1_234_567_891), 123_456_789),
    # 0.10 × 15 = 1.5 -> 1
    ("M&A, a small deal", mna(15, reference="DEAL-2"), 1),
    # 0.05 × 987,654,321 = 49,382,716.05 -> 49,382,716
    ("venture investment", venture(987_654_321), 49_382_716),
    # 0.05 × 12,345 = 617.25 -> 617
    ("venture investment, small", venture(12_345, reference="INV-2"), 617),
]


def redo(trace: list[dict[str, Any]]) -> int:
    """The trace's last step, read as an exact number: what the credit is, by hand."""
    number = Fraction(trace[-1]["value"])
    assert number.denominator == 1, trace[-1]
    return int(number)


async def test_worked_cases_equal_hand_computation_and_their_traces_reproduce(
    taxcredit: ServiceHarness,
) -> None:
    created = []
    for n, (_name, body, _) in enumerate(WORKED_CASES):
        body = {**body}
        reference_field = next(k for k in body if k.endswith("_reference"))
        body[reference_field] = f"{body[reference_field]}-{n}"
        created.append(await submit(taxcredit, body, key=f"case-{n}"))
    for (name, _, expected), application in zip(WORKED_CASES, created, strict=True):
        verified = await wait_for_status(taxcredit, application["id"], "verified")
        credit = verified["credit"]
        assert credit["amount"] == expected, name
        assert credit["table_version"] == "2023-1", name
        assert redo(credit["trace"]) == expected, name
        steps = {step["step"]: step for step in credit["trace"]}
        if "base_credit" in steps:  # the base step multiplies out from its own inputs
            base = steps["base_credit"]
            rate, amount = Fraction(base["inputs"]["base_rate"]), base["inputs"]["current_year"]
            assert Fraction(base["value"]) == rate * amount, name
            total = steps["credit_before_rounding"]["inputs"]
            assert Fraction(total["base_credit"]) + Fraction(total["incremental_credit"]) == (
                Fraction(steps["credit_before_rounding"]["value"])
            ), name


async def test_a_later_table_never_changes_a_verified_application_and_the_next_gets_it(
    taxcredit: ServiceHarness,
) -> None:
    first = await submit(taxcredit, strategic(100_000_000, reference="FAC-A"), key="a")
    before = await wait_for_status(taxcredit, first["id"], "verified")
    # 0.25 × 100,000,000 + 0.10 × 100,000,000
    assert before["credit"]["amount"] == 35_000_000
    assert before["credit"]["table_version"] == "2023-1"

    taxcredit.clock.advance(timedelta(minutes=5))
    published = await taxcredit.client.post(
        "/v1/rate-tables",
        json={
            "version": "2026-2",
            "valid_from": "2026-01-01",
            "assumptions": ["an SME rate raised to 30 % for 2026"],
            "strategic_investment": {
                "base_rate": {"large": "0.15", "medium": "0.15", "sme": "0.30"},
                "incremental_rate": "0.10",
            },
            "mna_technology_value": {"rate": "0.10"},
            "corporate_venture_investment": {"rate": "0.05"},
            "four_eyes_threshold": 500_000_000,
        },
        headers=taxcredit.ministry(),
    )
    assert published.status_code == 201, published.text
    assert published.json()["strategic_investment"]["base_rate"]["sme"] == "0.30"

    taxcredit.clock.advance(timedelta(minutes=5))
    second = await submit(taxcredit, strategic(100_000_000, reference="FAC-B"), key="b")
    after = await wait_for_status(taxcredit, second["id"], "verified")
    # 0.30 × 100,000,000 + 0.10 × 100,000,000
    assert after["credit"]["amount"] == 40_000_000
    assert after["credit"]["table_version"] == "2026-2"

    still = await taxcredit.client.get(
        f"/v1/applications/{first['id']}", headers=taxcredit.officer()
    )
    assert still.json()["credit"] == before["credit"]
    events = await taxcredit.client.get(
        f"/v1/applications/{first['id']}/events", headers=taxcredit.officer()
    )
    [verified] = [e for e in events.json() if e["type"] == "taxcredit.application.verified"]
    assert verified["payload"]["credit"]["table_version"] == "2023-1"
    assert verified["payload"]["facts"]["as_of"] == "2026-11-25"

    listed = await taxcredit.client.get("/v1/rate-tables", headers=taxcredit.auth_auditor())
    assert [t["version"] for t in listed.json()] == ["2023-1", "2026-2"]


async def test_rate_tables_are_published_once_by_ministries_only(
    taxcredit: ServiceHarness,
) -> None:
    listed = await taxcredit.client.get("/v1/rate-tables", headers=taxcredit.officer())
    [default] = listed.json()
    assert default["version"] == "2023-1"
    assert any("assumption" in a.lower() for a in default["assumptions"])
    assert default["corporate_venture_investment"] == {"rate": "0.05"}
    table = {
        k: default[k]
        for k in (
            "version",
            "valid_from",
            "assumptions",
            "strategic_investment",
            "mna_technology_value",
            "corporate_venture_investment",
            "four_eyes_threshold",
        )
    }
    again = await taxcredit.client.post("/v1/rate-tables", json=table, headers=taxcredit.ministry())
    assert again.status_code == 409
    officer = await taxcredit.client.post(
        "/v1/rate-tables", json={**table, "version": "2026-9"}, headers=taxcredit.officer()
    )
    assert officer.status_code == 403
    bad_rate = {**table, "version": "2026-9", "mna_technology_value": {"rate": "1.5"}}
    refused = await taxcredit.client.post(
        "/v1/rate-tables", json=bad_rate, headers=taxcredit.ministry()
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"].startswith("mna_technology_value.rate")
    over_one = {
        **table,
        "version": "2026-9",
        "strategic_investment": {
            "base_rate": {"large": "0.15", "medium": "0.15", "sme": "0.95"},
            "incremental_rate": "0.10",
        },
    }
    for body in (over_one, {**table, "version": "2026-9", "four_eyes_threshold": 2**60}):
        response = await taxcredit.client.post(
            "/v1/rate-tables", json=body, headers=taxcredit.ministry()
        )
        assert response.status_code == 422, response.text
    listed = await taxcredit.client.get("/v1/rate-tables", headers=taxcredit.officer())
    assert [t["version"] for t in listed.json()] == ["2023-1"]


async def test_four_eyes_at_the_threshold_then_the_certificate(taxcredit: ServiceHarness) -> None:
    # 0.15 × 2,000,000,000 + 0.10 × 2,000,000,000 = 500,000,000: exactly the threshold
    created = await submit(taxcredit, strategic(2_000_000_000, size="large"), key="big")
    await wait_for_status(taxcredit, created["id"], "verified")
    first = await decide(taxcredit, created["id"], "officer-kim")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "verified"
    assert [a["officer"] for a in first.json()["approvals"]] == ["officer-kim"]
    same = await decide(taxcredit, created["id"], "officer-kim")
    assert same.status_code == 409
    second = await decide(taxcredit, created["id"], "officer-park")
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "approved"
    certified = await wait_for_status(taxcredit, created["id"], "certified")
    certificate = certified["certificate"]
    assert certificate["amount"] == 500_000_000 and certificate["status"] == "valid"
    assert certificate["number"].startswith("TC-2026-")
    found = await taxcredit.client.get(
        f"/v1/certificates/{certificate['number']}", headers=taxcredit.auth_auditor()
    )
    assert found.status_code == 200
    view = found.json()
    assert view["application_id"] == created["id"] and view["firm_id"] == FIRM_ID
    assert view["tax_year"] == 2026 and view["programme"] == "strategic_investment"
    assert view["amount"] == 500_000_000 and view["status"] == "valid"
    events = await taxcredit.client.get(
        f"/v1/applications/{created['id']}/events", headers=taxcredit.firm()
    )
    [issued] = [e for e in events.json() if e["type"] == "taxcredit.certificate.issued"]
    assert view["event_hash"] == issued["hash"]
    assert issued["actor"] == {"sub": "taxcredit-certificates", "role": "system"}
    missing = await taxcredit.client.get("/v1/certificates/TC-0-NONE", headers=taxcredit.firm())
    assert missing.status_code == 404


async def test_below_the_threshold_one_officer_approves(taxcredit: ServiceHarness) -> None:
    created = await submit(taxcredit, strategic(100_000_000), key="small")
    await wait_for_status(taxcredit, created["id"], "verified")
    response = await decide(taxcredit, created["id"], "officer-kim")
    assert response.json()["status"] == "approved"
    own = await taxcredit.client.post(
        f"/v1/applications/{created['id']}/decisions",
        json={"decision": "approve"},
        headers=taxcredit.auth(Role.OFFICER, "ceo"),
    )
    assert own.status_code == 409  # approved already (and the submitter could not have)


async def test_a_duplicate_facility_reference_is_rejected_with_its_reason(
    taxcredit: ServiceHarness,
) -> None:
    first = await submit(taxcredit, strategic(100_000_000, reference="FAC-SAME"), key="one")
    await wait_for_status(taxcredit, first["id"], "verified")
    second = await submit(taxcredit, strategic(90_000_000, reference="FAC-SAME"), key="two")
    rejected = await wait_for_status(taxcredit, second["id"], "rejected")
    assert [r["code"] for r in rejected["rejection_reasons"]] == ["duplicate_claim"]
    assert first["id"] in rejected["rejection_reasons"][0]["message"]
    rival = taxcredit.firm(firm_id="987-65-43210", sub="rival")
    response = await taxcredit.client.post(
        "/v1/applications",
        json=strategic(80_000_000, reference="FAC-SAME", firm_id="987-65-43210"),
        headers={**rival, "Idempotency-Key": "three"},
    )
    theirs = await wait_for_status(taxcredit, response.json()["id"], "rejected")
    assert [r["code"] for r in theirs["rejection_reasons"]] == ["duplicate_claim"]
    assert first["id"] not in theirs["rejection_reasons"][0]["message"]  # not theirs to know
    path_of_a_table = await taxcredit.client.post(
        "/v1/applications/rate-table:2023-1/clawback",
        json={"reason": "x"},
        headers=taxcredit.officer(),
    )
    assert path_of_a_table.status_code == 404


async def test_rules_reject_with_machine_readable_codes(taxcredit: ServiceHarness) -> None:
    cases = {
        "technology_not_listed": strategic(1_000, technology="perpetual-motion", reference="R1"),
        "no_rate_table": strategic(1_000, tax_year=2019, reference="R2"),
        "not_technology_innovative_sme": mna(1_000, reference="R3", size="large"),
        "inconsistent_figures": strategic(
            1_000, [1, 2, 3], reference="R4", founded_on="2025-01-01"
        ),
    }
    created = {code: await submit(taxcredit, body, key=code) for code, body in cases.items()}
    for code, application in created.items():
        rejected = await wait_for_status(taxcredit, application["id"], "rejected")
        assert code in [r["code"] for r in rejected["rejection_reasons"]], rejected


@pytest.mark.parametrize(
    "field, body",
    [
        ("investment.current_year", strategic(-5)),
        ("investment.previous_years", strategic(1_000, [1, 2, 3, 4])),
        ("investment.previous_years.0", strategic(1_000, [-1])),
        ("technology_value", mna(-1)),
        ("amount_invested", venture(0)),
        ("programme", {**venture(10), "programme": "free_money"}),
        ("firm.name", strategic(1_000, name="Osong\x00")),
        ("cost_reference", {**strategic(1_000), "cost_reference": "COST\x00-1"}),
        ("cost_reference", {**venture(10), "cost_reference": ""}),
        ("cost_reference", {**mna(10), "cost_reference": "c" * 201}),
    ],
)
async def test_schema_errors_are_422_naming_the_field_and_append_nothing(
    taxcredit: ServiceHarness, field: str, body: dict[str, Any]
) -> None:
    before = len(await taxcredit.service.store.read_all(limit=10_000))
    response = await taxcredit.client.post(
        "/v1/applications", json=body, headers={**taxcredit.firm(), "Idempotency-Key": "bad"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]], response.json()
    assert len(await taxcredit.service.store.read_all(limit=10_000)) == before


async def test_clawback_reduces_then_revokes_and_the_chain_verifies(
    taxcredit: ServiceHarness,
) -> None:
    created = await submit(taxcredit, strategic(100_000_000), key="claw")
    await wait_for_status(taxcredit, created["id"], "verified")
    await decide(taxcredit, created["id"], "officer-kim")
    certified = await wait_for_status(taxcredit, created["id"], "certified")
    number = certified["certificate"]["number"]
    path = f"/v1/applications/{created['id']}/clawback"
    too_much = await taxcredit.client.post(
        path, json={"reason": "audit", "amount": 35_000_001}, headers=taxcredit.officer()
    )
    assert too_much.status_code == 422
    assert too_much.json()["errors"][0]["field"] == "amount"
    firm_tries = await taxcredit.client.post(
        path, json={"reason": "mine"}, headers=taxcredit.firm()
    )
    assert firm_tries.status_code == 403
    part = await taxcredit.client.post(
        path,
        json={"reason": "facility partly idle", "amount": 5_000_000},
        headers=taxcredit.officer(),
    )
    assert part.status_code == 200, part.text
    assert part.json()["status"] == "certified"
    assert part.json()["certificate"]["amount"] == 30_000_000
    view = await taxcredit.client.get(f"/v1/certificates/{number}", headers=taxcredit.firm())
    assert view.json()["amount"] == 30_000_000 and view.json()["status"] == "reduced"
    rest = await taxcredit.client.post(
        path, json={"reason": "facility sold"}, headers=taxcredit.officer()
    )
    assert rest.json()["status"] == "revoked"
    view = await taxcredit.client.get(f"/v1/certificates/{number}", headers=taxcredit.firm())
    assert view.json()["amount"] == 0 and view.json()["status"] == "revoked"
    again = await taxcredit.client.post(path, json={"reason": "x"}, headers=taxcredit.officer())
    assert again.status_code == 409
    chain = await taxcredit.client.get(
        f"/v1/applications/{created['id']}/events", headers=taxcredit.auth_auditor()
    )
    assert [e["type"] for e in chain.json()][-2:] == ["taxcredit.certificate.clawed_back"] * 2
    assert verify_chain(chain.json()).ok


async def test_a_firm_sees_only_its_own_claims_and_can_withdraw(taxcredit: ServiceHarness) -> None:
    created = await submit(taxcredit, strategic(1_000), key="mine")
    rival = taxcredit.firm(firm_id="987-65-43210", sub="rival")
    assert (
        await taxcredit.client.get(f"/v1/applications/{created['id']}", headers=rival)
    ).status_code == 404
    withdrawn = await taxcredit.client.post(
        f"/v1/applications/{created['id']}/withdrawal",
        json={"reason": "filed by mistake"},
        headers=taxcredit.firm(),
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"


async def test_technologies_and_the_asyncapi_document(taxcredit: ServiceHarness) -> None:
    technologies = await taxcredit.client.get("/v1/technologies", headers=taxcredit.firm())
    ids = {t["id"]: t for t in technologies.json()}
    assert technologies.headers["Catalogue-Version"] == "2026-1"
    assert ids["biopharma-animal-cell-culture"]["group"] == "advanced_bio"
    assert "biopharma-purification" in ids
    document = (await taxcredit.client.get("/asyncapi.json")).json()
    assert document["asyncapi"] == "3.0.0"
    messages = document["components"]["messages"]
    assert "taxcredit_certificate_issued" in messages
    openapi = (await taxcredit.client.get("/openapi.json")).json()
    assert {"StrategicInvestmentIn", "MnaTechnologyValueIn", "CorporateVentureInvestmentIn"} <= set(
        openapi["components"]["schemas"]
    )
    assert "/v1/certificates/{number}.pdf" in openapi["paths"]


async def test_a_consumer_opens_a_venture_claim_once_however_often_it_is_told(
    taxcredit: ServiceHarness,
) -> None:
    """What the fund service's co-investments will do: open a claim for the investor."""
    body = venture(2_000_000_000, reference="FUND-COINVEST-7", firm_id="220-81-12345")
    command = SubmitClaim(
        programme=Programme.CORPORATE_VENTURE_INVESTMENT,
        tax_year=2026,
        firm=FirmIn.model_validate(body["firm"]).to_domain(),
        inputs=CorporateVentureInvestmentIn.model_validate(body).inputs(),
    )
    context = EventContext(
        actor=Actor(sub="taxcredit-fund-coinvestments", role=Role.SYSTEM),
        correlation_id="fund-event-1",
        firm_id="220-81-12345",
    )
    service = taxcredit.service
    for _ in range(2):  # the fund event delivered twice
        async with service.store.transaction() as uow:
            outcome = await service.open_claim(uow, "fund", command, context)
        taxcredit.app.state.runtime.wake_relay()
    verified = await wait_for_status(taxcredit, outcome.application.id, "verified")
    assert verified["credit"]["amount"] == 100_000_000  # 0.05 × 2,000,000,000
    assert verified["firm_id"] == "220-81-12345"
    officers = await taxcredit.client.get("/v1/applications", headers=taxcredit.officer())
    assert [a["id"] for a in officers.json()["items"]] == [outcome.application.id]
