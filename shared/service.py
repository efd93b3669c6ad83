"""What every service process has: database, event store, relay, auth, errors, health, metrics.

A service's composition root (``services/<name>/main.py``) calls
:func:`create_service_app` and adds its own routes and consumers. Nothing
connects before the app's lifespan starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import migrations
from shared.asyncapi import asyncapi_document
from shared.audit_api import audit_router
from shared.auth import TokenVerifier, document_bearer
from shared.broker import wait_for_broker
from shared.broker_watch import BrokerWatch
from shared.checkpoints import Checkpointer, SigningKey
from shared.clock import Clock, SystemClock
from shared.domain import Conflict, EventRegistry, Forbidden, NotFound, Unprocessable
from shared.edge import EdgeGuard, Load, LoadShedder
from shared.eventstore import ConcurrencyConflict, EventStore
from shared.idempotency import document_required_keys
from shared.migrations import migrations_of
from shared.problems import document_problems, install_problem_handlers
from shared.relay import OutboxRelay
from shared.security import (
    create_service_engine,
    kafka_broker_security,
    kafka_client_options,
    token_verifier,
)
from shared.settings import ServiceSettings
from shared.topics import checkpoints_topic, ensure_topics, events_topic, standard_topics

log = logging.getLogger(__name__)

Hook = Callable[["ServiceRuntime"], Awaitable[None]]


@dataclass
class ServiceRuntime:
    """The live parts of one service process, built in the app's lifespan."""

    app: FastAPI
    settings: ServiceSettings
    store: EventStore
    verifier: TokenVerifier
    registry: CollectorRegistry
    broker: KafkaBroker
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def topic(self, name: str) -> str:
        """A topic's name on this deployment (tests give each run a prefix of its own)."""
        return self.settings.topic_prefix + name

    @property
    def events_topic(self) -> str:
        return self.topic(events_topic(self.settings.service))

    def wake_relay(self) -> None:
        """Tell the relay new events were committed, so it need not wait for its next poll."""
        relay = self.extras.get("relay")
        if relay is not None:
            relay.notify()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` for the life of the process; it is cancelled at shutdown."""
        self.tasks.append(asyncio.create_task(coro, name=name))


class RuntimeCollector:
    """Prometheus view of the relay's and the consumers' running totals, read at scrape time."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        load: Load | None = getattr(self.runtime.app.state, "load", None)
        if load is not None:
            in_progress = GaugeMetricFamily(
                "incentives_requests_in_progress", "Requests this process is serving"
            )
            in_progress.add_metric([], load.in_progress)
            refused = CounterMetricFamily(
                "incentives_requests_refused_overloaded",
                "Requests refused with 503 because too many were in progress",
            )
            refused.add_metric([], load.refused_total)
            yield from (in_progress, refused)
        relay = self.runtime.extras.get("relay")
        if relay is not None:
            published = CounterMetricFamily(
                "incentives_relay_published", "Events the broker acknowledged", labels=["topic"]
            )
            published.add_metric([relay.topic], relay.published_total)
            failures = CounterMetricFamily(
                "incentives_relay_failures",
                "Relay rounds that failed and backed off",
                labels=["topic"],
            )
            failures.add_metric([relay.topic], relay.failures)
            batch = GaugeMetricFamily(
                "incentives_relay_last_batch_seconds",
                "Time to publish the last batch",
                labels=["topic"],
            )
            batch.add_metric([relay.topic], relay.last_batch_seconds)
            yield from (published, failures, batch)
        watch = self.runtime.extras.get("broker_watch")
        if watch is not None:
            losses = CounterMetricFamily(
                "incentives_broker_log_losses",
                "Times this process found the broker had lost the log (and repaired it)",
            )
            losses.add_metric([], watch.losses_seen)
            requeued = CounterMetricFamily(
                "incentives_broker_log_requeued_events",
                "Events this process queued to publish again after a loss",
            )
            requeued.add_metric([], watch.requeued_total)
            yield from (losses, requeued)
        consumers = self.runtime.extras.get("consumers", [])
        if consumers:
            families = {
                name: CounterMetricFamily(
                    f"incentives_consumer_{name}",
                    f"Consumer {name.replace('_', ' ')}",
                    labels=["consumer"],
                )
                for name in (
                    "messages",
                    "applied",
                    "applied_here",
                    "left_to_broker",
                    "waited_for_here",
                    "duplicates",
                    "dead_lettered",
                    "fallbacks",
                    "redeliveries",
                )
            }
            for consumer in consumers:
                for name, family in families.items():
                    family.add_metric([consumer.name], getattr(consumer.stats, name))
            yield from families.values()
        yield self._assignments()

    def _assignments(self) -> Metric:
        """Which partitions this process's consumer groups gave it: replicas split them."""
        assigned = GaugeMetricFamily(
            "incentives_consumer_assigned_partitions",
            "Partitions of a topic this process holds in a consumer group",
            labels=["group", "topic"],
        )
        held: dict[tuple[str, str], int] = {}
        for consumer in _consumers_of(self.runtime.broker):
            group = str(getattr(consumer, "_group_id", None) or "")
            for partition in consumer.assignment():
                key = (group, partition.topic)
                held[key] = held.get(key, 0) + 1
        for (group, topic), count in sorted(held.items()):
            assigned.add_metric([group, topic], count)
        return assigned


async def _schema(settings: ServiceSettings, engine: AsyncEngine) -> None:
    """Migrate the service's schema to the head (development), or check it is there: in
    production the migration job does it, and a service on an old schema must not start."""
    location = migrations_of(settings.service)
    if settings.migrates_on_start():
        await migrations.upgrade(engine, location)
    else:
        await migrations.check_current(engine, location, settings.service)


async def _start_checkpoints(runtime: ServiceRuntime) -> None:
    """Seal the service's log into signed checkpoints, published on ``<service>.checkpoints``."""
    settings = runtime.settings
    key = SigningKey.from_seed(
        settings.signing_seed(), settings.checkpoint_key_valid_from, settings.checkpoint_key_id
    )
    sealer = Checkpointer(
        runtime.store,
        settings.service,
        key,
        every_events=settings.checkpoint_every_events,
        every_seconds=settings.checkpoint_every_seconds,
    )
    runtime.extras["checkpointer"] = sealer
    topic = runtime.topic(checkpoints_topic(settings.service))

    async def publish(document: dict[str, Any]) -> None:
        await runtime.broker.publish(document, topic, key=settings.service.encode())

    runtime.spawn(sealer.run(publish), name="checkpoints")


METADATA_MAX_AGE_MS = 5000
"""How old the clients' view of the topics may get (Kafka's default is five minutes)."""


async def _make_topics(settings: ServiceSettings) -> None:
    await ensure_topics(
        settings.kafka_bootstrap_servers,
        standard_topics(settings.topic_partitions, prefix=settings.topic_prefix),
        kafka_client_options(settings),
    )


async def _reach_broker(settings: ServiceSettings, deadline: float) -> None:
    """Wait for the broker and make the topics; a broker that goes away between the two
    (it is restarting too) is waited for again, until ``deadline`` (monotonic)."""
    while True:
        await wait_for_broker(
            settings.kafka_bootstrap_servers,
            within=max(0.0, deadline - time.monotonic()),
            client_options=kafka_client_options(settings),
        )
        try:
            await _make_topics(settings)
            return
        except (KafkaError, OSError) as error:
            if time.monotonic() >= deadline:
                raise
            log.warning("the broker went away while %s started (%r)", settings.service, error)


async def _start_broker(runtime: ServiceRuntime) -> None:
    """Start the subscribers and the publisher. A broker that goes away meanwhile (it is
    restarting too) is waited for and the start tried again, within the startup wait."""
    settings = runtime.settings
    deadline = time.monotonic() + settings.broker_startup_wait_seconds
    while True:
        try:
            await _start_together(runtime.broker)
            return
        except (KafkaError, OSError) as error:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning(
                "the broker went away while %s started (%r): waiting for it",
                settings.service,
                error,
            )
            with contextlib.suppress(Exception):
                await runtime.broker.stop()
            await _reach_broker(settings, deadline)


async def _start_together(broker: KafkaBroker) -> None:
    """``broker.start()``, with the subscribers started at once rather than one by one: each
    start waits until its group has assigned it partitions (a rebalance, seconds when
    another replica is a member), and the groups are independent of each other."""
    await broker.connect()
    await asyncio.gather(*(subscriber.start() for subscriber in broker.subscribers))
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True


async def _restart_subscribers(broker: KafkaBroker) -> None:
    """Stop and start every subscriber: new consumers, which join their groups afresh."""
    for subscriber in list(broker.subscribers):
        if getattr(subscriber, "consumer", None) is None:
            continue  # not running
        await subscriber.stop()
        await subscriber.start()


GC_THRESHOLDS = (10_000, 2, 100)
"""The collector's thresholds once the service serves (CPython's: 700, 10, 10)."""


def _freeze_what_starting_built() -> None:
    """Keep what the process built to start (modules, the app, its routes, schemas and
    tables) out of the garbage collector's reach from now on, and collect less often.

    A full collection walks every object it tracks and stops the process meanwhile: with
    the ~190,000 objects of startup, 70 to 150 ms. Frozen, it walks what the service keeps
    of its work (the states of recent applications): still 50 to 120 ms once a few
    thousand applications were handled, every 2 to 3 s under load (taxcredit bench at
    100/s). With these thresholds a young collection waits for 10,000 new objects instead
    of 700 (most are gone by then), and a full one is considered after 200 young ones
    instead of 100 (CPython still runs it only once a quarter more objects outlived the
    last one): none in the bench's 15 s at 100/s."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _consumers_of(broker: KafkaBroker) -> list[Any]:
    """The Kafka consumers of the process's subscribers that are running."""
    return [c for s in broker.subscribers if (c := getattr(s, "consumer", None)) is not None]


def parameters_without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional parameter (``str | None = None``) is left out, never sent as null: a
    query string or a header has no null. FastAPI documents it ``anyOf [..., null]``, and a
    client generated from that sends the text ``null``."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else ():
                declared = parameter.get("schema", {})
                branches = declared.get("anyOf", [])
                kept = [b for b in branches if b != {"type": "null"}]
                if len(kept) == 1 and len(branches) == 2:
                    rest = {k: v for k, v in declared.items() if k != "anyOf"}
                    parameter["schema"] = {**kept[0], **rest}
    return schema


def create_service_app(
    settings: ServiceSettings,
    *,
    title: str,
    description: str,
    clock: Clock | None = None,
    on_startup: list[Hook] | None = None,
    publishes: bool = True,
    domain_errors: dict[type[Exception], tuple[int, str]] | None = None,
    events: EventRegistry | None = None,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """A FastAPI app with the conventions every service shares.

    Domain errors map to statuses in one place: not found 404, forbidden 403, conflict
    409, unprocessable 422 (``domain_errors`` adds a service's own). ``events``: the
    programme's event types, served as an AsyncAPI document at ``/asyncapi.json``.
    ``routers``: the service's own endpoints, matched before the shared ones (a request
    is matched against the routes in order: the audit log's and the probes' come last).
    """
    settings.require_service_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_service_engine(settings, pool_size=settings.database_pool_size)
        store = EventStore(engine, clock or SystemClock())
        try:
            await _schema(settings, engine)
        except BaseException:  # refused (another revision, another service's database)
            await engine.dispose()
            raise
        runtime = ServiceRuntime(
            app=app,
            settings=settings,
            store=store,
            verifier=token_verifier(settings),
            registry=CollectorRegistry(),
            broker=KafkaBroker(
                settings.kafka_bootstrap_servers,
                acks="all",
                enable_idempotence=False,
                client_id=f"incentives-{settings.service}",
                security=kafka_broker_security(settings),
                # a topic the broker made again (after losing its log) may have another
                # partition count: consumers learn of it within seconds, not minutes
                metadata_max_age_ms=METADATA_MAX_AGE_MS,
                log_level=logging.DEBUG,  # one line per message is for debugging, not for running
            ),
        )
        app.state.runtime = runtime
        app.state.verifier = runtime.verifier
        runtime.registry.register(RuntimeCollector(runtime))
        try:
            await _reach_broker(settings, time.monotonic() + settings.broker_startup_wait_seconds)
            for hook in on_startup or []:
                await hook(runtime)
            if publishes:
                await _start_checkpoints(runtime)
                relay = OutboxRelay(
                    store,
                    settings.kafka_bootstrap_servers,
                    runtime.events_topic,
                    batch_size=settings.relay_batch_size,
                    producer_options=kafka_client_options(settings),
                )
                runtime.extras["relay"] = relay
                runtime.spawn(relay.run(), name="relay")
            await _start_broker(runtime)
            watch = BrokerWatch(
                store,
                settings.kafka_bootstrap_servers,
                owns_log=publishes,
                make_topics=lambda: _make_topics(settings),
                consumers=lambda: _consumers_of(runtime.broker),
                restart_consumers=lambda: _restart_subscribers(runtime.broker),
                wake_relay=runtime.wake_relay,
                client_options=kafka_client_options(settings),
            )
            runtime.extras["broker_watch"] = watch
            runtime.spawn(watch.run(), name="broker-watch")
            _freeze_what_starting_built()
            yield
        finally:
            with contextlib.suppress(Exception):
                await runtime.broker.stop()
            for task in runtime.tasks:
                task.cancel()
            for task in runtime.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await engine.dispose()

    app = FastAPI(title=title, description=description, version="0.1.0", lifespan=lifespan)
    for router in routers:
        app.include_router(router)
    if publishes:
        app.include_router(audit_router())
    app.add_middleware(EdgeGuard)
    # outermost: an overloaded process refuses before it reads anything of the request
    app.state.load = Load()
    app.add_middleware(LoadShedder, limit=settings.max_requests_in_progress, load=app.state.load)
    install_problem_handlers(
        app,
        {
            NotFound: (404, "Not found"),
            Forbidden: (403, "Forbidden"),
            Conflict: (409, "Conflict"),
            ConcurrencyConflict: (409, "Conflict"),
            Unprocessable: (422, "Invalid request"),
            **(domain_errors or {}),
        },
    )

    if events is not None:
        document = asyncapi_document(
            events,
            service=settings.service,
            topic=settings.topic_prefix + events_topic(settings.service),
            title=f"{title}: events",
            description=f"Every event of the {settings.service} service, as published on "
            f"{events_topic(settings.service)}: the envelope is the message value and the "
            "hash-chain link; key = application id.",
            servers={"kafka": settings.kafka_bootstrap_servers},
        )

        @app.get("/asyncapi.json", tags=["operations"])
        async def asyncapi() -> dict[str, Any]:
            """The AsyncAPI 3 document of this service's events, generated from their payload types."""
            return document

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok", "service": settings.service}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={
            503: {
                "description": "Not ready: the failing checks",
                "content": {"application/json": {}},
            }
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        """The database answers and background work is running."""
        runtime: ServiceRuntime = request.app.state.runtime
        checks: dict[str, str] = {}
        try:
            async with runtime.store.engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as error:  # report, don't raise: this is a probe
            checks["database"] = f"failing: {error.__class__.__name__}"
        for task in runtime.tasks:
            checks[task.get_name()] = "stopped" if task.done() else "ok"
        checks["broker"] = "ok" if await runtime.broker.ping(timeout=2) else "unreachable"
        ready = all(value == "ok" for value in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process."""
        runtime: ServiceRuntime = request.app.state.runtime
        return Response(generate_latest(runtime.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = document_problems(
                document_required_keys(parameters_without_null(document_bearer(schema, app.routes)))
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
