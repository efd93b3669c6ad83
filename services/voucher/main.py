"""Composition root of the voucher service: `uvicorn services.voucher.main:create_app --factory`."""

from __future__ import annotations

import contextlib
from typing import Any

from fastapi import FastAPI

from services.voucher.adapters import projection
from services.voucher.adapters.tables import (
    budgets,
    ledger_entries,
    payout_attempts,
    support_grants,
)
from services.voucher.domain.errors import DuplicateProvider
from services.voucher.domain.events import BUDGET_EVENTS, EVENTS, PROGRAMME
from services.voucher.domain.programmes import load_catalogue
from services.voucher.entrypoints.api import applications, router
from services.voucher.entrypoints.consumers import expire_vouchers_periodically
from services.voucher.service_layer import VoucherService
from shared.clock import Clock, SystemClock
from shared.contracts import Actor, Role
from shared.eventstore import EventContext
from shared.kit.app import programme_app
from shared.kit.catalogue import catalogue_for, load_document
from shared.kit.payouts import PayoutGateway, payouts_for
from shared.kit.support import SupportBook, default_policy
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings

SEEDER = Actor(sub="voucher-catalogue", role=Role.SYSTEM)
ABOUT = """Voucher service.
Startup vouchers for business-support services inside a cluster: application,
verification (with the cross-programme support limits), officer approval, issue,
redemption and payout."""


def default_catalogue() -> dict[str, Any]:
    return load_document("services.voucher.catalogue", "default.json")


def create_app(
    settings: ServiceSettings | None = None,
    *,
    catalogue: dict[str, Any] | None = None,
    payouts: PayoutGateway | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings(service="voucher")
    document = catalogue_for(
        settings.catalogue_path, "services.voucher.catalogue", "default.json", catalogue
    )
    programmes = load_catalogue(document)
    the_clock = clock or SystemClock()
    policy, _ = default_policy(settings.support_policy_path)
    support = SupportBook(support_grants, PROGRAMME, policy)

    async def start(runtime: ServiceRuntime) -> VoucherService:
        await budgets.apply_catalogue(
            runtime.store,
            {p.id: p.budget_total for p in programmes.values()},
            BUDGET_EVENTS,
            stream="budget",
            document=document,
            actor=SEEDER,
        )
        gateway, attempts = payouts_for(
            settings, runtime.store.engine, ledger_entries, payout_attempts, payouts
        )
        service = VoucherService(
            runtime.store,
            programmes,
            gateway,
            the_clock,
            support,
            attempts=attempts,
            max_payout_attempts=settings.payout_max_attempts,
        )
        await _seed_providers(service, document.get("providers", []))
        runtime.spawn(expire_vouchers_periodically(service), name="voucher-expiry")
        return service

    routers = [applications, router]
    return programme_app(settings, ABOUT, start, EVENTS, routers, the_clock, support=support)


async def _seed_providers(service: VoucherService, seeds: list[dict[str, Any]]) -> None:
    async with service.store.engine.connect() as connection:
        known = {p["id"] for p in await projection.list_providers(connection)}
    for seed in seeds:
        if seed["id"] in known:
            continue

        async def register(uow: Any, seed: dict[str, Any] = seed) -> None:
            await service.register_provider(
                uow,
                seed["id"],
                seed["name"],
                list(seed["service_categories"]),
                EventContext(actor=SEEDER, correlation_id=f"seed:{seed['id']}"),
            )

        with contextlib.suppress(DuplicateProvider):  # another replica seeded it first
            await service.in_transaction(register)
