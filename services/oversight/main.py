"""Composition root of the oversight service: `uvicorn services.oversight.main:create_app --factory`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.fund.domain.funds import load_funds
from services.oversight.adapters.checkpoints import CheckpointWatch, not_a_checkpoint
from services.oversight.adapters.lag import LagMeter
from services.oversight.adapters.queries import Budgets
from services.oversight.adapters.readmodel import ReadModel
from services.oversight.adapters.stream import Watermark
from services.oversight.entrypoints.api import router
from services.oversight.service_layer import Oversight, OversightCollector
from services.voucher.domain.programmes import load_catalogue
from shared.checkpoints import public_keys
from shared.clock import Clock, SystemClock
from shared.consumer import (
    DeadLetter,
    Delivery,
    IdempotentConsumer,
    PoisonKind,
    broker_dead_letters,
    subscribe_records,
)
from shared.kit.catalogue import load_document
from shared.security import create_service_engine, kafka_client_options
from shared.service import ServiceRuntime, create_service_app
from shared.settings import ServiceSettings
from shared.topics import DLQ_TOPIC, SERVICES, checkpoints_topic, events_topic

log = logging.getLogger(__name__)

READ_MODEL_FETCH_WAIT_MS = 100


def budgets_of(settings: ServiceSettings) -> Budgets:
    """The budgets and capacities of the catalogues the programme services load."""
    vouchers = load_catalogue(
        load_document("services.voucher.catalogue", "default.json", settings.voucher_catalogue_path)
    )
    funds = load_funds(
        load_document("services.fund.catalogue", "default.json", settings.fund_catalogue_path)
    )
    return Budgets({p.id: p.budget_total for p in vouchers.values()}, funds)


def create_app(settings: ServiceSettings | None = None, *, clock: Clock | None = None) -> FastAPI:
    """Oversight: every programme's events and checkpoints, in its own consumer groups and
    its own database, through the same inbox as the services."""
    settings = settings or ServiceSettings(service="oversight")
    the_clock = clock or SystemClock()
    budgets = budgets_of(settings)
    if settings.environment == "production" and not settings.checkpoint_keys:
        raise ValueError(
            "INCENTIVES_CHECKPOINT_KEYS must name the services' GET /v1/keys in production"
        )

    async def startup(runtime: ServiceRuntime) -> None:
        unreadable = None
        try:
            keys = await asyncio.to_thread(public_keys, settings.checkpoint_keys, settings)
        except Exception as error:  # a service not serving its keys yet: read them later
            log.warning("the services' checkpoint keys cannot be read yet: %r", error)
            keys, unreadable = {}, repr(error)[:300]
        engine = runtime.store.engine
        events = [runtime.topic(events_topic(s)) for s in SERVICES]
        subscriber: Any = None
        oversight = Oversight(
            engine=engine,
            clock=the_clock,
            readmodel=ReadModel(settings.topic_prefix),
            watch=CheckpointWatch(
                engine,
                keys,
                the_clock,
                refresh_keys=lambda: public_keys(settings.checkpoint_keys, settings),
                keys_unreadable=unreadable,
            ),
            lag=LagMeter(
                settings.kafka_bootstrap_servers,
                settings.topic_prefix,
                events,
                lambda: getattr(subscriber, "consumer", None),
                kafka_client_options(settings),
            ),
            budgets=budgets,
            stuck_after=timedelta(seconds=settings.stuck_after_seconds),
            watermark=Watermark(engine),
            streams_engine=create_service_engine(settings, pool_size=4),
        )
        runtime.app.state.oversight = oversight

        dead_letters = broker_dead_letters(runtime.broker, runtime.topic(DLQ_TOPIC))
        consumer = IdempotentConsumer(
            runtime.topic("oversight"),
            runtime.store,
            dead_letters=dead_letters,
            on_applied=oversight.events_committed,
        )
        consumer.handles_every_event(oversight.readmodel.apply)
        runtime.extras.setdefault("consumers", []).append(consumer)
        subscriber = consumer.subscribe(
            runtime.broker,
            *events,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=READ_MODEL_FETCH_WAIT_MS,
        )

        def service_of(topic: str) -> str:
            return topic.removeprefix(settings.topic_prefix).removesuffix(".checkpoints")

        checkpoints_group = runtime.topic("oversight-checkpoints")

        async def take_checkpoints(records: Sequence[Delivery]) -> None:
            await oversight.checkpoints_received([(service_of(r.topic), r.value) for r in records])
            for record in records:  # a finding on the summary, and a dead letter like any poison
                problem = not_a_checkpoint(service_of(record.topic), record.value)
                if problem is not None:
                    await dead_letters(
                        DeadLetter(
                            record,
                            checkpoints_group,
                            PoisonKind.INVALID,
                            f"not a checkpoint: {problem}",
                        )
                    )

        subscribe_records(
            runtime.broker,
            *(runtime.topic(checkpoints_topic(s)) for s in SERVICES),
            group_id=checkpoints_group,
            handle=take_checkpoints,
            session_timeout_ms=settings.kafka_session_timeout_ms,
        )
        runtime.spawn(oversight.check_checkpoints(), name="checkpoint-checks")
        runtime.spawn(oversight.lag.run(), name="lag")
        runtime.spawn(_close_streams_at_shutdown(oversight), name="streams")
        runtime.spawn(oversight.refresh(), name="figures")
        runtime.registry.register(OversightCollector(oversight))

    app = create_service_app(
        settings,
        title="Oversight service",
        description="Read-only: every programme's events and checkpoints, live, for ministries "
        "and auditors: applications by status, money per programme, lag, stuck applications, "
        "support conflicts, verified checkpoints, and the stream of every envelope.",
        clock=the_clock,
        on_startup=[startup],
        publishes=False,
        routers=[router],
    )
    static = resources.files("services.oversight.entrypoints") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


async def _close_streams_at_shutdown(oversight: Oversight) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        oversight.closing.set()
        await oversight.streams_engine.dispose()
