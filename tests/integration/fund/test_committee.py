"""The investment committee through the API, on both backends and the real broker: N of M
distinct members approve, a conflicted vote is recorded and not counted, outsiders are
refused, and an application the committee can no longer approve is rejected at once."""

from __future__ import annotations

from typing import Any

from tests.integration.fund.conftest import (
    GOIF,
    MEGA,
    apply_as,
    codes,
    document,
    event_count,
    events_of,
    vote,
)
from tests.integration.harness import ServiceHarness, wait_for_status


def ballots(application: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The application's votes as ``(member, vote, conflict_of_interest)``, in casting order."""
    return [(v["member"], v["vote"], v["conflict_of_interest"]) for v in application["votes"]]


async def verified(fund: ServiceHarness, n: int, fund_id: str = GOIF) -> str:
    application_id = await apply_as(fund, n, fund_id=fund_id)
    await wait_for_status(fund, application_id, "verified")
    return application_id


async def test_quorum_of_distinct_members_approves_and_the_fund_commits(
    fund: ServiceHarness,
) -> None:
    app_id = await verified(fund, 1)

    first = await vote(fund, app_id, "officer-kim")
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "verified"  # one of a quorum of two
    assert ballots(first.json()) == [("officer-kim", "for", False)]

    again = await vote(fund, app_id, "officer-kim")  # the same member cannot count twice
    assert again.status_code == 409, again.text
    also_against = await vote(fund, app_id, "officer-kim", "against")  # nor change their mind
    assert also_against.status_code == 409, also_against.text
    still = await document(fund, app_id)
    assert still["status"] == "verified"
    assert ballots(still) == [("officer-kim", "for", False)]

    second = await vote(fund, app_id, "officer-lee")
    assert second.status_code == 200, second.text
    assert second.json()["status"] == "approved"
    assert second.json()["votes_for"] == 2
    committed = await wait_for_status(fund, app_id, "committed")
    assert ballots(committed) == [("officer-kim", "for", False), ("officer-lee", "for", False)]
    assert committed["quorum"] == 2

    late = await vote(fund, app_id, "officer-han")  # decided already
    assert late.status_code == 409, late.text
    types = [e["type"] for e in await events_of(fund, app_id)]
    assert types == [
        "fund.application.submitted",
        "fund.application.verified",
        "fund.application.vote_recorded",
        "fund.application.vote_recorded",
        "fund.application.approved",
        "fund.investment.committed",
    ]


async def test_only_members_of_the_funds_committee_vote(fund: ServiceHarness) -> None:
    app_id = await verified(fund, 2)
    before = await event_count(fund)

    # officer-park sits on the mega fund's committee, not on the sub-fund's
    outsider = await vote(fund, app_id, "officer-park")
    assert outsider.status_code == 403, outsider.text
    assert outsider.headers["content-type"] == "application/problem+json"
    firm = await fund.client.post(
        f"/v1/applications/{app_id}/votes",
        json={"vote": "for", "reason": "", "conflict_of_interest": False},
        headers=fund.firm(),
    )
    assert firm.status_code == 403, firm.text
    ministry = await fund.client.post(
        f"/v1/applications/{app_id}/votes",
        json={"vote": "for", "reason": "", "conflict_of_interest": False},
        headers=fund.ministry(),
    )
    assert ministry.status_code == 403, ministry.text

    assert await event_count(fund) == before
    unchanged = await document(fund, app_id)
    assert unchanged["status"] == "verified"
    assert unchanged["votes"] == []


async def test_a_conflicted_member_is_recorded_and_not_counted(fund: ServiceHarness) -> None:
    app_id = await verified(fund, 3)

    conflicted = await vote(fund, app_id, "officer-kim", conflict=True)
    assert conflicted.status_code == 200, conflicted.text
    assert ballots(conflicted.json()) == [("officer-kim", "for", True)]
    assert conflicted.json()["votes_for"] == 0

    # had the conflicted vote counted, this second "for" would reach the quorum of two
    lee = await vote(fund, app_id, "officer-lee")
    assert lee.status_code == 200, lee.text
    assert lee.json()["status"] == "verified"
    assert lee.json()["votes_for"] == 1

    recast = await vote(fund, app_id, "officer-kim")  # a conflicted member has voted: once
    assert recast.status_code == 409, recast.text

    han = await vote(fund, app_id, "officer-han")
    assert han.status_code == 200, han.text
    assert han.json()["status"] == "approved"
    committed = await wait_for_status(fund, app_id, "committed")
    assert ballots(committed) == [
        ("officer-kim", "for", True),
        ("officer-lee", "for", False),
        ("officer-han", "for", False),
    ]
    approved = next(
        e for e in await events_of(fund, app_id) if e["type"] == "fund.application.approved"
    )
    tally = approved["payload"]["tally"]
    assert tally["conflicted"] == ["officer-kim"]
    assert sorted(tally["in_favour"]) == ["officer-han", "officer-lee"]


async def test_against_votes_that_make_the_quorum_unreachable_reject(
    fund: ServiceHarness,
) -> None:
    app_id = await verified(fund, 4)

    kim = await vote(fund, app_id, "officer-kim", "against")
    assert kim.status_code == 200, kim.text
    assert kim.json()["status"] == "verified"  # lee and han can still approve

    lee = await vote(fund, app_id, "officer-lee", "against")
    assert lee.status_code == 200, lee.text
    rejected = lee.json()
    assert rejected["status"] == "rejected"
    assert codes(rejected) == ["quorum_unreachable"]
    assert ballots(rejected) == [
        ("officer-kim", "against", False),
        ("officer-lee", "against", False),
    ]

    han = await vote(fund, app_id, "officer-han")  # too late to change anything
    assert han.status_code == 409, han.text
    last = await document(fund, app_id)
    assert last["status"] == "rejected"
    assert len(last["votes"]) == 2
    types = [e["type"] for e in await events_of(fund, app_id)]
    assert types[-1] == "fund.application.rejected"
    assert "fund.investment.committed" not in types


async def test_conflicts_and_against_votes_together_make_the_quorum_unreachable(
    fund: ServiceHarness,
) -> None:
    """The mega fund: five members, quorum three."""
    app_id = await verified(fund, 5, fund_id=MEGA)

    for member in ("officer-kim", "officer-lee"):
        response = await vote(fund, app_id, member, "against")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "verified"  # three members left: three can approve

    conflicted = await vote(fund, app_id, "officer-park", conflict=True)
    assert conflicted.status_code == 200, conflicted.text
    rejected = conflicted.json()
    assert rejected["status"] == "rejected"  # two left cannot make three
    assert codes(rejected) == ["quorum_unreachable"]
    assert ballots(rejected) == [
        ("officer-kim", "against", False),
        ("officer-lee", "against", False),
        ("officer-park", "for", True),
    ]
    assert rejected["votes_for"] == 0
    refused = await vote(fund, app_id, "officer-choi")
    assert refused.status_code == 409, refused.text
