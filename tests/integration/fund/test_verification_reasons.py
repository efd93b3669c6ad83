"""Why verification rejects, as a firm reads it through the API (both backends, real broker):
the fund's remit, the due-diligence checklist, and what the fund (or its parent) has left."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.fund.main import create_app
from tests.integration.fund.conftest import (
    GOIF,
    MEGA,
    apply_as,
    codes,
    events_of,
    funds,
    small_catalogue,
    vote,
)
from tests.integration.harness import ServiceHarness, Start, wait_for_status

BILLION = 1_000_000_000


@pytest.fixture
async def small_funds(start_service: Start) -> AsyncIterator[ServiceHarness]:
    """The mega fund with 12 billion won, 10 of them carved out for the sub-fund."""
    catalogue = small_catalogue(mega_capacity=12 * BILLION, goif_capacity=10 * BILLION)
    async with start_service("fund", create_app, catalogue=catalogue) as harness:
        yield harness


async def rejected_at_verification(fund: ServiceHarness, application_id: str) -> list[str]:
    rejected = await wait_for_status(fund, application_id, "rejected")
    [event] = [
        e for e in await events_of(fund, application_id) if e["type"] == "fund.application.rejected"
    ]
    assert event["payload"]["stage"] == "verification"
    return codes(rejected)


async def test_an_mna_investment_is_outside_the_sub_funds_remit(fund: ServiceHarness) -> None:
    app_id = await apply_as(fund, 1, fund_id=GOIF, stage="mna")
    assert await rejected_at_verification(fund, app_id) == ["outside_remit"]
    rejected = await wait_for_status(fund, app_id, "rejected")
    [reason] = rejected["rejection_reasons"]
    assert "mna" in reason["message"]
    assert "mna" not in rejected["verification"]["remit"]["stages"]

    # the mega fund's remit has M&A: the same terms pass there
    at_mega = await apply_as(fund, 2, fund_id=MEGA, stage="mna")
    await wait_for_status(fund, at_mega, "verified")


async def test_due_diligence_not_done_is_incomplete(fund: ServiceHarness) -> None:
    checklist = {"financials": True, "ip": True, "legal": False, "site_visit": False}
    app_id = await apply_as(fund, 3, due_diligence=checklist)
    assert await rejected_at_verification(fund, app_id) == ["incomplete_due_diligence"]
    [reason] = (await wait_for_status(fund, app_id, "rejected"))["rejection_reasons"]
    assert "legal" in reason["message"] and "site_visit" in reason["message"]
    assert "financials" not in reason["message"]


async def test_more_than_the_fund_has_left_is_insufficient_capacity(
    small_funds: ServiceHarness,
) -> None:
    fund = small_funds
    first = await apply_as(fund, 4, amount=6 * BILLION)
    await wait_for_status(fund, first, "verified")
    for member in ("officer-kim", "officer-lee"):
        assert (await vote(fund, first, member)).status_code == 200
    await wait_for_status(fund, first, "committed")
    assert (await funds(fund))[GOIF]["available"] == 4 * BILLION

    too_much = await apply_as(fund, 5, amount=5 * BILLION)
    assert await rejected_at_verification(fund, too_much) == ["insufficient_capacity"]
    rejected = await wait_for_status(fund, too_much, "rejected")
    assert rejected["verification"]["available_capacity"] == 4 * BILLION

    exactly_what_is_left = await apply_as(fund, 6, amount=4 * BILLION)
    await wait_for_status(fund, exactly_what_is_left, "verified")


async def test_the_parent_funds_capacity_limits_its_sub_fund(small_funds: ServiceHarness) -> None:
    fund = small_funds
    at_mega = await apply_as(fund, 7, fund_id=MEGA, amount=6 * BILLION)
    await wait_for_status(fund, at_mega, "verified")
    for member in ("officer-kim", "officer-lee", "officer-park"):
        assert (await vote(fund, at_mega, member)).status_code == 200
    await wait_for_status(fund, at_mega, "committed")
    figures = await funds(fund)
    assert figures[MEGA]["available"] == 6 * BILLION
    assert figures[GOIF]["available"] == 10 * BILLION  # its own pool is untouched

    # the sub-fund's own pool has 10 billion; its parent has 6 left
    app_id = await apply_as(fund, 8, fund_id=GOIF, amount=7 * BILLION)
    assert await rejected_at_verification(fund, app_id) == ["insufficient_capacity"]
    rejected = await wait_for_status(fund, app_id, "rejected")
    assert rejected["verification"]["available_capacity"] == 6 * BILLION


async def test_every_failing_check_is_reported_in_order(small_funds: ServiceHarness) -> None:
    checklist = {"financials": False, "ip": True, "legal": True, "site_visit": True}
    app_id = await apply_as(
        small_funds, 9, stage="mna", amount=11 * BILLION, due_diligence=checklist
    )
    assert await rejected_at_verification(small_funds, app_id) == [
        "outside_remit",
        "incomplete_due_diligence",
        "insufficient_capacity",
    ]
