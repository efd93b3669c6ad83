"""Composition root of the fund service: `uvicorn services.fund.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ServiceSettings(service="fund"),
        title="Fund service",
        description="Investments from the public mega fund and its sub-funds.",
    )
