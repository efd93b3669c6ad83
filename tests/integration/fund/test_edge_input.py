"""Bad input to the fund endpoints is refused at the edge with the field named, alike on
PostgreSQL (which cannot store a NUL character) and SQLite, and the log is as it was."""

from __future__ import annotations

from typing import Any

from tests.integration.fund.conftest import (
    apply,
    apply_as,
    document,
    event_count,
    investment,
    problem_fields,
    vote,
)
from tests.integration.harness import FIRM_ID, OTHER_FIRM_ID, ServiceHarness, wait_for_status


def with_nul_milestone() -> dict[str, Any]:
    body = investment(3_000_000_000)
    body["tranches"][1]["milestone"] = "phase 2\x00 read-out"
    return body


async def test_a_body_that_cannot_be_an_investment_is_a_422_naming_the_field(
    fund: ServiceHarness,
) -> None:
    before = await event_count(fund)
    for field, body in (
        ("tranches", investment(3_000_000_000, tranches=[1_000_000_000, 1_000_000_000])),
        ("tranches", investment(3_000_000_000, tranches=[2_000_000_000, 2_000_000_000])),
        ("tranches.0.amount", investment(3_000_000_000, tranches=[0, 3_000_000_000])),
        ("tranches.1.milestone", with_nul_milestone()),
        ("cost_reference", investment(cost_reference="TRIAL\x00-2026")),
        ("firm.name", investment() | {"firm": investment()["firm"] | {"name": "Osong\x00Cell"}}),
    ):
        response = await fund.client.post(
            "/v1/applications", json=body, headers={**fund.firm(), "Idempotency-Key": "bad"}
        )
        assert response.status_code == 422, (field, response.text)
        assert problem_fields(response) == [field], field
    assert await event_count(fund) == before
    listed = await fund.client.get("/v1/applications", headers=fund.officer())
    assert listed.json()["items"] == []


async def test_an_unknown_fund_is_a_422_naming_fund_id(fund: ServiceHarness) -> None:
    before = await event_count(fund)
    response = await fund.client.post(
        "/v1/applications",
        json=investment(fund_id="no-such-fund"),
        headers={**fund.firm(), "Idempotency-Key": "unknown-fund"},
    )
    assert response.status_code == 422, response.text
    assert problem_fields(response) == ["fund_id"]
    assert "no-such-fund" in response.json()["detail"]
    assert await event_count(fund) == before


async def test_a_firm_naming_another_firms_number_is_forbidden(fund: ServiceHarness) -> None:
    before = await event_count(fund)
    response = await fund.client.post(
        "/v1/applications",
        json=investment(firm_id=OTHER_FIRM_ID),
        headers={**fund.firm(FIRM_ID), "Idempotency-Key": "someone-else"},
    )
    assert response.status_code == 403, response.text
    assert problem_fields(response) == ["firm.firm_id"]
    assert await event_count(fund) == before
    for firm_id in (FIRM_ID, OTHER_FIRM_ID):
        listed = await fund.client.get(
            "/v1/applications", headers=fund.firm(firm_id, sub=f"ceo-{firm_id}")
        )
        assert listed.json()["items"] == []


async def test_bad_votes_and_releases_are_refused_and_change_nothing(
    fund: ServiceHarness,
) -> None:
    app_id = await apply_as(fund, 1)
    await wait_for_status(fund, app_id, "verified")

    votes = f"/v1/applications/{app_id}/votes"
    for body, field in (
        ({"vote": "abstain"}, "vote"),
        ({"vote": "FOR"}, "vote"),
        ({"vote": ""}, "vote"),
        ({}, "vote"),
        ({"vote": "for", "reason": "fine\x00"}, "reason"),
        ({"vote": "for", "conflict_of_interest": "perhaps"}, "conflict_of_interest"),
        ({"vote": "for", "weight": 2}, "weight"),
    ):
        before = await event_count(fund)
        response = await fund.client.post(votes, json=body, headers=fund.officer("officer-kim"))
        assert response.status_code == 422, (body, response.text)
        assert problem_fields(response) == [field], body
        assert await event_count(fund) == before
    assert (await document(fund, app_id))["votes"] == []

    for member in ("officer-kim", "officer-lee"):
        assert (await vote(fund, app_id, member)).status_code == 200
    await wait_for_status(fund, app_id, "committed")

    officer = fund.officer("officer-park")
    before = await event_count(fund)
    for number, body, field in (
        (1, {}, "milestone_evidence"),
        (1, {"milestone_evidence": ""}, "milestone_evidence"),
        (1, {"milestone_evidence": "   "}, "milestone_evidence"),  # stripped: nothing
        (1, {"milestone_evidence": "report\x00"}, "milestone_evidence"),
        (0, {"milestone_evidence": "milestone report"}, "path.number"),
        (-1, {"milestone_evidence": "milestone report"}, "path.number"),
    ):
        response = await fund.client.post(
            f"/v1/applications/{app_id}/tranches/{number}/release", json=body, headers=officer
        )
        assert response.status_code == 422, (number, body, response.text)
        assert problem_fields(response) == [field], (number, body)
    assert await event_count(fund) == before
    untouched = await document(fund, app_id)
    assert untouched["status"] == "committed"
    assert [t["status"] for t in untouched["tranches"]] == ["planned"] * 3

    beyond = await fund.client.post(  # no fourth tranche: not a crash
        f"/v1/applications/{app_id}/tranches/4/release",
        json={"milestone_evidence": "milestone report"},
        headers=officer,
    )
    assert beyond.status_code == 422, beyond.text
    assert problem_fields(beyond) == ["number"]
    assert await event_count(fund) == before


async def test_the_same_idempotency_key_with_another_body_is_a_conflict(
    fund: ServiceHarness,
) -> None:
    body = investment(3_000_000_000)
    created = await apply(fund, body, "same-key")
    again = await apply(fund, body, "same-key")
    assert again == created
    other = await fund.client.post(
        "/v1/applications",
        json=investment(4_000_000_000),
        headers={**fund.firm(), "Idempotency-Key": "same-key"},
    )
    assert other.status_code == 409, other.text
    listed = await fund.client.get("/v1/applications", headers=fund.officer())
    assert [a["id"] for a in listed.json()["items"]] == [created["id"]]
