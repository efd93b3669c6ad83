"""Composition root of the oversight service: `uvicorn services.oversight.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ServiceSettings(service="oversight"),
        title="Oversight service",
        description="Read-only: live streams and dashboard for ministries, replay and verification for auditors.",
    )
