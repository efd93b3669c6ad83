"""Composition root of the voucher service: `uvicorn services.voucher.main:create_app --factory`."""

from __future__ import annotations

import contextlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.voucher.adapters import projection
from services.voucher.adapters.payouts import LedgerPayouts, PayoutGateway
from services.voucher.adapters.tables import metadata as voucher_tables
from services.voucher.domain.errors import Conflict, NotFound, Unprocessable
from services.voucher.domain.programmes import load_catalogue
from services.voucher.entrypoints.api import router
from services.voucher.entrypoints.consumers import expire_vouchers_periodically, subscribe_stages
from services.voucher.service_layer import DuplicateProvider, VoucherService
from shared.clock import Clock, SystemClock
from shared.contracts import Actor, Role
from shared.eventstore import ConcurrencyConflict, EventContext
from shared.service import ServiceRuntime, create_service_app
from shared.settings import ServiceSettings

SEEDER = Actor(sub="voucher-catalogue", role=Role.SYSTEM)


def default_catalogue() -> dict[str, Any]:
    text = resources.files("services.voucher.catalogue").joinpath("default.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def create_app(
    settings: ServiceSettings | None = None,
    *,
    catalogue: dict[str, Any] | None = None,
    payouts: PayoutGateway | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    settings = settings or ServiceSettings(service="voucher")
    document = catalogue or _catalogue_from(settings) or default_catalogue()
    programmes = load_catalogue(document)
    the_clock = clock or SystemClock()

    async def start_voucher(runtime: ServiceRuntime) -> None:
        async with runtime.store.engine.begin() as connection:
            await connection.run_sync(voucher_tables.create_all)
            await projection.ensure_budgets(
                connection, {p.id: p.budget_total for p in programmes.values()}
            )
        service = VoucherService(runtime.store, programmes, payouts or LedgerPayouts(), the_clock)
        runtime.app.state.voucher = service
        await _seed_providers(service, document.get("providers", []))
        subscribe_stages(runtime, service)
        runtime.spawn(expire_vouchers_periodically(service), name="voucher-expiry")

    app = create_service_app(
        settings,
        title="Voucher service",
        description="Startup vouchers for business-support services inside a cluster: "
        "application, verification, officer approval, issue, redemption and payout.",
        clock=the_clock,
        on_startup=[start_voucher],
        domain_errors={
            NotFound: (404, "Not found"),
            Conflict: (409, "Conflict"),
            ConcurrencyConflict: (409, "Conflict"),
            Unprocessable: (422, "Invalid request"),
        },
    )
    app.include_router(router)
    return app


def _catalogue_from(settings: ServiceSettings) -> dict[str, Any] | None:
    path = settings.catalogue_path
    if path is None:
        return None
    data: dict[str, Any] = json.loads(Path(path).read_text())
    return data


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
