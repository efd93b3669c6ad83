"""A voucher service app in-process, on a fresh database, with a clock the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.voucher.main import create_app
from tests.integration.harness import (
    FIRM_ID,
    OTHER_FIRM_ID,
    SECRET,
    ServiceHarness,
    Start,
    wait_for_status,
)

VoucherHarness = ServiceHarness


def application_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "programme_id": "cluster-startup-support-2026",
        "firm": {
            "firm_id": FIRM_ID,
            "name": "Hanbit Bio",
            "founded_on": "2023-03-02",
            "size": "sme",
            "cluster": "osong-bio",
            "industry": "advanced_bio",
        },
        "service_category": "legal",
        "requested_amount": 8_000_000,
        "purpose": "patent filing for a cell-culture purification process",
    }
    for key, value in overrides.items():
        if key in body["firm"]:
            body["firm"][key] = value
        else:
            body[key] = value
    return body


@pytest.fixture
async def voucher(start_service: Start) -> AsyncIterator[ServiceHarness]:
    async with start_service("voucher", create_app) as harness:
        yield harness


__all__ = [
    "FIRM_ID",
    "OTHER_FIRM_ID",
    "SECRET",
    "VoucherHarness",
    "application_body",
    "wait_for_status",
]
