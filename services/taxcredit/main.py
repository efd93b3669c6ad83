"""Composition root of the taxcredit service: `uvicorn services.taxcredit.main:create_app --factory`."""

from __future__ import annotations

from fastapi import FastAPI

from services.taxcredit.adapters.tables import support_grants
from services.taxcredit.domain.events import EVENTS
from services.taxcredit.domain.rates import load_rate_tables
from services.taxcredit.entrypoints.api import applications, router
from services.taxcredit.entrypoints.consumers import subscribe_fund_co_investments
from services.taxcredit.service_layer import TaxCreditService
from shared.clock import Clock, SystemClock
from shared.contracts import Actor, Role
from shared.eventstore import EventContext
from shared.kit.app import programme_app
from shared.kit.catalogue import load_document, strategic_technologies
from shared.kit.support import SupportBook, default_policy
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings

PUBLISHER = Actor(sub="taxcredit-rate-tables", role=Role.SYSTEM)
ABOUT = """Tax-credit service.
Certification of national strategic technology investment, M&A technology value and
corporate venture investment tax credits, computed from pinned rate tables with a trace;
cross-programme support limits; claims opened for the fund's corporate co-investments;
certificates anyone can check; clawback."""


def create_app(settings: ServiceSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """The taxcredit app: its default rate tables, or those of ``settings.catalogue_path``;
    the packaged support policy, or that of ``settings.support_policy_path``."""
    settings = settings or ServiceSettings(service="taxcredit")
    document = load_document("services.taxcredit.rates", "default.json", settings.catalogue_path)
    defaults = load_rate_tables(document)
    the_clock = clock or SystemClock()
    policy, _ = default_policy(settings.support_policy_path)
    book = SupportBook(support_grants, "taxcredit", policy)

    async def start(runtime: ServiceRuntime) -> TaxCreditService:
        service = TaxCreditService(runtime.store, strategic_technologies(), the_clock, book)
        for table in defaults:  # the default tables are published like any other, once
            context = EventContext(actor=PUBLISHER, correlation_id=f"seed:{table.version}")
            await service.publish_once(table, context)
        subscribe_fund_co_investments(runtime, service)
        return service

    routers = [applications, router]
    return programme_app(settings, ABOUT, start, EVENTS, routers, the_clock, support=book)
