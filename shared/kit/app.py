"""A programme service's app: the shared one, with the programme's tables, service and stages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI

from shared.clock import Clock
from shared.domain import EventRegistry
from shared.kit.application import ApplicationService
from shared.kit.payouts import PayoutUnknown, PaysOverTheNetwork, pay_due_periodically
from shared.kit.stages import subscribe_stages
from shared.kit.support import SupportBook, support_router
from shared.service import ServiceRuntime, create_service_app
from shared.settings import ServiceSettings

Start = Callable[[ServiceRuntime], Awaitable[ApplicationService[Any]]]
"""Builds the programme's service once the runtime (database, broker) is up."""


def programme_app(
    settings: ServiceSettings,
    about: str,
    start: Start,
    events: EventRegistry,
    routers: Sequence[APIRouter],
    clock: Clock,
    support: SupportBook | None = None,
) -> FastAPI:
    """The app of one programme service.

    ``about``: the title on its first line, the description after. At startup (once its
    schema is migrated, see :mod:`shared.migrations`) ``start`` builds its service (kept in
    ``app.state.service``), and the service's stages consume its topic. ``support``: the
    programme's read model of every programme's grants, fed from their topics and
    published at ``GET /v1/support-policy``. A service whose payouts a treasury makes has
    its payout worker run here too.
    """
    title, _, description = about.strip().partition("\n")

    async def startup(runtime: ServiceRuntime) -> None:
        service = await start(runtime)
        runtime.app.state.service = service
        stages = service.stages()
        if stages.batches or stages.singles:
            subscribe_stages(
                runtime,
                f"{settings.service}-stages",
                batches=stages.batches,
                singles=stages.singles,
            )
        if support is not None:
            support.subscribe(runtime)
        if isinstance(service, PaysOverTheNetwork) and service.attempts is not None:
            worker = pay_due_periodically(service.pay_due, service.payouts_due)
            runtime.spawn(worker, name=f"{settings.service}-payouts")

    app = create_service_app(
        settings,
        title=title.strip().rstrip("."),
        description=" ".join(description.split()),
        clock=clock,
        on_startup=[startup],
        events=events,
        routers=[*routers, *([support_router()] if support is not None else [])],
        domain_errors={PayoutUnknown: (503, "Treasury unavailable")},
    )
    if support is not None:
        app.state.support = support
    return app
