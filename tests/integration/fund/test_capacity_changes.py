"""A fund's capacity changed in the catalogue file is applied at the next start, as an
event on the fund's capacity stream: once, whatever the restarts; a cut below what is
committed stops the service from starting and changes nothing. Oversight's figures follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.fund.domain.funds import load_funds
from services.fund.main import create_app
from services.oversight.adapters import queries
from shared.domain.pools import CutRefused
from tests.integration.fund.conftest import (
    GOIF,
    MEGA,
    apply,
    default_catalogue,
    funds,
    investment,
    small_catalogue,
    vote,
)
from tests.integration.harness import ServiceHarness, Start, wait_for_status
from tests.integration.oversight_figures import oversight_money

CAPACITY = ("fund.capacity.opened", "fund.capacity.topped_up", "fund.capacity.cut")
FIGURES = ("capacity", "committed", "disbursed", "available")


async def capacity_events(harness: ServiceHarness) -> list[dict[str, Any]]:
    return [
        e.envelope
        for e in await harness.service.store.read_all(limit=10_000)
        if e.envelope["type"] in CAPACITY
    ]


async def figures(harness: ServiceHarness) -> dict[str, dict[str, int]]:
    return {f: {k: v[k] for k in FIGURES} for f, v in (await funds(harness)).items()}


async def test_capacity_changes_are_recorded_once_and_a_cut_below_commitments_is_refused(
    start_service: Start, tmp_path: Path
) -> None:
    async with start_service("fund", create_app) as fund:
        opened = await capacity_events(fund)
        assert [(e["aggregate_id"], e["payload"]["total"]) for e in opened] == [
            (f"capacity:{MEGA}", 1_000_000_000_000),
            (f"capacity:{GOIF}", 200_000_000_000),
        ]
        created = await apply(fund, investment(3_000_000_000), "committed")
        await wait_for_status(fund, created["id"], "verified")
        for member in ("officer-kim", "officer-lee"):
            assert (await vote(fund, created["id"], member)).status_code == 200
        await wait_for_status(fund, created["id"], "committed")

    async with start_service("fund", create_app) as fund:  # the same file: nothing
        assert await capacity_events(fund) == opened

    topped = small_catalogue(1_000_000_000_000, 250_000_000_000)
    async with start_service("fund", create_app, catalogue=topped) as fund:
        [top_up] = (await capacity_events(fund))[2:]
        assert (top_up["aggregate_id"], top_up["type"]) == (
            f"capacity:{GOIF}",
            "fund.capacity.topped_up",
        )
        assert {k: top_up["payload"][k] for k in ("fund_id", "change", "new_total")} == {
            "fund_id": GOIF,
            "change": 50_000_000_000,
            "new_total": 250_000_000_000,
        }
        assert (top_up["payload"]["previous_available"], top_up["payload"]["new_available"]) == (
            197_000_000_000,
            247_000_000_000,
        )
        assert (await figures(fund))[GOIF] == {
            "capacity": 250_000_000_000,
            "committed": 3_000_000_000,
            "disbursed": 0,
            "available": 247_000_000_000,
        }
    async with start_service("fund", create_app, catalogue=topped) as fund:
        assert len(await capacity_events(fund)) == 3

    cut = small_catalogue(900_000_000_000, 250_000_000_000)
    async with start_service("fund", create_app, catalogue=cut) as fund:
        [cut_event] = (await capacity_events(fund))[3:]
        assert (cut_event["type"], cut_event["payload"]["fund_id"]) == ("fund.capacity.cut", MEGA)
        assert cut_event["payload"]["change"] == 100_000_000_000
        now = await figures(fund)
        assert now[MEGA] == {
            "capacity": 900_000_000_000,
            "committed": 3_000_000_000,
            "disbursed": 0,
            "available": 897_000_000_000,
        }
        funds = queries.Budgets({}, load_funds(default_catalogue()))
        assert await oversight_money(fund, tmp_path, "fund", funds) == now

    with pytest.raises(CutRefused, match=GOIF) as refused:
        async with start_service(
            "fund", create_app, catalogue=small_catalogue(900_000_000_000, 2_000_000_000)
        ):
            pass
    assert "fund capacity" in str(refused.value) and "3,000,000,000 won is held" in str(
        refused.value
    )
    async with start_service("fund", create_app, catalogue=cut) as fund:
        assert len(await capacity_events(fund)) == 4
        assert await figures(fund) == now
