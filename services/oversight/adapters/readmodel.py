"""Writing oversight's read model: each event received is kept as it came, and each
application it touches is folded again with its programme's own ``evolve``."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from services.oversight.adapters.tables import received, standings, transitions
from services.oversight.domain.standing import PROGRAMMES, Standing, is_application, standing
from shared.consumer import Delivery
from shared.contracts import Envelope
from shared.eventstore import UnitOfWork

log = logging.getLogger(__name__)

WRITER_LOCK = 0x6F76657273696768  # "oversigh": the advisory lock of oversight's writers


def position_of(delivery: Delivery) -> int | None:
    """The event's log position, from the ``position`` header every relayed message carries."""
    for name, value in delivery.headers:
        if name == "position":
            try:
                return int(value.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return None
    return None


class ReadModel:
    """Applies batches of received events: ``service_of`` names the service a topic is of."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def service_of(self, topic: str) -> str:
        return topic.removeprefix(self.prefix).removesuffix(".events")

    async def apply(self, uow: UnitOfWork, batch: Sequence[tuple[Envelope, Delivery]]) -> None:
        if uow.connection.dialect.name == "postgresql":
            # One writer at a time, to its commit: sequence numbers then show up in their
            # order, so a stream that waits at a hole only ever waits for a rollback
            # (two replicas would otherwise commit 600 while 100 is still in flight).
            await uow.connection.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITER_LOCK}
            )
        rows: list[dict[str, Any]] = [
            {
                "service": self.service_of(delivery.topic),
                "position": position_of(delivery),
                "event_id": envelope.event_id,
                "aggregate_id": envelope.aggregate_id,
                "aggregate_seq": envelope.aggregate_seq,
                "type": envelope.type,
                "firm_id": envelope.firm_id,
                "occurred_at": envelope.occurred_at,
                "hash": envelope.hash,
                "envelope": delivery.value.decode("utf-8"),
            }
            for envelope, delivery in batch
        ]
        await uow.connection.execute(sa.insert(received), rows)
        fresh = {envelope.event_id for envelope, _ in batch}
        touched: dict[str, set[str]] = defaultdict(set)
        for envelope, delivery in batch:
            service = self.service_of(delivery.topic)
            if service in PROGRAMMES:
                touched[service].add(envelope.aggregate_id)
        for service, aggregates in touched.items():
            streams = await self._streams(uow, service, sorted(aggregates))
            await self._refold(uow, service, streams, fresh)

    async def _streams(
        self, uow: UnitOfWork, service: str, aggregates: Sequence[str]
    ) -> dict[str, list[Envelope]]:
        found: dict[str, list[Envelope]] = defaultdict(list)
        for start in range(0, len(aggregates), 500):
            result = await uow.connection.execute(
                sa.select(received.c.aggregate_id, received.c.envelope)
                .where(received.c.service == service)
                .where(received.c.aggregate_id.in_(aggregates[start : start + 500]))
                .order_by(received.c.aggregate_id, received.c.aggregate_seq)
            )
            for aggregate_id, text in result:
                found[aggregate_id].append(Envelope.model_validate_json(text))
        return found

    async def _refold(
        self,
        uow: UnitOfWork,
        service: str,
        streams: dict[str, list[Envelope]],
        fresh: set[str],
    ) -> None:
        rows: list[dict[str, Any]] = []
        changes: list[dict[str, Any]] = []
        unreadable: dict[str, str] = {}
        for aggregate_id, events in streams.items():
            if events[0].aggregate_seq != 1:
                if any(e.type.startswith(f"{service}.application.") for e in events):
                    unreadable[aggregate_id] = (
                        f"its first event is missing (seq {events[0].aggregate_seq} comes first)"
                    )
                continue
            if not is_application(service, events[0]):
                continue
            try:
                now = standing(service, events)
            except Exception as error:  # a gap still filling, or a log that does not fold:
                # shown as such, never dead-lettered (the event would be lost to the figures)
                log.warning("oversight cannot fold %s %s: %r", service, aggregate_id, error)
                unreadable[aggregate_id] = str(error)[:1000]
                continue
            rows.append(_row(now))
            changes += [
                {
                    "event_id": t.event_id,
                    "service": service,
                    "application_id": aggregate_id,
                    "from_status": t.from_status,
                    "to_status": t.to_status,
                    "at": t.at,
                    "minute": int(t.at.timestamp()) // 60,
                    "seconds": t.seconds,
                }
                for t in now.transitions
                if t.event_id in fresh
            ]
        if rows:
            await uow.connection.execute(
                sa.delete(standings)
                .where(standings.c.service == service)
                .where(standings.c.application_id.in_([r["application_id"] for r in rows]))
            )
            await uow.connection.execute(sa.insert(standings), rows)
        if changes:
            await uow.connection.execute(sa.insert(transitions), changes)
        if unreadable:
            await self._mark_unreadable(uow, service, unreadable, streams)

    async def _mark_unreadable(
        self,
        uow: UnitOfWork,
        service: str,
        unreadable: dict[str, str],
        streams: dict[str, list[Envelope]],
    ) -> None:
        """An application whose stream does not fold keeps its last good standing (its
        money stays where it was), flagged with why; one never folded gets a row of its own."""
        known = set(
            (
                await uow.connection.scalars(
                    sa.select(standings.c.application_id)
                    .where(standings.c.service == service)
                    .where(standings.c.application_id.in_(list(unreadable)))
                )
            ).all()
        )
        for aggregate_id, why in unreadable.items():
            if aggregate_id in known:
                await uow.connection.execute(
                    sa.update(standings)
                    .where(standings.c.service == service)
                    .where(standings.c.application_id == aggregate_id)
                    .values(unreadable=why)
                )
            else:
                await uow.connection.execute(
                    sa.insert(standings), _unreadable(service, streams[aggregate_id], why)
                )


def _row(s: Standing) -> dict[str, Any]:
    return {
        "service": s.service,
        "application_id": s.application_id,
        "programme_id": s.programme_id,
        "firm_id": s.firm_id,
        "cluster": s.cluster,
        "status": s.status,
        "is_open": s.is_open,
        "version": s.version,
        "status_since": s.status_since,
        "updated_at": s.updated_at,
        "committed": s.money.committed,
        "paid": s.money.paid,
        "certified": s.money.certified,
        "clawed_back": s.money.clawed_back,
        "unreadable": None,
    }


def _unreadable(service: str, events: Sequence[Envelope], why: str) -> dict[str, Any]:
    last = events[-1]
    return {
        "service": service,
        "application_id": last.aggregate_id,
        "programme_id": "",
        "firm_id": last.firm_id or "",
        "cluster": "",
        "status": "unreadable",
        "is_open": True,
        "version": last.aggregate_seq,
        "status_since": last.occurred_at,
        "updated_at": last.occurred_at,
        "committed": 0,
        "paid": 0,
        "certified": 0,
        "clawed_back": 0,
        "unreadable": why[:1000],
    }
