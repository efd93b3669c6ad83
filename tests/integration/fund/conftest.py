"""A fund service app in-process, on a fresh database and the real broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.fund.main import create_app
from shared.kit.catalogue import load_document
from tests.integration.harness import FIRM_ID, ServiceHarness, Start

GOIF = "global-open-innovation-fund"
MEGA = "bio-mega-fund"
MEMBERS = ("officer-kim", "officer-lee", "officer-han")
"""The Global Open Innovation Fund's committee in the packaged catalogue (quorum 2)."""
MEGA_MEMBERS = ("officer-kim", "officer-lee", "officer-park", "officer-choi", "officer-jung")
"""The mega fund's committee in the packaged catalogue (quorum 3)."""


def default_catalogue() -> dict[str, Any]:
    """The packaged fund catalogue, freshly read, for a test to change."""
    return load_document("services.fund.catalogue", "default.json")


def small_catalogue(mega_capacity: int, goif_capacity: int) -> dict[str, Any]:
    """The packaged catalogue with the two funds' capacities changed."""
    catalogue = default_catalogue()
    capacities = {MEGA: mega_capacity, GOIF: goif_capacity}
    for entry in catalogue["funds"]:
        entry["capacity"] = capacities[entry["id"]]
    return catalogue


def investment(
    amount: int = 3_000_000_000,
    *,
    fund_id: str = GOIF,
    tranches: list[int] | None = None,
    co_investors: list[dict[str, Any]] | None = None,
    cost_reference: str | None = None,
    stage: str = "clinical",
    firm_id: str = FIRM_ID,
    **overrides: Any,
) -> dict[str, Any]:
    amounts = tranches or [amount // 3, amount // 3, amount - 2 * (amount // 3)]
    return {
        "fund_id": fund_id,
        "firm": {
            "firm_id": firm_id,
            "name": "Osong Cell Therapeutics",
            "founded_on": "2015-03-02",
            "size": "sme",
            "cluster": "osong-bio",
            "industry": "advanced_bio",
        },
        "stage": stage,
        "instrument": "equity",
        "amount": amount,
        "pre_money_valuation": 30_000_000_000,
        "tranches": [
            {"amount": a, "milestone": f"milestone {n}"} for n, a in enumerate(amounts, 1)
        ],
        "co_investors": co_investors or [],
        "due_diligence": {"financials": True, "ip": True, "legal": True, "site_visit": True},
        # a cost of its own unless named: one cost is granted once
        "cost_reference": cost_reference or f"TRIAL-2026-{uuid.uuid4().hex[:12]}",
        **overrides,
    }


@pytest.fixture
async def fund(start_service: Start) -> AsyncIterator[ServiceHarness]:
    async with start_service("fund", create_app) as harness:
        yield harness


async def apply(
    harness: ServiceHarness, body: dict[str, Any], key: str, firm_id: str = FIRM_ID
) -> dict[str, Any]:
    response = await harness.client.post(
        "/v1/applications",
        json=body,
        headers={**harness.firm(firm_id), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def vote(
    harness: ServiceHarness,
    application_id: str,
    member: str,
    choice: str = "for",
    *,
    conflict: bool = False,
) -> Any:
    return await harness.client.post(
        f"/v1/applications/{application_id}/votes",
        json={"vote": choice, "reason": "diligence read", "conflict_of_interest": conflict},
        headers=harness.officer(member),
    )


async def release(harness: ServiceHarness, application_id: str, number: int) -> Any:
    return await harness.client.post(
        f"/v1/applications/{application_id}/tranches/{number}/release",
        json={"milestone_evidence": f"milestone {number} report, signed"},
        headers=harness.officer("officer-park"),
    )


async def funds(harness: ServiceHarness) -> dict[str, dict[str, Any]]:
    response = await harness.client.get("/v1/funds", headers=harness.ministry())
    assert response.status_code == 200, response.text
    return {f["id"]: f for f in response.json()}


def firm_number(n: int) -> str:
    """A distinct, well-formed business number per ``n`` (one firm per application)."""
    return f"{100 + n:03d}-45-{10000 + n:05d}"


async def apply_as(harness: ServiceHarness, n: int, **terms: Any) -> str:
    """Firm number ``n`` applies, for its own cost; returns the application id."""
    firm_id = firm_number(n)
    body = investment(firm_id=firm_id, cost_reference=f"COST-{n:04d}", **terms)
    created = await apply(harness, body, f"key-{n}", firm_id=firm_id)
    return str(created["id"])


async def document(harness: ServiceHarness, application_id: str) -> dict[str, Any]:
    response = await harness.client.get(
        f"/v1/applications/{application_id}", headers=harness.officer()
    )
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def events_of(harness: ServiceHarness, application_id: str) -> list[dict[str, Any]]:
    """The application's events as the API serves them."""
    response = await harness.client.get(
        f"/v1/applications/{application_id}/events", headers=harness.officer()
    )
    assert response.status_code == 200, response.text
    served: list[dict[str, Any]] = response.json()
    return served


async def event_count(harness: ServiceHarness) -> int:
    """Every event in the service's log."""
    return len(await harness.service.store.read_all(limit=100_000))


def codes(application: dict[str, Any]) -> list[str]:
    """The codes of the application's rejection reasons."""
    return [r["code"] for r in application["rejection_reasons"]]


def problem_fields(response: Any) -> list[str]:
    """The fields a problem+json response names."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    return [e["field"] for e in response.json().get("errors", [])]
