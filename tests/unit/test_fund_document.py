"""The fund's application document: what the firm applied for and what verification compared
are built once per application, and never shown for another state than the one they came from."""

from __future__ import annotations

from dataclasses import replace

from services.fund.adapters.projection import describe
from tests.unit.fund_builders import (
    MEGA,
    OFFICER_KIM,
    committed,
    conflicted,
    submit,
    submitted,
    verified,
    verify,
    vote_against,
    vote_for,
)


def test_each_version_shows_its_own_votes_and_the_terms_it_was_submitted_with() -> None:
    stream = verified()
    before = stream.app
    after = stream.given(vote_for(OFFICER_KIM)).app
    assert after.facts is not None

    first, second = describe(before), describe(after)
    assert first["votes"] == [] and [v["member"] for v in second["votes"]] == [OFFICER_KIM]
    assert second["cost_reference"] == "TRIAL-2026-PH2-001"
    assert second["firm"] == after.firm.to_json()
    assert second["verification"] == after.facts.model_dump(mode="json")
    # the later version keeps the submitted terms: their part was not built again
    assert second["firm"] is first["firm"]
    assert second["verification"] is first["verification"]


def test_a_state_with_other_terms_under_the_same_id_is_described_from_its_own() -> None:
    state = committed().app
    assert state.facts is not None
    terms = state.terms.model_copy(update={"cost_reference": "TRIAL-2027-PH3-009"})
    facts = state.facts.model_copy(update={"catalogue_version": "another"})
    other = replace(state, terms=terms, facts=facts)

    assert describe(state)["cost_reference"] == "TRIAL-2026-PH2-001"
    assert describe(other)["cost_reference"] == "TRIAL-2027-PH3-009"
    assert describe(other)["verification"]["catalogue_version"] == "another"
    assert describe(state)["cost_reference"] == "TRIAL-2026-PH2-001"
    assert describe(state)["verification"] == state.facts.model_dump(mode="json")


def test_votes_for_counts_the_for_votes_that_count() -> None:
    # the mega fund's committee: five members, quorum 3, so the vote stays open throughout
    stream = submitted(submit(fund=MEGA)).given(verify(fund=MEGA))
    members = MEGA.committee.members
    seen = []
    for command in (
        vote_for(members[0]),
        conflicted(members[1]),
        vote_against(members[2]),
        vote_for(members[3]),
    ):
        app = stream.given(command).app
        assert app.tally is not None
        seen.append(describe(app)["votes_for"])
        assert describe(app)["votes_for"] == len(app.tally.in_favour)
    assert seen == [1, 1, 1, 2]
