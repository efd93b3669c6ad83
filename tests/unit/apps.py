"""Each service's app as its composition root builds it, on an in-memory SQLite database
(nothing connects before the app's lifespan starts): for tests of its routes and documents."""

from __future__ import annotations

from fastapi import FastAPI

from shared.settings import ServiceSettings

SERVICES = ("voucher", "taxcredit", "fund", "oversight")


def service_app(service: str) -> FastAPI:
    module = __import__(f"services.{service}.main", fromlist=["create_app"])
    settings = ServiceSettings(
        service=service, jwt_secret="s" * 40, database_url="sqlite+aiosqlite:///:memory:"
    )
    app: FastAPI = module.create_app(settings)
    return app
