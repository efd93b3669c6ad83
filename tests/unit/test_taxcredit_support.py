"""Taxcredit's part of the cross-programme support limits: the cost a claim covers, the
checks at verification, the grant its certificate records. Pure: no I/O."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from services.taxcredit.domain.decider import SUPPORT_CHECKS, checks_for
from services.taxcredit.domain.events import (
    EVENTS,
    ClaimSubmitted,
    ClaimVerified,
    E,
    Programme,
    VerificationFacts,
)
from services.taxcredit.domain.model import Status, evolve
from services.taxcredit.entrypoints.schemas import (
    CorporateVentureInvestmentIn,
    MnaTechnologyValueIn,
    StrategicInvestmentIn,
)
from shared.asyncapi import asyncapi_document
from shared.contracts import Actor, NewEvent, Role
from shared.domain.support import GrantRef, SupportConflictDetected, grant_of
from tests.unit.streams import sealed
from tests.unit.taxcredit_builders import (
    COMBINED_CAP,
    FIRM_ID,
    TAX_YEAR,
    TaxcreditStream,
    approved,
    issue,
    submit_mna,
    submit_strategic,
    submit_venture,
    submitted,
    support,
    types,
    verify,
)

STRATEGIC_CREDIT = 120_000_000  # the default strategic claim's credit (see the decider tests)
VENTURE_CREDIT = 49_382_716  # floor(0.05 × 987,654,321)


def codes(stream: TaxcreditStream) -> list[str]:
    return [r.code for r in stream.app.rejection_reasons]


# --- the cost a claim covers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        submit_strategic(cost_reference="COST-PLANT-7"),
        submit_mna(cost_reference="COST-PLANT-7"),
        submit_venture(cost_reference="COST-PLANT-7"),
    ],
    ids=["strategic", "mna", "venture"],
)
def test_a_submitted_cost_reference_is_the_cost_the_claim_covers(command: Any):
    stream = TaxcreditStream()

    [event] = stream.when(command)

    assert event.payload["cost_reference"] == "COST-PLANT-7"
    assert stream.app.cost_reference == "COST-PLANT-7"
    assert stream.app.claim_reference != "COST-PLANT-7"  # its own reference is kept apart


def test_without_a_cost_reference_the_claim_reference_is_the_cost():
    stream = submitted(submit_strategic(reference="FAC-9"))

    assert stream.envelopes[0].payload["cost_reference"] is None
    assert stream.app.cost_reference == stream.app.claim_reference == "FAC-9"


def test_a_submission_from_before_cost_references_still_reads():
    new = submitted().envelopes[0].payload
    old_payload = {k: v for k, v in new.items() if k != "cost_reference"}
    old = sealed(NewEvent(type=E.SUBMITTED, payload=old_payload), Actor(sub="x", role=Role.FIRM))

    parsed = EVENTS.parse(old)
    state = evolve(None, old)

    assert isinstance(parsed, ClaimSubmitted) and parsed.cost_reference is None
    assert state.cost_reference == state.claim_reference == "FAC-2025-001"


def test_the_certificate_grants_the_submitted_cost():
    stream = approved(submit_strategic(cost_reference="COST-PLANT-7"))

    [event] = stream.when(issue())

    assert event.payload["cost_reference"] == "COST-PLANT-7"
    grant = grant_of(stream.envelopes[-1])
    assert grant is not None
    assert (grant.programme, grant.firm_id, grant.year) == ("taxcredit", FIRM_ID, TAX_YEAR)
    assert (grant.amount, grant.cost_reference) == (STRATEGIC_CREDIT, "COST-PLANT-7")


@pytest.mark.parametrize(
    ("body_type", "body"),
    [
        (
            StrategicInvestmentIn,
            {
                "programme": "strategic_investment",
                "technology": "biopharma-purification",
                "investment": {"current_year": 10},
                "facility_reference": "FAC-1",
            },
        ),
        (
            MnaTechnologyValueIn,
            {
                "programme": "mna_technology_value",
                "technology": "biopharma-purification",
                "target_firm_id": "555-55-55555",
                "technology_value": 10,
                "deal_reference": "DEAL-1",
            },
        ),
        (
            CorporateVentureInvestmentIn,
            {
                "programme": "corporate_venture_investment",
                "investee": "fund-x",
                "amount_invested": 10,
                "investment_reference": "INV-1",
            },
        ),
    ],
    ids=["strategic", "mna", "venture"],
)
def test_every_claim_body_takes_an_optional_cost_reference(body_type: Any, body: dict):
    firm = {
        "firm_id": FIRM_ID,
        "name": "Osong Biologics",
        "founded_on": "2015-04-01",
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
    }
    base = {**body, "tax_year": 2026, "firm": firm}

    assert body_type.model_validate(base).cost_reference is None
    assert body_type.model_validate({**base, "cost_reference": " C-1 "}).cost_reference == "C-1"
    assert body_type.model_validate({**base, "cost_reference": "c" * 200}).cost_reference
    for bad in ("", "   ", "c" * 201, "C\x00-1", 7):
        with pytest.raises(ValidationError) as refused:
            body_type.model_validate({**base, "cost_reference": bad})
        assert refused.value.errors()[0]["loc"] == ("cost_reference",), bad


# --- verification -------------------------------------------------------------------------------


def test_with_nothing_granted_elsewhere_the_claim_is_verified_and_the_facts_recorded():
    stream = submitted()

    [event] = stream.when(verify(support=support()))

    assert event.type == E.VERIFIED
    facts = event.payload["facts"]
    assert facts["support"] == {
        "policy_version": "2026-1",
        "year": TAX_YEAR,
        "cost_reference": "FAC-2025-001",
        "supported_elsewhere": None,
        "combined_support": 0,
        "combined_yearly_cap": COMBINED_CAP,
    }
    assert facts["checks"] == list(checks_for(Programme.STRATEGIC_INVESTMENT))
    assert tuple(facts["checks"][-2:]) == SUPPORT_CHECKS
    assert stream.app.facts is not None and stream.app.facts.support == support()


def test_a_cost_another_programme_granted_is_duplicate_support():
    stream = submitted(submit_strategic(cost_reference="COST-PLANT-7"))

    [event] = stream.when(
        verify(support=support("COST-PLANT-7", supported_elsewhere="voucher application v-1"))
    )

    assert event.type == E.REJECTED
    assert codes(stream) == ["duplicate_support"]
    [reason] = stream.app.rejection_reasons
    assert "COST-PLANT-7" in reason.message and "voucher application v-1" in reason.message
    assert event.payload["facts"]["support"]["supported_elsewhere"] == "voucher application v-1"


def test_the_combined_cap_counts_the_credit_computed():
    at_the_cap = submitted()
    at_the_cap.when(verify(support=support(combined_support=COMBINED_CAP - STRATEGIC_CREDIT)))
    over = submitted()
    over.when(verify(support=support(combined_support=COMBINED_CAP - STRATEGIC_CREDIT + 1)))

    assert at_the_cap.app.status is Status.VERIFIED
    assert over.app.status is Status.REJECTED
    assert codes(over) == ["combined_cap_exceeded"]
    message = over.app.rejection_reasons[0].message
    assert f"{STRATEGIC_CREDIT} won more" in message and str(TAX_YEAR) in message


def test_support_failures_come_after_the_claims_own_and_are_reported_together():
    stream = submitted(submit_venture(investee=FIRM_ID, cost_reference="COST-1"))

    stream.when(
        verify(
            claimed_by="app-0",
            support=support(
                "COST-1", supported_elsewhere="fund application f-1", combined_support=COMBINED_CAP
            ),
        )
    )

    assert codes(stream) == [
        "inconsistent_figures",
        "duplicate_claim",
        "duplicate_support",
        "combined_cap_exceeded",
    ]


def test_without_a_rate_table_there_is_no_amount_for_the_cap_but_the_cost_still_counts():
    stream = submitted()

    stream.when(
        verify(
            tables=(),
            support=support(supported_elsewhere="fund application f-1", combined_support=2**52),
        )
    )

    assert codes(stream) == ["no_rate_table", "duplicate_support"]


def test_a_verified_event_from_before_the_support_check_still_reads():
    stream = submitted()
    [event] = stream.when(verify())
    payload = {**event.payload, "facts": dict(event.payload["facts"])}
    del payload["facts"]["support"]

    parsed = ClaimVerified.model_validate(payload)

    assert parsed.facts.support is None
    assert VerificationFacts.model_validate(payload["facts"]).checks == checks_for(
        Programme.STRATEGIC_INVESTMENT, support=False
    )


# --- the conflict event -----------------------------------------------------------------------


def conflict() -> SupportConflictDetected:
    moment = sealed(NewEvent(type="x.y", payload={}), Actor(sub="s", role=Role.SYSTEM))
    refs = tuple(
        GrantRef(
            programme=programme,
            application_id=f"{programme}-1",
            amount=1_000,
            event_id=f"e-{programme}",
            granted_at=moment.occurred_at,
        )
        for programme in ("voucher", "taxcredit")
    )
    return SupportConflictDetected(
        kind="duplicate_support",
        firm_id=FIRM_ID,
        year=TAX_YEAR,
        cost_reference="COST-1",
        combined_yearly_cap=COMBINED_CAP,
        applications=refs,
        detected_by="taxcredit",
    )


def test_support_conflicts_are_registered_and_in_the_asyncapi_document():
    envelope = sealed(conflict().event(), Actor(sub="taxcredit-support-detector", role=Role.SYSTEM))

    assert EVENTS.parse(envelope) == conflict()
    assert E.SUPPORT_CONFLICT == "support.conflict.detected" in EVENTS.types
    document = asyncapi_document(
        EVENTS, service="taxcredit", topic="taxcredit.events", title="t", description="d"
    )
    assert "support_conflict_detected" in document["components"]["messages"]


def test_a_support_conflict_is_not_an_application_event():
    envelope = sealed(conflict().event(), Actor(sub="taxcredit-support-detector", role=Role.SYSTEM))

    with pytest.raises(ValueError, match="support-conflict aggregate"):
        evolve(None, envelope)
    with pytest.raises(ValueError, match="support-conflict aggregate"):
        evolve(submitted().app, envelope)


def test_the_grant_year_is_the_tax_year_not_the_year_of_issue():
    stream = approved(submit_strategic(tax_year=2025))

    events = stream.when(issue(issued_on=date(2026, 3, 9)))

    assert types(events) == [E.CERTIFICATE_ISSUED]
    grant = grant_of(stream.envelopes[-1])
    assert grant is not None and grant.year == 2025
