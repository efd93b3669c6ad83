"""Composition root of the taxcredit service: `uvicorn services.taxcredit.main:create_app --factory`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.taxcredit.adapters.tables import metadata as taxcredit_tables
from services.taxcredit.domain.events import EVENTS
from services.taxcredit.domain.rates import load_rate_tables
from services.taxcredit.entrypoints.api import applications, router
from services.taxcredit.entrypoints.consumers import subscribe_taxcredit_stages
from services.taxcredit.service_layer import TaxCreditService
from shared.clock import Clock, SystemClock
from shared.contracts import Actor, Role
from shared.domain import load_technologies
from shared.eventstore import EventContext
from shared.kit.catalogue import load_document, strategic_technologies
from shared.service import ServiceRuntime, create_service_app
from shared.settings import ServiceSettings

PUBLISHER = Actor(sub="taxcredit-rate-tables", role=Role.SYSTEM)


def create_app(
    settings: ServiceSettings | None = None,
    *,
    rate_tables: dict[str, Any] | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings(service="taxcredit")
    document = rate_tables or load_document(
        "services.taxcredit.rates", "default.json", settings.catalogue_path
    )
    defaults = load_rate_tables(document)
    catalogue = strategic_technologies()
    technologies = load_technologies(catalogue)
    the_clock = clock or SystemClock()

    async def start_taxcredit(runtime: ServiceRuntime) -> None:
        async with runtime.store.engine.begin() as connection:
            await connection.run_sync(taxcredit_tables.create_all)
        service = TaxCreditService(
            runtime.store, technologies, str(catalogue["version"]), the_clock
        )
        runtime.app.state.service = service
        for table in defaults:  # the default tables are published like any other, once
            await service.publish_once(
                table, EventContext(actor=PUBLISHER, correlation_id=f"seed:{table.version}")
            )
        subscribe_taxcredit_stages(runtime, service)

    app = create_service_app(
        settings,
        title="Tax-credit service",
        description="Certification of national strategic technology investment, M&A "
        "technology value and corporate venture investment tax credits, computed from "
        "pinned rate tables with a trace; certificates anyone can check; clawback.",
        clock=the_clock,
        on_startup=[start_taxcredit],
        events=EVENTS,
    )
    app.include_router(applications)
    app.include_router(router)
    return app
