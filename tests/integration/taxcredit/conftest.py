"""A taxcredit service app in-process, on a fresh database and the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.taxcredit.main import create_app
from tests.integration.harness import FIRM_ID, ServiceHarness, Start


def firm(**overrides: Any) -> dict[str, Any]:
    return {
        "firm_id": FIRM_ID,
        "name": "Osong Cell Therapeutics",
        "founded_on": "2015-03-02",
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
        **overrides,
    }


def strategic(
    current_year: int,
    previous_years: list[int] | None = None,
    *,
    size: str = "sme",
    reference: str = "FAC-1",
    technology: str = "biopharma-animal-cell-culture",
    tax_year: int = 2026,
    **firm_overrides: Any,
) -> dict[str, Any]:
    return {
        "programme": "strategic_investment",
        "tax_year": tax_year,
        "firm": firm(size=size, **firm_overrides),
        "technology": technology,
        "investment": {"current_year": current_year, "previous_years": previous_years or []},
        "facility_reference": reference,
    }


def mna(technology_value: int, *, reference: str = "DEAL-1", **firm_overrides: Any) -> dict:
    return {
        "programme": "mna_technology_value",
        "tax_year": 2026,
        "firm": firm(technology_innovative=True, **firm_overrides),
        "technology": "biopharma-purification",
        "target_firm_id": "555-55-55555",
        "technology_value": technology_value,
        "deal_reference": reference,
    }


def venture(amount: int, *, reference: str = "INV-1", **firm_overrides: Any) -> dict:
    return {
        "programme": "corporate_venture_investment",
        "tax_year": 2026,
        "firm": firm(size="large", **firm_overrides),
        "investee": "global-open-innovation-fund",
        "amount_invested": amount,
        "investment_reference": reference,
    }


@pytest.fixture
async def taxcredit(start_service: Start) -> AsyncIterator[ServiceHarness]:
    async with start_service("taxcredit", create_app) as harness:
        yield harness


async def submit(harness: ServiceHarness, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = await harness.client.post(
        "/v1/applications", json=body, headers={**harness.firm(), "Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def decide(
    harness: ServiceHarness, application_id: str, officer: str, decision: str = "approve"
) -> Any:
    return await harness.client.post(
        f"/v1/applications/{application_id}/decisions",
        json={"decision": decision, "reason": "figures checked"},
        headers=harness.officer(officer),
    )
