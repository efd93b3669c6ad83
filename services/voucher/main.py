"""Composition root of the voucher service: `uvicorn services.voucher.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from shared.service import create_service_app
from shared.settings import ServiceSettings


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    return create_service_app(
        settings or ServiceSettings(service="voucher"),
        title="Voucher service",
        description="Startup vouchers for business-support services inside a cluster.",
    )
