"""Composition root of the fund service: `uvicorn services.fund.main:create_app --factory`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.fund.adapters.tables import capacity, ledger_entries, payout_attempts, support_grants
from services.fund.domain.events import CAPACITY_EVENTS, EVENTS
from services.fund.domain.funds import catalogue_version, load_funds
from services.fund.entrypoints.api import applications, router
from services.fund.service_layer import FundService
from shared.clock import Clock, SystemClock
from shared.contracts import Actor, Role
from shared.kit.app import programme_app
from shared.kit.catalogue import catalogue_for
from shared.kit.payouts import PayoutGateway, payouts_for
from shared.kit.support import SupportBook, default_policy
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings

CATALOGUE = Actor(sub="fund-catalogue", role=Role.SYSTEM)
"""Who records what the catalogue does to a fund's capacity."""
ABOUT = """Fund service.
Investments from the public mega fund and its sub-funds: verification against the fund's
remit and capacity, committee votes, commitment, tranches paid on milestones, and the
co-investments that become tax-credit claims."""


def create_app(
    settings: ServiceSettings | None = None,
    *,
    catalogue: dict[str, Any] | None = None,
    clock: Clock | None = None,
    payouts: PayoutGateway | None = None,
) -> FastAPI:
    """The fund app: the packaged fund catalogue, or ``catalogue`` / ``settings.catalogue_path``;
    tranches are paid by the treasury at ``settings.treasury_url``, else into the service's
    own ledger (or by ``payouts``)."""
    settings = settings or ServiceSettings(service="fund")
    package = "services.fund.catalogue"
    document = catalogue_for(settings.catalogue_path, package, "default.json", catalogue)
    funds = load_funds(document)
    policy, _ = default_policy(settings.support_policy_path)
    support = SupportBook(support_grants, "fund", policy)
    the_clock = clock or SystemClock()

    async def start(runtime: ServiceRuntime) -> FundService:
        await capacity.apply_catalogue(
            runtime.store,
            {f.id: f.capacity for f in funds.values()},
            CAPACITY_EVENTS,
            stream="capacity",
            document=document,
            actor=CATALOGUE,
        )
        gateway, attempts = payouts_for(
            settings, runtime.store.engine, ledger_entries, payout_attempts, payouts
        )
        return FundService(
            runtime.store,
            funds,
            catalogue_version(document),
            support,
            gateway,
            the_clock,
            attempts=attempts,
        )

    routers = [applications, router]
    return programme_app(settings, ABOUT, start, EVENTS, routers, the_clock, support=support)
