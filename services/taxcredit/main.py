"""Composition root of the taxcredit service: `uvicorn services.taxcredit.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ServiceSettings(service="taxcredit"),
        title="Tax-credit service",
        description="Certification of national strategic technology, M&A and investment tax credits.",
    )
