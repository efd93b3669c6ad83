"""A fund investment's whole life through the API, on both backends and the real broker."""

from __future__ import annotations

import asyncio

from tests.integration.fund.conftest import GOIF, apply, funds, investment, release, vote
from tests.integration.harness import ServiceHarness, wait_for_status, wait_until

MEGA = "bio-mega-fund"


async def test_application_to_last_tranche(fund: ServiceHarness) -> None:
    before = await funds(fund)
    created = await apply(
        fund, investment(3_000_000_000, tranches=[1_000_000_000, 2_000_000_000]), "k1"
    )
    app_id = created["id"]
    assert created["status"] == "submitted"

    await wait_for_status(fund, app_id, "verified")
    assert (await vote(fund, app_id, "officer-kim")).status_code == 200
    assert (await vote(fund, app_id, "officer-lee")).status_code == 200
    committed = await wait_for_status(fund, app_id, "committed")
    assert [t["status"] for t in committed["tranches"]] == ["planned", "planned"]
    figures = await funds(fund)
    assert figures[GOIF]["committed"] == 3_000_000_000
    assert figures[GOIF]["available"] == before[GOIF]["available"] - 3_000_000_000
    assert figures[MEGA]["available"] == before[MEGA]["available"] - 3_000_000_000

    assert (await release(fund, app_id, 2)).status_code == 409  # in order: 1 first
    assert (await release(fund, app_id, 1)).status_code == 200
    await wait_until(fund, app_id, lambda a: a["tranches"][0]["status"] == "paid")
    assert (await release(fund, app_id, 2)).status_code == 200
    completed = await wait_for_status(fund, app_id, "completed")
    assert [t["status"] for t in completed["tranches"]] == ["paid", "paid"]
    assert all(t["payout_id"] for t in completed["tranches"])
    assert completed["disbursed"] == 3_000_000_000
    figures = await funds(fund)
    assert figures[GOIF]["committed"] == 0
    assert figures[GOIF]["disbursed"] == 3_000_000_000
    assert figures[GOIF]["available"] == before[GOIF]["available"] - 3_000_000_000
    assert figures[MEGA]["disbursed"] == 3_000_000_000


async def test_a_cost_the_fund_already_invested_in_is_not_invested_in_twice(
    fund: ServiceHarness,
) -> None:
    cost = "TRIAL-2026-SAME-COST"
    first = await apply(fund, investment(2_000_000_000, cost_reference=cost), "first")
    await wait_for_status(fund, first["id"], "verified")
    for member in ("officer-kim", "officer-lee"):
        assert (await vote(fund, first["id"], member)).status_code == 200
    await wait_for_status(fund, first["id"], "committed")
    support = fund.service.support
    for _ in range(500):  # the grant reaches the support read model through the broker
        async with fund.service.store.transaction() as uow:
            [facts] = await support.facts(uow, [("123-45-67890", 2026, cost)])
        if facts.supported_elsewhere:
            break
        await asyncio.sleep(0.02)

    second = await apply(fund, investment(1_000_000_000, cost_reference=cost), "second")
    rejected = await wait_for_status(fund, second["id"], "rejected")

    assert [r["code"] for r in rejected["rejection_reasons"]] == ["duplicate_support"]
    assert first["id"] in rejected["rejection_reasons"][0]["message"]


async def test_two_investments_verified_for_one_cost_are_committed_once(
    fund: ServiceHarness,
) -> None:
    """Checked again at the grant: both verified before either is committed, the second to
    come to commitment is rejected there, and its capacity goes back to the funds."""
    cost = "TRIAL-2026-ONE-COST"
    before = await funds(fund)
    ids = []
    for key, amount in (("first", 2_000_000_000), ("second", 1_000_000_000)):
        created = await apply(fund, investment(amount, cost_reference=cost), key)
        await wait_for_status(fund, created["id"], "verified")
        ids.append(created["id"])
    for app_id in ids:
        for member in ("officer-kim", "officer-lee"):
            assert (await vote(fund, app_id, member)).status_code == 200

    settled = [
        await wait_until(fund, app_id, lambda a: a["status"] in ("committed", "rejected"))
        for app_id in ids
    ]
    [committed] = [a for a in settled if a["status"] == "committed"]
    [rejected] = [a for a in settled if a["status"] == "rejected"]
    assert [r["code"] for r in rejected["rejection_reasons"]] == ["duplicate_support"]
    assert committed["id"] in rejected["rejection_reasons"][0]["message"]
    figures = await funds(fund)
    for pool in (GOIF, MEGA):  # only the committed investment holds capacity
        assert figures[pool]["available"] == before[pool]["available"] - committed["amount"]
