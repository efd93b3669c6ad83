"""Oversight's use cases: take in every programme's events and checkpoints, and answer with
the figures a ministry watches. Read-only towards the programmes: it never writes to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oversight.adapters import queries
from services.oversight.adapters.checkpoints import CheckpointWatch
from services.oversight.adapters.lag import LagMeter
from services.oversight.adapters.readmodel import ReadModel
from services.oversight.adapters.stream import Bell, Watermark
from shared.clock import Clock

log = logging.getLogger(__name__)


@dataclass
class Oversight:
    engine: AsyncEngine
    clock: Clock
    readmodel: ReadModel
    watch: CheckpointWatch
    lag: LagMeter
    budgets: queries.Budgets
    stuck_after: timedelta
    watermark: Watermark
    streams_engine: AsyncEngine
    """The live streams read through connections of their own: a client that goes away
    cancels its read mid-query, and such a connection must not be the consumer's next."""
    bell: Bell = field(default_factory=Bell)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _checks_due: asyncio.Event = field(default_factory=asyncio.Event)
    figures: dict[str, Any] = field(default_factory=dict)
    """The last summary, for the metrics scrape (which cannot wait on the database)."""

    def events_committed(self) -> None:
        """A batch of events committed: wake the streams and the checkpoint checks."""
        self.bell.ring()
        self._checks_due.set()

    async def checkpoints_received(self, received: Sequence[tuple[str, bytes]]) -> None:
        """Messages of the checkpoints topics: ``(service, value)``."""
        if await self.watch.record(received):
            self._checks_due.set()

    async def check_checkpoints(self, every: float = 1.0) -> None:
        """Check checkpoints as their events arrive (and at least every ``every`` seconds,
        so that one whose events never come becomes a finding)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checks_due.wait(), every)
            self._checks_due.clear()
            try:
                await self.watch.check_pending()
            except Exception as error:  # the database is away: try again next round
                log.warning("oversight could not check checkpoints: %r", error)

    async def refresh(self, every: float = 5.0) -> None:
        """Keep :attr:`figures` current for the metrics."""
        while True:
            try:
                self.figures = await self.summary()
            except Exception as error:
                log.info("oversight could not read its figures: %r", error)
            await asyncio.sleep(every)

    async def summary(self) -> dict[str, Any]:
        now = self.clock.now()
        async with self.engine.connect() as connection:
            programmes = await queries.programmes(connection, self.budgets)
            count, _ = await queries.conflicts(connection, latest=0)
            stuck = await queries.stuck(connection, now, self.stuck_after)
            stuck_count = await queries.stuck_count(connection, now, self.stuck_after)
            unreadable = await queries.unreadable(connection)
        return {
            "programmes": programmes,
            "lag": list(self.lag.lag),
            "checkpoints": [
                {k: c[k] for k in ("service", "tree_size", "verified", "finding")}
                for c in await self.watch.latest()
            ],
            "conflicts": count,
            "stuck": stuck,
            "stuck_count": stuck_count,
            "unreadable": unreadable,
        }


class OversightCollector:
    """The summary's counters in Prometheus form, from the last :meth:`Oversight.refresh`."""

    def __init__(self, oversight: Oversight) -> None:
        self.oversight = oversight

    def collect(self) -> Iterator[Metric]:
        figures = self.oversight.figures
        if not figures:
            return
        applications = GaugeMetricFamily(
            "oversight_applications",
            "Applications by service, programme and status",
            labels=["service", "programme_id", "status"],
        )
        money = GaugeMetricFamily(
            "oversight_money_won",
            "Money per programme (won), by figure",
            labels=["service", "programme_id", "figure"],
        )
        for programme in figures["programmes"]:
            labels = [programme["service"], programme["programme_id"]]
            for status, count in programme["statuses"].items():
                applications.add_metric([*labels, status], count)
            for name, amount in programme["money"].items():
                money.add_metric([*labels, name], amount)
        lag = GaugeMetricFamily(
            "oversight_consumer_lag",
            "Messages behind the fetch high watermark, per service and topic",
            labels=["service", "topic"],
        )
        for row in figures["lag"]:
            lag.add_metric([row["service"], row["topic"]], row["lag"])
        sealed = GaugeMetricFamily(
            "oversight_checkpoint_verified_tree_size",
            "Size of the last verified checkpoint per service",
            labels=["service"],
        )
        findings = GaugeMetricFamily(
            "oversight_checkpoint_finding",
            "1 when the service's checkpoints have a finding",
            labels=["service"],
        )
        for row in figures["checkpoints"]:
            sealed.add_metric([row["service"]], row["tree_size"])
            findings.add_metric([row["service"]], 1 if row["finding"] else 0)
        conflicts = GaugeMetricFamily(
            "oversight_support_conflicts", "support.conflict.detected events received"
        )
        conflicts.add_metric([], figures["conflicts"])
        stuck = GaugeMetricFamily(
            "oversight_stuck_applications", "Open applications in one status past the threshold"
        )
        stuck.add_metric([], figures["stuck_count"])
        yield from (applications, money, lag, sealed, findings, conflicts, stuck)
