"""A programme's budget changed in the catalogue file is applied at the next start, as an
event: a top-up or a cut, once, whatever the restarts; a cut below what approvals hold
stops the service from starting and changes nothing. Oversight's figures follow."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest

from services.oversight.adapters import queries
from services.voucher.main import create_app, default_catalogue
from shared.contracts.canonical import canonical_json
from shared.domain.pools import CutRefused
from tests.integration.harness import ServiceHarness, Start
from tests.integration.oversight_figures import oversight_money
from tests.integration.voucher.conftest import application_body, wait_for_status

CLUSTER = "cluster-startup-support-2026"
BIO = "bio-kendall-voucher-2026"
BUDGETS = ("voucher.budget.opened", "voucher.budget.topped_up", "voucher.budget.cut")


def catalogue(version: str, **budgets: int) -> dict[str, Any]:
    """The packaged catalogue with some programmes' budgets changed."""
    document = copy.deepcopy(default_catalogue())
    document["version"] = version
    for programme in document["programmes"]:
        programme["budget_total"] = budgets.get(programme["id"], programme["budget_total"])
    return document


async def budget_events(harness: ServiceHarness) -> list[dict[str, Any]]:
    return [
        e.envelope
        for e in await harness.service.store.read_all(limit=10_000)
        if e.envelope["type"] in BUDGETS
    ]


async def money(harness: ServiceHarness) -> dict[str, dict[str, int]]:
    response = await harness.client.get("/v1/programmes", headers=harness.ministry())
    assert response.status_code == 200, response.text
    return {p["id"]: p["money"] for p in response.json()}


async def test_budget_changes_are_recorded_once_and_a_cut_below_what_is_held_is_refused(
    start_service: Start, tmp_path: Path
) -> None:
    async with start_service("voucher", create_app) as voucher:
        opened = await budget_events(voucher)
        assert [(e["aggregate_id"], e["type"], e["payload"]["total"]) for e in opened] == [
            (f"budget:{BIO}", "voucher.budget.opened", 2_000_000_000),
            (f"budget:{CLUSTER}", "voucher.budget.opened", 5_000_000_000),
        ]
        assert opened[0]["actor"] == {"sub": "voucher-catalogue", "role": "system"}
        created = await voucher.client.post(
            "/v1/applications",
            json=application_body(requested_amount=8_000_000),
            headers={**voucher.firm(), "Idempotency-Key": "held"},
        )
        assert created.status_code == 201, created.text
        application_id = created.json()["id"]
        await wait_for_status(voucher, application_id, "verified")
        approved = await voucher.client.post(
            f"/v1/applications/{application_id}/decisions",
            json={"decision": "approve", "reason": "eligible"},
            headers=voucher.officer(),
        )
        assert approved.status_code == 200, approved.text

    async with start_service("voucher", create_app) as voucher:  # the same file: nothing
        assert await budget_events(voucher) == opened

    topped = catalogue("2026-2", **{CLUSTER: 6_000_000_000})
    async with start_service("voucher", create_app, catalogue=topped) as voucher:
        [top_up] = (await budget_events(voucher))[2:]
        assert (top_up["aggregate_id"], top_up["aggregate_seq"], top_up["type"]) == (
            f"budget:{CLUSTER}",
            2,
            "voucher.budget.topped_up",
        )
        assert top_up["payload"] == {
            "programme_id": CLUSTER,
            "previous_total": 5_000_000_000,
            "new_total": 6_000_000_000,
            "change": 1_000_000_000,
            "previous_available": 4_992_000_000,
            "new_available": 5_992_000_000,
            "catalogue_version": "2026-2",
            "catalogue_digest": hashlib.sha256(canonical_json(topped)).hexdigest(),
        }
        assert (await money(voucher))[CLUSTER] == {
            "budget_total": 6_000_000_000,
            "committed": 8_000_000,
            "paid": 0,
            "available": 5_992_000_000,
        }
    async with start_service("voucher", create_app, catalogue=topped) as voucher:
        assert len(await budget_events(voucher)) == 3  # a restart with the same file

    cut = catalogue("2026-3", **{CLUSTER: 3_000_000_000, BIO: 1_500_000_000})
    async with start_service("voucher", create_app, catalogue=cut) as voucher:
        changes = (await budget_events(voucher))[3:]
        assert [
            (e["payload"]["programme_id"], e["type"], e["payload"]["change"]) for e in changes
        ] == [
            (BIO, "voucher.budget.cut", 500_000_000),
            (CLUSTER, "voucher.budget.cut", 3_000_000_000),
        ]
        figures = await money(voucher)
        assert figures[CLUSTER]["budget_total"] == 3_000_000_000
        assert figures[CLUSTER]["available"] == 2_992_000_000
        assert figures[BIO]["budget_total"] == figures[BIO]["available"] == 1_500_000_000
        packaged = {p["id"]: p["budget_total"] for p in default_catalogue()["programmes"]}
        budgets = queries.Budgets(packaged, {})
        assert await oversight_money(voucher, tmp_path, "voucher", budgets) == figures

    too_far = catalogue("2026-4", **{CLUSTER: 5_000_000, BIO: 9_000_000_000})
    with pytest.raises(CutRefused, match=CLUSTER) as refused:
        async with start_service("voucher", create_app, catalogue=too_far):
            pass
    assert "8,000,000 won is held" in str(refused.value)
    async with start_service("voucher", create_app, catalogue=cut) as voucher:
        assert len(await budget_events(voucher)) == 5  # nothing of the refused file was written
        assert await money(voucher) == figures
