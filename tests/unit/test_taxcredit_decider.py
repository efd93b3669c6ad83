"""The taxcredit decider, told as given events / when command / then events. Pure: no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.taxcredit.domain.decider import (
    DECIDER,
    SubmitClaim,
    checks_for,
    decide,
)
from services.taxcredit.domain.events import (
    EVENTS,
    ClaimSubmitted,
    E,
    Programme,
    RateTablePublished,
    StrategicInvestmentClaim,
    rate_table_aggregate,
)
from services.taxcredit.domain.model import Status, evolve, fold
from services.taxcredit.domain.rates import (
    mna_technology_credit,
    strategic_investment_credit,
    venture_investment_credit,
)
from shared.contracts import GENESIS_HASH, Envelope, NewEvent, verify_chain
from shared.domain import FirmSize, InvalidTransition, SameOfficer, Unprocessable
from tests.unit.streams import sealed
from tests.unit.taxcredit_builders import (
    CATALOGUE_VERSION,
    CELL_CULTURE,
    CERTIFIER,
    DEFAULT_PUBLISHED,
    DEFAULT_TABLE,
    FIRM_ID,
    FIRM_USER,
    OFFICER_KIM,
    OFFICER_LEE,
    OFFICER_PARK,
    PURIFICATION,
    T0,
    TAX_YEAR,
    THRESHOLD,
    VERIFIER,
    TaxcreditStream,
    a_firm,
    a_table,
    approve,
    approved,
    certified,
    claw_back,
    issue,
    published,
    reject,
    submit_mna,
    submit_strategic,
    submit_venture,
    submitted,
    types,
    verified,
    verify,
    withdraw,
)

SUBMITTED = E.SUBMITTED
VERIFIED = E.VERIFIED
REJECTED = E.REJECTED
APPROVAL_RECORDED = E.APPROVAL_RECORDED
APPROVED = E.APPROVED
WITHDRAWN = E.WITHDRAWN
ISSUED = E.CERTIFICATE_ISSUED
CLAWED_BACK = E.CERTIFICATE_CLAWED_BACK

# Credits of the default claims under table 2023-1, worked out by hand:
STRATEGIC_CREDIT = 120_000_000  # SME: 0.25 × 400M + 0.10 × (400M − (300M + 200M + 100M) / 3)
MNA_CREDIT = 123_456_789  # floor(0.10 × 1,234,567,891)
VENTURE_CREDIT = 49_382_716  # floor(0.05 × 987,654,321)

# At and around the four-eyes threshold (500,000,000 won):
AT_THRESHOLD = submit_strategic(2_000_000_000, (2_000_000_000,))  # 0.25 × 2G + 0 = 500,000,000
JUST_BELOW = submit_mna(4_999_999_990)  # floor(0.10 × 4,999,999,990) = 499,999,999


def reason_codes(stream: TaxcreditStream) -> list[str]:
    return [r.code for r in stream.app.rejection_reasons]


# --- submission -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "reference"),
    [
        (submit_strategic(), "FAC-2025-001"),
        (submit_mna(), "DEAL-2025-007"),
        (submit_venture(), "INV-2025-042"),
    ],
    ids=["strategic", "mna", "venture"],
)
def test_submission_records_the_claim_the_firm_and_the_submitter(
    command: SubmitClaim, reference: str
):
    stream = TaxcreditStream(token_firm_id=FIRM_ID)

    events = stream.when(command)

    assert types(events) == [SUBMITTED]
    assert events[0].payload["programme"] == command.programme.value
    assert events[0].payload["claim"]["programme"] == command.programme.value
    app = stream.app
    assert app.status == Status.SUBMITTED == "submitted"
    assert app.programme is command.programme
    assert app.tax_year == TAX_YEAR
    assert app.firm_id == FIRM_ID
    assert app.firm == command.firm
    assert app.claim == command.inputs
    assert app.claim_reference == reference
    assert app.submitted_by == FIRM_USER.sub
    assert app.created_at == app.updated_at == T0 + timedelta(minutes=1)
    assert app.version == 1
    assert app.credit is None and app.certificate is None


def test_submitting_the_same_application_twice_is_refused():
    stream = submitted()

    with pytest.raises(InvalidTransition):
        stream.when(submit_strategic())


def test_a_claim_for_another_programme_than_it_names_is_refused():
    command = submit_venture()._replace(programme=Programme.STRATEGIC_INVESTMENT)

    with pytest.raises(Unprocessable) as refused:
        decide(command, None)

    assert refused.value.extensions["field"] == "programme"


# --- verification -----------------------------------------------------------------------------


def test_a_sound_claim_is_verified_with_its_credit_and_the_facts_it_rests_on():
    stream = submitted()

    events = stream.when(verify())

    assert types(events) == [VERIFIED]
    payload = events[0].payload
    expected = strategic_investment_credit(
        DEFAULT_TABLE,
        size=FirmSize.SME,
        current_year=400_000_000,
        previous_years=(300_000_000, 200_000_000, 100_000_000),
    )
    assert payload["credit"] == expected.to_json()
    assert payload["credit"]["amount"] == STRATEGIC_CREDIT
    assert payload["credit"]["table_version"] == "2023-1"
    assert payload["four_eyes_threshold"] == THRESHOLD == 500_000_000
    assert payload["facts"] == {
        "as_of": "2026-03-02",
        "table_version": "2023-1",
        "table_valid_from": "2023-01-01",
        "catalogue_version": CATALOGUE_VERSION,
        "technology": CELL_CULTURE,
        "claim_reference": "FAC-2025-001",
        "checks": list(checks_for(Programme.STRATEGIC_INVESTMENT, support=False)),
        "support": None,  # no support facts given: the limits are not checked
    }
    app = stream.app
    assert app.status == Status.VERIFIED == "verified"
    assert app.credit == expected
    assert app.four_eyes_threshold == THRESHOLD
    assert app.facts is not None and app.facts.table_version == "2023-1"
    assert app.rejection_reasons == ()


@pytest.mark.parametrize(
    ("command", "credit", "technology"),
    [
        (
            submit_mna(),
            mna_technology_credit(DEFAULT_TABLE, technology_value=1_234_567_891),
            PURIFICATION,
        ),
        (
            submit_venture(),
            venture_investment_credit(DEFAULT_TABLE, amount_invested=987_654_321),
            None,
        ),
    ],
    ids=["mna", "venture"],
)
def test_each_programme_is_verified_with_its_own_credit(
    command: SubmitClaim, credit: Any, technology: str | None
):
    stream = submitted(command)

    stream.when(verify())

    app = stream.app
    assert app.status == Status.VERIFIED
    assert app.credit == credit
    assert app.credit.amount == (MNA_CREDIT if technology else VENTURE_CREDIT)
    assert app.facts is not None
    assert app.facts.technology == technology
    assert app.facts.catalogue_version == (CATALOGUE_VERSION if technology else None)
    assert ("technology_listed" in app.facts.checks) == (technology is not None)


def test_checks_follow_the_programme():
    assert checks_for(Programme.MNA_TECHNOLOGY_VALUE) == (
        "firm_id_format",
        "firm_id_matches_token",
        "figures_consistent",
        "acquirer_technology_innovative_sme",
        "technology_listed",
        "claim_reference_unique",
        "rate_table_in_force",
        "no_duplicate_support",
        "combined_cap",
    )
    assert (
        checks_for(Programme.MNA_TECHNOLOGY_VALUE, support=False)
        == checks_for(Programme.MNA_TECHNOLOGY_VALUE)[:-2]
    )
    assert "acquirer_technology_innovative_sme" not in checks_for(Programme.STRATEGIC_INVESTMENT)
    assert "technology_listed" not in checks_for(Programme.CORPORATE_VENTURE_INVESTMENT)


REJECTION_CASES: list[tuple[str, str, SubmitClaim, dict[str, Any], str]] = [
    # id, code, submission, verify overrides, token firm_id
    (
        "firm-id-malformed",
        "firm_id_malformed",
        submit_strategic(firm_id="1234567890"),
        {},
        "1234567890",
    ),
    ("firm-id-mismatch", "firm_id_mismatch", submit_strategic(), {}, "999-99-99999"),
    (
        "technology-not-listed",
        "technology_not_listed",
        submit_strategic(technology="perpetual-motion"),
        {},
        FIRM_ID,
    ),
    (
        "mna-technology-not-listed",
        "technology_not_listed",
        submit_mna(technology="alchemy"),
        {},
        FIRM_ID,
    ),
    ("no-table-published", "no_rate_table", submit_strategic(), {"tables": ()}, FIRM_ID),
    (
        "tax-year-before-first-table",
        "no_rate_table",
        submit_strategic(tax_year=2022, previous_years=()),
        {},
        FIRM_ID,
    ),
    (
        "tax-year-after-submission",
        "inconsistent_figures",
        submit_strategic(tax_year=2027, previous_years=()),
        {},
        FIRM_ID,
    ),
    (
        "founded-after-tax-year",
        "inconsistent_figures",
        submit_strategic(previous_years=(), founded_on=date(2026, 1, 5)),
        {},
        FIRM_ID,
    ),
    (
        "history-before-founding",
        "inconsistent_figures",
        submit_strategic(founded_on=date(2023, 1, 1)),
        {},
        FIRM_ID,
    ),
    ("mna-target-is-itself", "inconsistent_figures", submit_mna(target=FIRM_ID), {}, FIRM_ID),
    (
        "venture-investee-is-itself",
        "inconsistent_figures",
        submit_venture(investee=FIRM_ID),
        {},
        FIRM_ID,
    ),
    (
        "mna-by-medium-firm",
        "not_technology_innovative_sme",
        submit_mna(size=FirmSize.MEDIUM),
        {},
        FIRM_ID,
    ),
    (
        "mna-by-uncertified-sme",
        "not_technology_innovative_sme",
        submit_mna(technology_innovative=False),
        {},
        FIRM_ID,
    ),
    ("duplicate-claim", "duplicate_claim", submit_strategic(), {"claimed_by": "app-0"}, FIRM_ID),
]


@pytest.mark.parametrize(
    ("code", "command", "verify_overrides", "token_firm_id"),
    [case[1:] for case in REJECTION_CASES],
    ids=[case[0] for case in REJECTION_CASES],
)
def test_every_rejection_reason_code(
    code: str, command: SubmitClaim, verify_overrides: dict[str, Any], token_firm_id: str
):
    stream = TaxcreditStream(token_firm_id=token_firm_id).given(command)

    events = stream.when(verify(**verify_overrides))

    assert types(events) == [REJECTED]
    payload = events[0].payload
    assert payload["stage"] == "verification"
    assert payload["officer"] is None
    [reason] = payload["reasons"]
    assert set(reason) == {"code", "message"}
    assert reason["code"] == code
    assert reason["message"]
    assert payload["facts"]["as_of"] == "2026-03-02"
    assert payload["facts"]["claim_reference"] == stream.app.claim_reference
    assert stream.app.status == Status.REJECTED == "rejected"
    assert reason_codes(stream) == [code]
    assert stream.app.credit is None


def test_a_firm_may_declare_history_back_to_the_year_it_was_founded_in():
    # three previous years of tax year 2025 reach back to 2022: founded on its last day is enough
    stream = submitted(submit_strategic(founded_on=date(2022, 12, 31)))

    stream.when(verify())

    assert stream.app.status == Status.VERIFIED


def test_a_claim_for_the_year_of_submission_is_consistent():
    stream = submitted(submit_strategic(tax_year=2026, previous_years=()))

    stream.when(verify())

    assert stream.app.status == Status.VERIFIED


def test_the_application_holding_its_own_reference_is_no_duplicate():
    stream = submitted()

    stream.when(verify(claimed_by=stream.application_id))

    assert stream.app.status == Status.VERIFIED


def test_every_failure_is_reported_together_in_reading_order():
    stream = TaxcreditStream(token_firm_id="999-99-99999").given(
        submit_mna(target=FIRM_ID, technology="alchemy", size=FirmSize.MEDIUM, tax_year=2022)
    )

    events = stream.when(verify(claimed_by="app-0"))

    assert reason_codes(stream) == [
        "firm_id_mismatch",
        "inconsistent_figures",
        "not_technology_innovative_sme",
        "technology_not_listed",
        "duplicate_claim",
        "no_rate_table",
    ]
    assert "itself" in stream.app.rejection_reasons[1].message
    assert events[0].payload["facts"]["table_version"] is None


def test_several_inconsistencies_share_one_reason_that_names_each():
    stream = submitted(submit_venture(investee=FIRM_ID, tax_year=2027, founded_on=date(2028, 1, 5)))

    stream.when(verify())

    [reason] = stream.app.rejection_reasons
    assert reason.code == "inconsistent_figures"
    assert "after the year of submission" in reason.message
    assert "founded on 2028-01-05, after tax year 2027" in reason.message
    assert "investee" in reason.message


def test_a_rejection_records_the_facts_it_was_made_on():
    stream = submitted(submit_strategic(technology="perpetual-motion"))

    [event] = stream.when(verify())

    assert event.payload["facts"] == {
        "as_of": "2026-03-02",
        "table_version": "2023-1",
        "table_valid_from": "2023-01-01",
        "catalogue_version": CATALOGUE_VERSION,
        "technology": "perpetual-motion",
        "claim_reference": "FAC-2025-001",
        "checks": list(checks_for(Programme.STRATEGIC_INVESTMENT, support=False)),
        "support": None,  # no support facts given: the limits are not checked
    }
    assert stream.app.facts is not None and stream.app.facts.technology == "perpetual-motion"


def test_without_a_table_the_facts_say_so():
    stream = submitted()

    [event] = stream.when(verify(tables=()))

    facts = event.payload["facts"]
    assert facts["table_version"] is None
    assert facts["table_valid_from"] is None
    assert facts["as_of"] == "2026-03-02"


@pytest.mark.parametrize(
    "build", [verified, approved, certified], ids=["verified", "approved", "certified"]
)
def test_only_a_submitted_claim_is_verified(build: Any):
    with pytest.raises(InvalidTransition) as refused:
        build().when(verify())

    assert "current_status" in refused.value.extensions


# --- pinning: the table in force at submission ------------------------------------------------

LATER_TABLE = published(
    a_table("2026-2", "2026-01-01", sme="0.30"),
    at=datetime(2026, 3, 5, tzinfo=UTC),  # three days after the submission
    sequence=2,
)


def test_a_table_published_after_submission_does_not_apply():
    stream = submitted().later(timedelta(days=10))  # the verifier lags behind

    [event] = stream.when(verify(tables=(DEFAULT_PUBLISHED, LATER_TABLE)))

    assert event.payload["credit"]["table_version"] == "2023-1"
    assert event.payload["credit"]["amount"] == STRATEGIC_CREDIT
    assert event.payload["facts"]["as_of"] == "2026-03-02"


def test_a_lagging_verifier_decides_what_a_prompt_one_decides():
    prompt = submitted()
    lagging = submitted().later(timedelta(days=30))

    [on_time] = prompt.when(verify(tables=(DEFAULT_PUBLISHED,)))
    [late] = lagging.when(verify(tables=(DEFAULT_PUBLISHED, LATER_TABLE)))

    assert late.payload == on_time.payload


def test_a_table_published_before_submission_applies_to_it():
    earlier = replace(LATER_TABLE, published_at=datetime(2026, 2, 1, tzinfo=UTC))
    stream = submitted()

    [event] = stream.when(verify(tables=(DEFAULT_PUBLISHED, earlier)))

    # 0.30 × 400,000,000 + 0.10 × 200,000,000 = 140,000,000
    assert event.payload["credit"]["amount"] == 140_000_000
    assert event.payload["facts"]["table_version"] == "2026-2"


def test_the_verified_event_pins_the_credit_whatever_tables_come_later():
    stream = verified().given(approve(OFFICER_KIM), issue())
    pinned = stream.app.credit

    replayed = fold(stream.envelopes)

    # the fold reads the credit from the verified event, never from the tables now published
    assert replayed is not None
    assert replayed.credit == pinned
    assert replayed.credit is not None and replayed.credit.table_version == "2023-1"
    assert replayed.certificate is not None
    assert replayed.certificate.original_amount == STRATEGIC_CREDIT


def test_a_rate_table_event_is_registered_but_belongs_to_its_own_aggregate():
    table_event = RateTablePublished.model_validate(DEFAULT_TABLE.to_json()).event()
    envelope = Envelope.seal(
        aggregate_id=rate_table_aggregate("2023-1"),
        aggregate_seq=1,
        event=table_event,
        occurred_at=T0,
        actor=VERIFIER,
        firm_id=None,
        correlation_id="corr-table",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )

    parsed = EVENTS.parse(envelope)

    assert isinstance(parsed, RateTablePublished)
    assert parsed.table == DEFAULT_TABLE
    assert table_event.payload == DEFAULT_TABLE.to_json()
    assert envelope.aggregate_id == "rate-table:2023-1"
    with pytest.raises(ValueError, match="rate-table aggregate"):
        evolve(submitted().app, envelope)


# --- officers' decisions and four eyes --------------------------------------------------------


def test_below_the_threshold_one_approval_approves_the_credit():
    stream = verified(JUST_BELOW)
    assert stream.app.credit is not None and stream.app.credit.amount == 499_999_999

    events = stream.when(approve(OFFICER_KIM, reason="deal documents in order"))

    assert types(events) == [APPROVED]
    assert events[0].payload == {
        "officer": OFFICER_KIM,
        "amount": 499_999_999,
        "reason": "deal documents in order",
    }
    app = stream.app
    assert app.status == Status.APPROVED == "approved"
    assert app.approved_amount == 499_999_999
    assert [(a.officer, a.amount) for a in app.approvals] == [(OFFICER_KIM, 499_999_999)]


def test_at_the_threshold_the_first_approval_is_only_recorded():
    stream = verified(AT_THRESHOLD)
    assert stream.app.credit is not None and stream.app.credit.amount == THRESHOLD

    events = stream.when(approve(OFFICER_KIM))

    assert types(events) == [APPROVAL_RECORDED]
    assert events[0].payload["amount"] == THRESHOLD
    assert stream.app.status == Status.VERIFIED
    assert [a.officer for a in stream.app.approvals] == [OFFICER_KIM]


def test_the_same_officer_cannot_give_the_second_approval():
    stream = verified(AT_THRESHOLD).given(approve(OFFICER_KIM))

    with pytest.raises(SameOfficer):
        stream.when(approve(OFFICER_KIM))

    assert stream.app.status == Status.VERIFIED
    assert len(stream.app.approvals) == 1


def test_a_second_officer_approves_at_the_threshold():
    stream = verified(AT_THRESHOLD).given(approve(OFFICER_KIM))

    events = stream.when(approve(OFFICER_LEE))

    assert types(events) == [APPROVED]
    assert events[0].payload["amount"] == THRESHOLD
    app = stream.app
    assert app.status == Status.APPROVED
    assert app.approved_amount == THRESHOLD
    assert [a.officer for a in app.approvals] == [OFFICER_KIM, OFFICER_LEE]


@pytest.mark.parametrize(
    "command", [approve(FIRM_USER.sub), reject(FIRM_USER.sub)], ids=["approve", "reject"]
)
def test_the_submitter_cannot_decide_their_own_claim(command: Any):
    stream = verified()

    with pytest.raises(SameOfficer):
        stream.when(command)

    assert stream.app.status == Status.VERIFIED


def test_an_officer_rejection_is_recorded_with_the_officer_and_the_reason():
    stream = verified()

    events = stream.when(reject(OFFICER_LEE, reason="the facility is outside the cluster"))

    assert types(events) == [REJECTED]
    payload = events[0].payload
    assert payload["stage"] == "decision"
    assert payload["officer"] == OFFICER_LEE
    assert payload["reasons"] == [
        {"code": "officer_rejected", "message": "the facility is outside the cluster"}
    ]
    app = stream.app
    assert app.status == Status.REJECTED
    assert reason_codes(stream) == ["officer_rejected"]
    assert app.facts is not None  # the verification facts stay on the application


def test_after_one_of_two_approvals_another_officer_may_still_reject():
    stream = verified(AT_THRESHOLD).given(approve(OFFICER_KIM))

    stream.when(reject(OFFICER_LEE))

    assert stream.app.status == Status.REJECTED


@pytest.mark.parametrize("build", [submitted, approved], ids=["submitted", "approved"])
def test_only_a_verified_claim_is_decided(build: Any):
    with pytest.raises(InvalidTransition) as refused:
        build().when(approve(OFFICER_PARK))

    assert refused.value.extensions["current_status"] == str(build().app.status)


# --- withdrawal -------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [submitted, verified], ids=["submitted", "verified"])
def test_a_claim_may_be_withdrawn_before_a_decision(build: Any):
    stream = build()

    events = stream.when(withdraw("we will claim next year"))

    assert types(events) == [WITHDRAWN]
    assert events[0].payload == {"reason": "we will claim next year"}
    assert stream.app.status == Status.WITHDRAWN == "withdrawn"


@pytest.mark.parametrize(
    "build",
    [
        approved,
        certified,
        lambda: verified().given(reject(OFFICER_KIM)),
        lambda: submitted().given(withdraw()),
        lambda: certified().given(claw_back()),
    ],
    ids=["approved", "certified", "rejected", "withdrawn", "revoked"],
)
def test_withdrawal_of_a_decided_claim_is_refused(build: Any):
    stream = build()
    before = stream.app.status

    with pytest.raises(InvalidTransition):
        stream.when(withdraw())

    assert stream.app.status == before


# --- the certificate --------------------------------------------------------------------------


def test_the_certificate_grants_the_approved_credit_for_the_claimed_cost():
    stream = approved()

    events = stream.when(issue("TC-2026-000042", issued_on=date(2026, 3, 9)))

    assert types(events) == [ISSUED]
    assert events[0].payload == {
        "number": "TC-2026-000042",
        "amount": STRATEGIC_CREDIT,
        "issued_on": "2026-03-09",
        "firm_id": FIRM_ID,
        "tax_year": TAX_YEAR,
        "programme": "strategic_investment",
        "cost_reference": "FAC-2025-001",
    }
    app = stream.app
    assert app.status == Status.CERTIFIED == "certified"
    certificate = app.certificate
    assert certificate is not None
    assert certificate.number == "TC-2026-000042"
    assert certificate.amount == certificate.original_amount == STRATEGIC_CREDIT
    assert certificate.issued_on == date(2026, 3, 9)
    assert certificate.status == "valid"
    assert certificate.event_id == stream.envelopes[-1].event_id
    assert certificate.event_hash == stream.envelopes[-1].hash


@pytest.mark.parametrize("build", [verified, certified], ids=["verified", "certified"])
def test_a_certificate_is_issued_only_once_and_only_after_approval(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(issue("TC-2"))


# --- clawback ---------------------------------------------------------------------------------


def test_a_partial_clawback_reduces_the_certificate():
    stream = certified()

    events = stream.when(claw_back(20_000_000, reason="part of the facility was sold"))

    assert types(events) == [CLAWED_BACK]
    assert events[0].payload == {
        "number": "TC-2026-000001",
        "amount": 20_000_000,
        "remaining": 100_000_000,
        "reason": "part of the facility was sold",
        "officer": OFFICER_PARK,
    }
    app = stream.app
    assert app.status == Status.CERTIFIED
    assert app.certificate is not None
    assert app.certificate.status == "reduced"
    assert app.certificate.amount == 100_000_000
    assert app.certificate.original_amount == STRATEGIC_CREDIT
    [clawback] = app.clawbacks
    assert (clawback.amount, clawback.officer) == (20_000_000, OFFICER_PARK)
    assert clawback.at == stream.envelopes[-1].occurred_at


def test_clawing_back_the_rest_revokes_the_certificate():
    stream = certified().given(claw_back(20_000_000))

    events = stream.when(claw_back(None, reason="the facility was sold"))

    assert events[0].payload["amount"] == 100_000_000
    assert events[0].payload["remaining"] == 0
    app = stream.app
    assert app.status == Status.REVOKED == "revoked"
    assert app.certificate is not None
    assert app.certificate.status == "revoked"
    assert app.certificate.amount == 0
    assert [c.amount for c in app.clawbacks] == [20_000_000, 100_000_000]


def test_clawing_back_exactly_what_remains_revokes():
    stream = certified()

    stream.when(claw_back(STRATEGIC_CREDIT))

    assert stream.app.status == Status.REVOKED


def test_clawing_back_more_than_remains_is_refused_naming_the_amount():
    stream = certified().given(claw_back(20_000_000))

    with pytest.raises(Unprocessable) as refused:
        stream.when(claw_back(100_000_001))

    assert refused.value.extensions["field"] == "amount"
    assert refused.value.extensions["remaining"] == 100_000_000
    assert stream.app.certificate is not None and stream.app.certificate.amount == 100_000_000


@pytest.mark.parametrize("amount", [0, -1])
def test_a_clawback_of_no_money_is_refused(amount: int):
    with pytest.raises(Unprocessable) as refused:
        certified().when(claw_back(amount))

    assert refused.value.extensions["field"] == "amount"


@pytest.mark.parametrize(
    "build",
    [lambda: certified().given(claw_back()), approved, verified],
    ids=["revoked", "approved", "verified"],
)
def test_only_a_certified_credit_can_be_clawed_back(build: Any):
    stream = build()

    with pytest.raises(InvalidTransition) as refused:
        stream.when(claw_back(1))

    assert refused.value.extensions["current_status"] == str(stream.app.status)


# --- the whole story, folded ------------------------------------------------------------------


def test_the_fold_of_the_log_is_the_state_built_step_by_step():
    stream = TaxcreditStream(application_id="app-story")

    stream.given(
        AT_THRESHOLD,
        verify(),
        approve(OFFICER_KIM, reason="invoices match"),
        approve(OFFICER_LEE, reason="second pair of eyes"),
        issue("TC-2026-000777"),
        claw_back(100_000_000, reason="one line sold"),
        claw_back(None, reason="plant closed"),
    )

    assert [e.type for e in stream.envelopes] == [
        SUBMITTED,
        VERIFIED,
        APPROVAL_RECORDED,
        APPROVED,
        ISSUED,
        CLAWED_BACK,
        CLAWED_BACK,
    ]
    final = fold(stream.envelopes)
    assert final == stream.state
    assert hash(final) == hash(stream.state)  # states are values: they can be hashed
    assert DECIDER.fold(stream.envelopes) == final
    assert final is not None
    assert final.id == "app-story"
    assert final.status == Status.REVOKED
    assert final.firm_id == FIRM_ID
    assert final.submitted_by == FIRM_USER.sub
    assert final.approved_amount == THRESHOLD
    assert [(a.officer, a.reason) for a in final.approvals] == [
        (OFFICER_KIM, "invoices match"),
        (OFFICER_LEE, "second pair of eyes"),
    ]
    assert final.certificate is not None
    assert final.certificate.original_amount == THRESHOLD
    assert [c.amount for c in final.clawbacks] == [100_000_000, 400_000_000]
    assert final.version == 7
    assert final.last_hash == stream.envelopes[-1].hash
    assert final.created_at == stream.envelopes[0].occurred_at
    assert final.updated_at == stream.envelopes[-1].occurred_at
    assert verify_chain(e.to_json_dict() for e in stream.envelopes).breaks == ()


def test_fold_of_no_events_is_no_application():
    assert fold([]) is None


def _sealed(event: NewEvent, seq: int = 1) -> Envelope:
    return sealed(event, CERTIFIER, seq=seq)


def test_an_event_before_submission_is_a_corrupt_log():
    withdrawn = NewEvent(type=WITHDRAWN, payload={"reason": ""})

    with pytest.raises(ValueError, match="before submission"):
        evolve(None, _sealed(withdrawn))


def test_a_second_submission_in_a_log_is_a_corrupt_log():
    stream = submitted()

    with pytest.raises(ValueError, match="submitted twice"):
        evolve(stream.app, stream.envelopes[0])


@pytest.mark.parametrize(
    ("build", "event"),
    [
        (submitted, NewEvent(type=APPROVED, payload={"officer": OFFICER_KIM, "amount": 1})),
        (
            verified,
            NewEvent(
                type=ISSUED,
                payload={
                    "number": "TC-1",
                    "amount": STRATEGIC_CREDIT,
                    "issued_on": "2026-03-02",
                    "firm_id": FIRM_ID,
                    "tax_year": TAX_YEAR,
                    "programme": "strategic_investment",
                    "cost_reference": "FAC-2025-001",
                },
            ),
        ),
        (
            certified,
            NewEvent(
                type=CLAWED_BACK,
                payload={
                    "number": "TC-2026-000001",
                    "amount": 1,
                    "remaining": 5,
                    "reason": "",
                    "officer": "o",
                },
            ),
        ),
        (
            approved,
            NewEvent(
                type=ISSUED,
                payload={
                    "number": "TC-1",
                    "amount": STRATEGIC_CREDIT + 1,
                    "issued_on": "2026-03-02",
                    "firm_id": FIRM_ID,
                    "tax_year": TAX_YEAR,
                    "programme": "strategic_investment",
                    "cost_reference": "FAC-2025-001",
                },
            ),
        ),
    ],
    ids=[
        "approved-unverified",
        "issued-unapproved",
        "clawback-wrong-remaining",
        "issued-wrong-amount",
    ],
)
def test_an_event_the_state_cannot_take_is_a_corrupt_log(build: Any, event: NewEvent):
    stream = build()

    with pytest.raises(ValueError):
        evolve(stream.app, _sealed(event, seq=stream.app.version + 1))


def test_unknown_command_has_no_decider():
    with pytest.raises(TypeError):
        submitted().when(object())


def test_a_submission_payload_round_trips_through_the_registry():
    [event] = decide(submit_strategic(), None)

    parsed = EVENTS.parse(_sealed(event))

    assert isinstance(parsed, ClaimSubmitted)
    assert isinstance(parsed.claim, StrategicInvestmentClaim)
    assert parsed.claim.investment.previous_years == (300_000_000, 200_000_000, 100_000_000)
    assert parsed.firm == a_firm()
    assert parsed.event() == event
