"""The fund decider, told as given events / when command / then events. Pure: no I/O."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from services.fund.domain.decider import CHECKS, DECIDER, RefuseCommitment, decide
from services.fund.domain.events import EVENTS, ApplicationSubmitted, E, VoteChoice
from services.fund.domain.funds import Stage, load_funds
from services.fund.domain.model import Status, evolve, fold
from shared.contracts import NewEvent, verify_chain
from shared.domain import (
    Conflict,
    Forbidden,
    InvalidTransition,
    SameOfficer,
    Unprocessable,
    today_in_korea,
)
from tests.unit.fund_builders import (
    AMOUNT,
    CATALOGUE_DOC,
    CATALOGUE_VERSION,
    COMBINED_CAP,
    COMMITMENT_DAY,
    COMMITMENT_STAGE,
    FIRM_ID,
    FIRM_USER,
    GOIF,
    MEGA,
    OFFICER_HAN,
    OFFICER_KIM,
    OFFICER_LEE,
    OFFICER_PARK,
    PARTNERS_ID,
    SUBMISSION_DAY,
    VENTURES_ID,
    FundStream,
    a_firm,
    approved,
    cancel,
    commit,
    committed,
    conflicted,
    diligence,
    pay,
    release,
    submit,
    submitted,
    tranches,
    types,
    verified,
    verify,
    vote_against,
    vote_for,
    withdraw,
)


def reason_codes(stream: FundStream) -> list[str]:
    return [r.code for r in stream.app.rejection_reasons]


# --- the catalogue ---------------------------------------------------------------------------


def test_the_catalogue_holds_the_mega_fund_and_the_global_open_innovation_fund():
    assert CATALOGUE_DOC["version"] == CATALOGUE_VERSION
    assert CATALOGUE_DOC["assumptions"]
    assert MEGA.capacity == 1_000_000_000_000
    assert set(MEGA.remit.stages) == set(Stage)
    assert GOIF.capacity == 200_000_000_000
    assert GOIF.parent == MEGA.id
    assert GOIF.remit.stages == (Stage.RND, Stage.CLINICAL, Stage.EXPORT)
    assert GOIF.committee.quorum == 2
    assert GOIF.committee.members == (OFFICER_KIM, OFFICER_LEE, OFFICER_HAN)


def _catalogue(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(CATALOGUE_DOC)
    for fund in doc["funds"]:
        fund.update(changes.get(fund["id"], {}))
    return doc


def _sub_fund(fund_id: str, capacity: int) -> dict[str, Any]:
    return {**copy.deepcopy(CATALOGUE_DOC["funds"][1]), "id": fund_id, "capacity": capacity}


def test_sub_funds_may_take_exactly_the_parents_capacity():
    doc = _catalogue()
    doc["funds"].append(_sub_fund("export-fund", 800_000_000_000))

    assert set(load_funds(doc)) == {MEGA.id, GOIF.id, "export-fund"}


def test_sub_fund_capacities_over_the_parents_are_refused():
    doc = _catalogue()
    doc["funds"].append(_sub_fund("export-fund", 800_000_000_001))

    with pytest.raises(ValueError, match="more than its capacity"):
        load_funds(doc)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({GOIF.id: {"parent": "no-such-fund"}}, "unknown parent"),
        ({MEGA.id: {"parent": GOIF.id}}, "own ancestor"),
        ({GOIF.id: {"id": MEGA.id}}, "twice"),
        ({GOIF.id: {"remit": {"stages": ["rnd"], "industries": ["quantum"]}}}, "outside the remit"),
        ({GOIF.id: {"committee": {"members": [OFFICER_KIM], "quorum": 2}}}, "cannot be reached"),
        ({GOIF.id: {"committee": {"members": [OFFICER_KIM, OFFICER_KIM], "quorum": 1}}}, "twice"),
        ({GOIF.id: {"remit": {"stages": ["marketing"], "industries": ["advanced_bio"]}}}, "stages"),
        ({GOIF.id: {"capacity": -1}}, "capacity"),
    ],
    ids=[
        "unknown-parent",
        "cycle",
        "duplicate-id",
        "sub-remit",
        "quorum",
        "member-twice",
        "stage",
        "negative",
    ],
)
def test_an_inconsistent_catalogue_is_refused(changes: dict[str, Any], match: str):
    with pytest.raises(ValueError, match=match):
        load_funds(_catalogue(**changes))


# --- submission --------------------------------------------------------------------------------


def test_submission_records_the_application_and_numbers_the_tranches():
    stream = FundStream()

    events = stream.when(submit())

    assert types(events) == [E.SUBMITTED]
    app = stream.app
    assert app.status == Status.SUBMITTED == "submitted"
    assert app.fund_id == GOIF.id
    assert app.firm == a_firm()
    assert app.firm_id == FIRM_ID
    assert app.submitted_by == FIRM_USER.sub
    assert app.amount == AMOUNT
    assert [(t.number, t.amount, t.status) for t in app.tranches] == [
        (1, 1_000_000_000, "planned"),
        (2, 2_000_000_000, "planned"),
    ]
    assert [c.investor_firm_id for c in app.terms.co_investors] == [VENTURES_ID, PARTNERS_ID]


def test_submitting_twice_is_refused():
    with pytest.raises(InvalidTransition):
        submitted().when(submit())


@pytest.mark.parametrize(
    "planned",
    [tranches(1_000_000_000, 1_999_999_999), tranches(1_000_000_000, 2_000_000_001), ()],
    ids=["short", "over", "none"],
)
def test_tranches_that_do_not_sum_to_the_amount_are_refused(planned: Any):
    with pytest.raises(Unprocessable) as refused:
        FundStream().when(submit(planned=planned))

    assert refused.value.extensions["field"] == "tranches"


def test_the_submission_payload_also_insists_the_tranches_add_up():
    [event] = decide(submit(), None)
    payload = {**event.payload, "amount": AMOUNT + 1}

    with pytest.raises(ValidationError, match="tranches"):
        ApplicationSubmitted.model_validate(payload)


def test_a_firm_cannot_co_invest_in_itself():
    co = submit().co_investors[0].model_copy(update={"investor_firm_id": FIRM_ID})

    with pytest.raises(Unprocessable) as refused:
        FundStream().when(submit(co_investors=(co,)))

    assert refused.value.extensions["field"] == "co_investors"


def test_a_co_investor_is_listed_once():
    co = submit().co_investors[0]

    with pytest.raises(Unprocessable) as refused:
        FundStream().when(submit(co_investors=(co, co.model_copy(update={"amount": 1}))))

    assert refused.value.extensions["field"] == "co_investors"


def test_a_submission_payload_round_trips_through_the_registry():
    [event] = decide(submit(), None)

    parsed = EVENTS.parse(submitted().envelopes[0])

    assert isinstance(parsed, ApplicationSubmitted)
    assert parsed.event() == event


# --- verification ----------------------------------------------------------------------------


def test_a_sound_application_is_verified_with_the_facts_it_rests_on():
    stream = submitted()

    events = stream.when(verify(available=5_000_000_000, combined_support=7_000_000_000))

    assert types(events) == [E.VERIFIED]
    facts = stream.app.facts
    assert facts is not None
    assert stream.app.status == Status.VERIFIED
    assert facts.as_of == SUBMISSION_DAY == today_in_korea(stream.app.created_at)
    assert facts.catalogue_version == CATALOGUE_VERSION
    assert facts.fund_id == GOIF.id
    assert facts.stage == Stage.CLINICAL
    assert facts.industry == "advanced_bio"
    assert facts.remit == GOIF.remit
    assert facts.committee == GOIF.committee
    assert facts.amount == AMOUNT
    assert facts.available_capacity == 5_000_000_000
    assert facts.support.combined_support == 7_000_000_000
    assert facts.support.combined_yearly_cap == COMBINED_CAP
    assert facts.support.supported_elsewhere is None
    assert facts.checks == CHECKS
    assert events[0].payload["facts"]["as_of"] == "2026-03-02"


def test_the_as_of_date_is_the_submissions_day_in_korea_whatever_verification_lags():
    stream = submitted()
    stream.clock = stream.clock.replace(hour=16)  # 01:00 KST the next day

    stream.when(verify())

    assert stream.app.facts is not None
    assert stream.app.facts.as_of == SUBMISSION_DAY


def test_exactly_the_available_capacity_and_exactly_the_cap_pass():
    stream = submitted()

    stream.when(verify(available=AMOUNT, combined_support=COMBINED_CAP - AMOUNT))

    assert stream.app.status == Status.VERIFIED


REJECTIONS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # code, submit overrides, verify overrides, token firm_id
    ("firm_id_malformed", {"firm_id": "1234567890"}, {}, "1234567890"),
    ("firm_id_mismatch", {}, {}, "999-99-99999"),
    ("fund_unknown", {}, {"fund": None}, FIRM_ID),
    ("outside_remit", {"stage": Stage.MNA}, {}, FIRM_ID),
    ("outside_remit", {"industry": "quantum"}, {}, FIRM_ID),
    ("incomplete_due_diligence", {"due_diligence": diligence(site_visit=False)}, {}, FIRM_ID),
    ("insufficient_capacity", {}, {"available": AMOUNT - 1}, FIRM_ID),
    ("duplicate_support", {}, {"supported_elsewhere": "voucher:app-77"}, FIRM_ID),
    ("combined_cap_exceeded", {}, {"combined_support": COMBINED_CAP - AMOUNT + 1}, FIRM_ID),
]


@pytest.mark.parametrize(
    ("code", "submit_overrides", "verify_overrides", "token_firm_id"),
    REJECTIONS,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(REJECTIONS)],
)
def test_every_rejection_reason_code(
    code: str,
    submit_overrides: dict[str, Any],
    verify_overrides: dict[str, Any],
    token_firm_id: str,
):
    stream = FundStream(token_firm_id=token_firm_id).given(submit(**submit_overrides))

    events = stream.when(verify(**verify_overrides))

    assert types(events) == [E.REJECTED]
    assert events[0].payload["stage"] == "verification"
    [reason] = events[0].payload["reasons"]
    assert reason["code"] == code
    assert reason["message"]
    assert stream.app.status == Status.REJECTED
    assert reason_codes(stream) == [code]
    assert stream.app.facts is not None  # a rejection records its facts too


def test_every_failure_is_reported_together_in_reading_order():
    stream = FundStream(token_firm_id="999-99-99999").given(
        submit(stage=Stage.MNA, industry="quantum", due_diligence=diligence(ip=False, legal=False))
    )

    stream.when(
        verify(
            available=AMOUNT - 1,
            supported_elsewhere="taxcredit:TC-2026-000001",
            combined_support=COMBINED_CAP,
        )
    )

    assert reason_codes(stream) == [
        "firm_id_mismatch",
        "outside_remit",
        "incomplete_due_diligence",
        "insufficient_capacity",
        "duplicate_support",
        "combined_cap_exceeded",
    ]
    remit, due, *_ = stream.app.rejection_reasons[1:]
    assert "mna" in remit.message and "quantum" in remit.message
    assert "ip, legal" in due.message


def test_an_unknown_fund_is_rejected_without_a_committee_to_vote():
    stream = submitted()

    stream.when(verify(fund=None))

    assert stream.app.facts is not None
    assert stream.app.facts.committee is None and stream.app.facts.remit is None


def test_verification_against_another_fund_than_applied_to_is_a_service_bug():
    with pytest.raises(ValueError, match="not to"):
        submitted().when(verify(fund=MEGA))


@pytest.mark.parametrize("build", [verified, approved, committed])
def test_only_a_submitted_application_is_verified(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(verify())


# --- the committee votes ---------------------------------------------------------------------


def test_one_vote_for_is_recorded_and_decides_nothing_yet():
    stream = verified()

    events = stream.when(vote_for(OFFICER_KIM))

    assert types(events) == [E.VOTE_RECORDED]
    assert events[0].payload == {
        "member": OFFICER_KIM,
        "vote": "for",
        "reason": "sound science, credible plan",
        "conflict_of_interest": False,
    }
    assert stream.app.status == Status.VERIFIED
    assert stream.app.tally is not None
    assert stream.app.tally.in_favour == (OFFICER_KIM,)


def test_quorum_of_distinct_members_approves_in_the_same_decision():
    stream = verified().given(vote_for(OFFICER_KIM))

    events = stream.when(vote_for(OFFICER_LEE, reason="strong phase 1 data"))

    assert types(events) == [E.VOTE_RECORDED, E.APPROVED]
    approval = events[1].payload
    assert approval["officer"] == OFFICER_LEE
    assert approval["amount"] == AMOUNT
    assert approval["tally"] == {
        "quorum": 2,
        "in_favour": [OFFICER_KIM, OFFICER_LEE],
        "against": [],
        "conflicted": [],
        "not_voted": [OFFICER_HAN],
    }
    assert stream.app.status == Status.APPROVED == "approved"
    assert stream.app.approved_amount == AMOUNT


def test_a_member_votes_once():
    stream = verified().given(vote_against(OFFICER_KIM))

    with pytest.raises(Conflict, match="already voted") as refused:
        stream.when(vote_for(OFFICER_KIM))

    assert not isinstance(refused.value, InvalidTransition)


def test_a_declared_conflict_is_recorded_and_does_not_count():
    stream = verified().given(conflicted(OFFICER_KIM), vote_for(OFFICER_LEE))

    assert stream.app.status == Status.VERIFIED  # two "for" votes, one of them conflicted
    assert [(b.member, b.counted) for b in stream.app.ballots] == [
        (OFFICER_KIM, False),
        (OFFICER_LEE, True),
    ]
    events = stream.when(vote_for(OFFICER_HAN))
    assert types(events) == [E.VOTE_RECORDED, E.APPROVED]
    assert events[1].payload["tally"]["conflicted"] == [OFFICER_KIM]


def test_once_quorum_cannot_be_reached_the_application_is_rejected():
    stream = verified().given(vote_against(OFFICER_KIM))

    events = stream.when(vote_against(OFFICER_LEE))

    assert types(events) == [E.VOTE_RECORDED, E.REJECTED]
    assert events[1].payload["stage"] == "decision"
    assert events[1].payload["tally"]["not_voted"] == [OFFICER_HAN]
    assert stream.app.status == Status.REJECTED
    assert reason_codes(stream) == ["quorum_unreachable"]


def test_conflicts_can_make_quorum_unreachable():
    stream = verified().given(conflicted(OFFICER_KIM))

    events = stream.when(vote_against(OFFICER_HAN))

    assert types(events) == [E.VOTE_RECORDED, E.REJECTED]
    assert reason_codes(stream) == ["quorum_unreachable"]


def test_on_a_larger_committee_one_against_leaves_quorum_reachable():
    stream = submitted(submit(fund=MEGA)).given(
        verify(fund=MEGA), vote_against(OFFICER_KIM), vote_against(OFFICER_LEE)
    )

    assert stream.app.status == Status.VERIFIED  # three members left, quorum three
    events = stream.when(vote_against(OFFICER_PARK))
    assert types(events) == [E.VOTE_RECORDED, E.REJECTED]


def test_the_submitter_cannot_vote():
    with pytest.raises(SameOfficer):
        verified().when(vote_for(FIRM_USER.sub))


def test_only_committee_members_vote():
    with pytest.raises(Forbidden):
        verified().when(vote_for(OFFICER_PARK))  # on the mega fund's committee only


def test_the_committee_is_the_one_pinned_at_verification():
    stream = verified()

    assert stream.app.committee == GOIF.committee
    assert fold(stream.envelopes) == stream.state


@pytest.mark.parametrize("build", [submitted, approved, committed])
def test_only_a_verified_application_is_voted_on(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(vote_for(OFFICER_HAN))


def test_a_vote_must_be_for_or_against():
    with pytest.raises(Unprocessable) as refused:
        verified().when(vote_for(OFFICER_KIM)._replace(vote="abstain"))  # type: ignore[arg-type]

    assert refused.value.extensions["field"] == "vote"


# --- withdrawal --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [submitted, verified])
def test_an_application_may_be_withdrawn_before_approval(build: Any):
    stream = build()

    events = stream.when(withdraw())

    assert types(events) == [E.WITHDRAWN]
    assert events[0].payload == {"reason": "we closed a private round"}
    assert stream.app.status == Status.WITHDRAWN


def test_withdrawal_after_one_vote_is_still_possible():
    stream = verified().given(vote_for(OFFICER_KIM))

    stream.when(withdraw())

    assert stream.app.status == Status.WITHDRAWN


@pytest.mark.parametrize("build", [approved, committed])
def test_withdrawal_after_approval_is_refused(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(withdraw())


# --- commitment ---------------------------------------------------------------------------------


def test_commitment_grants_the_amount_and_records_each_co_investor():
    stream = approved()

    events = stream.when(commit())

    assert types(events) == [E.COMMITTED, E.CO_INVESTMENT_RECORDED, E.CO_INVESTMENT_RECORDED]
    assert events[0].payload == {
        "firm_id": FIRM_ID,
        "amount": AMOUNT,
        "year": COMMITMENT_DAY.year,
        "committed_on": "2026-05-04",
        "programme": "fund",
        "fund_id": GOIF.id,
        "cost_reference": "TRIAL-2026-PH2-001",
    }
    assert [e.payload for e in events[1:]] == [
        {
            "co_investment_id": "app-1:0",
            "investor_firm_id": VENTURES_ID,
            "name": "Kendall Ventures",
            "amount": 1_500_000_000,
            "fund_id": GOIF.id,
            "investee_firm_id": FIRM_ID,
            "application_id": "app-1",
        },
        {
            "co_investment_id": "app-1:1",
            "investor_firm_id": PARTNERS_ID,
            "name": "Osong Bio Partners",
            "amount": 500_000_000,
            "fund_id": GOIF.id,
            "investee_firm_id": FIRM_ID,
            "application_id": "app-1",
        },
    ]
    assert stream.app.status == Status.COMMITTED == "committed"
    assert stream.app.committed_on == COMMITMENT_DAY
    assert stream.app.co_investment_ids == ("app-1:0", "app-1:1")
    assert {e.actor.sub for e in stream.envelopes[-3:]} == {COMMITMENT_STAGE.sub}


def test_co_investment_ids_are_stable_whoever_decides_again():
    first = [e.payload["co_investment_id"] for e in decide(commit(), approved().app)[1:]]
    again = [e.payload["co_investment_id"] for e in decide(commit(), approved().app)[1:]]

    assert first == again == ["app-1:0", "app-1:1"]


def test_without_co_investors_the_commitment_is_the_only_event():
    stream = approved(submit(co_investors=()))

    assert types(stream.when(commit())) == [E.COMMITTED]


def test_a_commitment_the_capacity_cannot_hold_rejects_the_approved_application():
    stream = approved()

    events = stream.when(RefuseCommitment(available_capacity=AMOUNT - 1))

    assert types(events) == [E.REJECTED]
    assert events[0].payload["stage"] == "commitment"
    assert events[0].payload["available_capacity"] == AMOUNT - 1
    assert stream.app.status == Status.REJECTED
    assert reason_codes(stream) == ["insufficient_capacity"]


def test_a_commitment_is_not_refused_when_the_capacity_was_there():
    with pytest.raises(ValueError):
        approved().when(RefuseCommitment(available_capacity=AMOUNT))


@pytest.mark.parametrize("build", [submitted, verified, committed])
def test_only_an_approved_application_is_committed(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(commit())


# --- tranches ---------------------------------------------------------------------------------


def test_the_first_planned_tranche_is_released():
    stream = committed()

    events = stream.when(release(1, evidence="phase 2 first patient dosed"))

    assert types(events) == [E.TRANCHE_RELEASED]
    assert events[0].payload == {
        "number": 1,
        "amount": 1_000_000_000,
        "milestone": "milestone 1",
        "milestone_evidence": "phase 2 first patient dosed",
        "officer": OFFICER_PARK,
    }
    first = stream.app.tranche(1)
    assert first is not None and first.status == "released"
    assert first.released_by == OFFICER_PARK


def test_tranches_are_released_in_order():
    stream = committed()

    with pytest.raises(Conflict, match="tranche 1 is the next"):
        stream.when(release(2))


def test_a_released_tranche_is_not_released_again():
    stream = committed().given(release(1))

    with pytest.raises(Conflict):
        stream.when(release(1))


def test_a_tranche_that_does_not_exist_is_refused():
    with pytest.raises(Unprocessable) as refused:
        committed().when(release(3))

    assert refused.value.extensions["field"] == "number"


def test_a_release_needs_evidence():
    with pytest.raises(Unprocessable):
        committed().when(release(1)._replace(milestone_evidence="  "))


@pytest.mark.parametrize("build", [verified, approved])
def test_only_a_committed_investment_releases_tranches(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(release(1))


def test_a_tranche_is_paid_once():
    stream = committed().given(release(1))

    events = stream.when(pay(1, "payout-xyz"))
    again = stream.when(pay(1, "payout-xyz"))

    assert types(events) == [E.TRANCHE_PAID]
    assert events[0].payload == {"number": 1, "amount": 1_000_000_000, "payout_id": "payout-xyz"}
    assert again == []
    assert stream.app.status == Status.COMMITTED  # not the last tranche
    assert stream.app.paid_amount == 1_000_000_000


def test_a_planned_tranche_is_not_paid():
    with pytest.raises(InvalidTransition):
        committed().when(pay(1))


def test_the_investment_completes_only_when_the_last_tranche_is_paid():
    stream = committed().given(release(1), release(2), pay(2))

    assert stream.app.status == Status.COMMITTED  # tranche 1 is released, not paid
    events = stream.when(pay(1))

    assert types(events) == [E.TRANCHE_PAID, E.COMPLETED]
    assert events[1].payload == {"paid_amount": AMOUNT}
    assert stream.app.status == Status.COMPLETED == "completed"
    assert stream.when(pay(1)) == []  # and paying again still changes nothing


# --- cancellation -----------------------------------------------------------------------------


def test_cancellation_returns_what_was_not_paid():
    stream = committed(submit(planned=tranches(500_000_000, 1_000_000_000, 1_500_000_000)))
    stream.given(release(1), pay(1), release(2))

    events = stream.when(cancel(reason="trial halted by the regulator"))

    assert types(events) == [E.CANCELLED]
    assert events[0].payload == {
        "officer": OFFICER_PARK,
        "reason": "trial halted by the regulator",
        "paid_amount": 500_000_000,
        "returned_amount": 2_500_000_000,
        "cancelled_tranches": [2, 3],
    }
    assert stream.app.status == Status.CANCELLED == "cancelled"
    assert stream.app.returned_amount == 2_500_000_000
    assert [t.status for t in stream.app.tranches] == ["paid", "cancelled", "cancelled"]


def test_a_cancelled_investment_pays_nothing_more():
    stream = committed().given(release(1), cancel())

    with pytest.raises(InvalidTransition):
        stream.when(pay(1))
    with pytest.raises(InvalidTransition):
        stream.when(release(2))


@pytest.mark.parametrize("build", [verified, approved])
def test_only_a_committed_investment_is_cancelled(build: Any):
    with pytest.raises(InvalidTransition):
        build().when(cancel())


def test_a_cancellation_needs_a_reason():
    with pytest.raises(Unprocessable):
        committed().when(cancel(reason=" "))


# --- the whole story, folded --------------------------------------------------------------------


def test_the_fold_of_the_log_is_the_state_built_step_by_step():
    stream = FundStream(application_id="app-story")

    stream.given(
        submit(),
        verify(),
        conflicted(OFFICER_HAN),
        vote_for(OFFICER_KIM),
        vote_for(OFFICER_LEE),
        commit(),
        release(1),
        pay(1),
        release(2),
        pay(2),
    )

    assert [e.type for e in stream.envelopes] == [
        E.SUBMITTED,
        E.VERIFIED,
        E.VOTE_RECORDED,
        E.VOTE_RECORDED,
        E.VOTE_RECORDED,
        E.APPROVED,
        E.COMMITTED,
        E.CO_INVESTMENT_RECORDED,
        E.CO_INVESTMENT_RECORDED,
        E.TRANCHE_RELEASED,
        E.TRANCHE_PAID,
        E.TRANCHE_RELEASED,
        E.TRANCHE_PAID,
        E.COMPLETED,
    ]
    final = fold(stream.envelopes)
    assert final == stream.state
    assert hash(final) == hash(stream.state)
    assert DECIDER.fold(stream.envelopes) == final
    assert final is not None
    assert final.status == Status.COMPLETED
    assert final.co_investment_ids == ("app-story:0", "app-story:1")
    assert [t.payout_id for t in final.tranches] == ["payout-1", "payout-2"]
    assert final.version == 14
    assert final.last_hash == stream.envelopes[-1].hash
    assert final.created_at == stream.envelopes[0].occurred_at
    assert verify_chain(e.to_json_dict() for e in stream.envelopes).breaks == ()


def test_fold_of_no_events_is_no_application():
    assert fold([]) is None


def test_an_event_before_submission_is_a_corrupt_log():
    stream = verified()

    with pytest.raises(ValueError, match="before submission"):
        evolve(None, stream.envelopes[1])


def test_a_second_submission_is_a_corrupt_log():
    stream = submitted()

    with pytest.raises(ValueError, match="submitted twice"):
        evolve(stream.app, stream.envelopes[0])


def test_an_event_the_state_cannot_take_is_a_corrupt_log():
    early = committed()
    payment = committed().given(release(1), pay(1)).envelopes[-1]

    with pytest.raises(ValueError):
        evolve(early.app, payment)  # tranche 1 was never released here


def test_unknown_command_has_no_decider():
    with pytest.raises(TypeError):
        submitted().when(object())


def test_vote_choices_are_the_two_the_issue_names():
    assert [str(v) for v in VoteChoice] == ["for", "against"]


def test_new_events_are_typed_by_the_registry():
    assert set(EVENTS.types) == {
        value for name, value in vars(E).items() if not name.startswith("_")
    }
    assert all(isinstance(e, NewEvent) for e in decide(submit(), None))
