"""A fund investment's whole life through the API, on both backends and the real broker."""

from __future__ import annotations

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
