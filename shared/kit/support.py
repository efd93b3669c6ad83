"""The support read model every programme service keeps: every programme's grants, fed from
the three events topics, checked at verification and again at the grant (see
:mod:`shared.domain.support`).

Grants are kept per application (``programme``, ``application_id``): what was granted,
what went back, the year it counts in and the cost it covers. A programme records its own
grants in the transaction that makes them, under a lock per firm (:class:`GrantGate`), so
that within one programme the database decides: two grants to one firm are made one after
the other, the second seeing the first. Other programmes' grants come from their topics:
the consumer writes them in the inbox's transaction, so a redelivered event changes
nothing; a conflict it finds is appended once, on an aggregate named after it, and
published on the service's topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.dialects import sqlite

from shared.consumer import IdempotentConsumer, broker_dead_letters
from shared.contracts import Actor, Envelope, Role
from shared.domain.support import (
    GIVE_BACK_EVENTS,
    GRANT_EVENTS,
    PROGRAMMES,
    Grant,
    RefuseGrant,
    SupportConflictDetected,
    SupportFacts,
    SupportPolicy,
    conflicts_of,
    facts_among,
    give_back_of,
    grant_of,
    load_support_policy,
    refusal_at_grant,
)
from shared.eventstore import EventContext, StreamVersion, UnitOfWork
from shared.eventstore.schema import UTCDateTime
from shared.kit.catalogue import load_document
from shared.service import ServiceRuntime
from shared.topics import DLQ_TOPIC, events_topic

READ_MODEL_FETCH_WAIT_MS = 100
"""The support read model may lag a tenth of a second (it is checked at verification, long
before the grant): it need not poll the broker a hundred times a second like a stage."""


FIRM_LOCKS = 0x5350
"""The first key of the per-firm grant locks (``pg_advisory_xact_lock(FIRM_LOCKS, firm)``):
two-key advisory locks never meet the one-key locks of the relay and oversight."""


def firm_lock_key(firm_id: str) -> int:
    """The second key of a firm's grant lock: a signed 32-bit hash of its id (two firms
    that share one only wait for each other)."""
    return int.from_bytes(hashlib.sha256(firm_id.encode()).digest()[:4], "big", signed=True)


def default_policy(override: Any = None) -> tuple[SupportPolicy, dict[str, Any]]:
    """The policy in force (the packaged default, or the file ``override`` names) and its document."""
    document = load_document("shared.catalogue", "support-policy.json", override)
    return load_support_policy(document), document


def support_table(metadata: sa.MetaData) -> sa.Table:
    """The ``support_grants`` table, in a service's own metadata."""
    return sa.Table(
        "support_grants",
        metadata,
        sa.Column("programme", sa.String(20), primary_key=True),
        sa.Column("application_id", sa.String(64), primary_key=True),
        sa.Column("firm_id", sa.String(64), nullable=False),
        sa.Column("year", sa.Integer, nullable=False),
        sa.Column("cost_reference", sa.String(200), nullable=True),
        sa.Column("granted", sa.BigInteger, nullable=False),
        sa.Column("given_back", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("granted_at", UTCDateTime, nullable=False),
        sa.Index("ix_support_grants_cost", "cost_reference"),
        sa.Index("ix_support_grants_firm_year", "firm_id", "year"),
    )


class SupportBook:
    """The grants table of one service, and what verification and the detector ask of it."""

    def __init__(self, table: sa.Table, programme: str, policy: SupportPolicy) -> None:
        self.table = table
        self.programme = programme
        self.policy = policy
        self.detector = Actor(sub=f"{programme}-support-detector", role=Role.SYSTEM)

    # --- verification ---------------------------------------------------------------------

    async def facts(
        self,
        uow: UnitOfWork,
        wanted: Sequence[tuple[str, int, str | None]],
    ) -> list[SupportFacts]:
        """For each ``(firm_id, year, cost_reference)``: the first grant still standing to the
        firm for the cost (by any programme, this one too: an application being verified has
        no grant yet, so any grant is another application's; a cost is the firm's own, so
        another firm's reference that happens to be the same string is another cost), and
        the firm's combined support in the year. One statement for all: the firms' grants
        of those years and costs, weighed as the grant stage weighs them (:func:`facts_among`)."""
        if not wanted:
            return []
        t = self.table
        firms = sorted({f for f, _, _ in wanted})
        years = sorted({y for _, y, _ in wanted})
        costs = sorted({c for _, _, c in wanted if c})
        rows: Sequence[Mapping[str, Any]]
        if _on_postgresql(uow):
            rows = await uow.fetch_all(_PG_FACTS, {"firms": firms, "years": years, "costs": costs})
        else:
            concerned: sa.ColumnElement[bool] = t.c.year.in_(years)
            if costs:
                concerned = sa.or_(concerned, t.c.cost_reference.in_(costs))
            rows = await _core_rows(
                uow,
                sa.select(t).where(t.c.firm_id.in_(firms), concerned, t.c.granted > t.c.given_back),
            )
        by_firm: dict[str, list[Grant]] = {}
        for row in rows:
            by_firm.setdefault(row["firm_id"], []).append(_grant_of_row(row))
        return [
            facts_among(
                by_firm.get(firm, []),
                firm_id=firm,
                year=year,
                cost_reference=cost,
                policy=self.policy,
            )
            for firm, year, cost in wanted
        ]

    # --- the grant ---------------------------------------------------------------------------

    async def gate(self, uow: UnitOfWork, firm_ids: Iterable[str], at: datetime) -> GrantGate:
        """Lock the firms' grants for this transaction, then read them all: a grant stage
        checks the support limits again on what it reads here, and another transaction
        granting to one of these firms waits until this one has committed (PostgreSQL; on
        SQLite one writer at a time already). Call it before locking the applications, and
        record the grants made (:meth:`record_grants`) before the transaction ends. ``at``:
        when the grants are made."""
        firms = sorted(set(firm_ids))
        if not firms:
            return GrantGate(self.programme, self.policy, [], at, firms)
        if _on_postgresql(uow):
            keys = sorted({firm_lock_key(f) for f in firms})  # in one order: no lock cycle
            await uow.fetch_all(_PG_LOCK_FIRMS, {"space": FIRM_LOCKS, "keys": keys})
            rows: Sequence[Mapping[str, Any]] = await uow.fetch_all(_PG_OF_FIRMS, {"firms": firms})
        else:
            t = self.table
            rows = await _core_rows(uow, sa.select(t).where(t.c.firm_id.in_(firms)))
        known = [_grant_of_row(r) for r in rows]
        return GrantGate(self.programme, self.policy, known, at, firms)

    async def record_grants(self, uow: UnitOfWork, events: Sequence[Envelope]) -> None:
        """Record the grants among ``events`` (this programme's, just appended) in their
        transaction: the consumer of the topic then finds them recorded."""
        await self._record(uow, [g for e in events if (g := grant_of(e)) is not None])

    # --- the read model ---------------------------------------------------------------------

    async def apply(self, uow: UnitOfWork, events: Sequence[Envelope]) -> None:
        """Record the grants and give-backs among ``events``, then any conflict the new grants
        show: a few statements for the whole batch (conflicts, rare, one append each)."""
        t = self.table
        causes: dict[str, Envelope] = {}
        grants: dict[tuple[str, str], Grant] = {}
        for event in events:
            grant = grant_of(event)
            if grant is not None:
                grants.setdefault((grant.programme, grant.application_id), grant)
                causes[grant.event_id] = event
        await self._record(uow, list(grants.values()))
        for event in events:
            back = give_back_of(event)
            if back is not None:
                found = await uow.connection.execute(
                    t.update()
                    .where(
                        t.c.programme == back.programme, t.c.application_id == back.application_id
                    )
                    .values(given_back=t.c.given_back + back.amount)
                )
                if found.rowcount == 0:
                    # only after a broker lost its log can a give-back arrive before its
                    # grant (sent on its own, ahead of the log sent again): refused here, it
                    # comes again in order with the rest, after the grant
                    raise LookupError(
                        f"{event.type} {event.event_id}: no grant of {back.programme} "
                        f"application {back.application_id} recorded yet"
                    )
        if grants:  # recorded by the consumer now, or by this programme as it granted
            await self._detect(uow, list(grants.values()), causes)

    async def _record(self, uow: UnitOfWork, grants: Sequence[Grant]) -> None:
        """Insert the grants not recorded yet (a restored database replays its topics): one
        statement, which leaves a grant already there as it is."""
        if not grants:
            return
        rows = [
            {
                "programme": g.programme,
                "application_id": g.application_id,
                "firm_id": g.firm_id,
                "year": g.year,
                "cost_reference": g.cost_reference,
                "granted": g.amount,
                "given_back": 0,
                "event_id": g.event_id,
                "granted_at": g.granted_at,
            }
            for g in grants
        ]
        if _on_postgresql(uow):
            await uow.write_many(_PG_RECORD, rows)
            return
        insert = sqlite.insert(self.table)
        await uow.connection.execute(
            insert.on_conflict_do_nothing(index_elements=["programme", "application_id"]), rows
        )

    async def _detect(
        self, uow: UnitOfWork, grants: Sequence[Grant], causes: dict[str, Envelope]
    ) -> None:
        """Append each conflict the ``grants`` show that is this programme's to record and not
        recorded yet; one read of every related grant for them all."""
        t = self.table
        firms = sorted({g.firm_id for g in grants})
        costs = sorted({g.cost_reference for g in grants if g.cost_reference is not None})
        rows: Sequence[Mapping[str, Any]]
        if _on_postgresql(uow):
            rows = await uow.fetch_all(_PG_RELATED, {"firms": firms, "costs": costs})
        else:
            related: sa.ColumnElement[bool] = t.c.firm_id.in_(firms)
            if costs:
                related = sa.or_(related, t.c.cost_reference.in_(costs))
            rows = await _core_rows(uow, sa.select(t).where(related))
        known = [_grant_of_row(r) for r in rows]
        found: dict[str, tuple[SupportConflictDetected, Envelope]] = {}
        for grant in grants:
            for key, conflict in conflicts_of(
                grant, known, programme=self.programme, cap=self.policy.combined_yearly_cap
            ):
                aggregate = "support-conflict:" + hashlib.sha256(key.encode()).hexdigest()[:40]
                found.setdefault(aggregate, (conflict, causes[grant.event_id]))
        if not found:
            return
        recorded = await uow.read_streams(list(found))
        for aggregate, (conflict, event) in found.items():
            if recorded[aggregate]:
                continue  # recorded already
            context = EventContext(
                actor=self.detector,
                correlation_id=event.correlation_id,
                causation_id=event.event_id,
                firm_id=conflict.firm_id,
            )
            await uow.append(aggregate, StreamVersion(), [conflict.event()], context)

    # --- wiring -------------------------------------------------------------------------------

    def subscribe(self, runtime: ServiceRuntime) -> IdempotentConsumer:
        """Consume the three programmes' topics into the read model (consumer ``<service>-support``)."""
        consumer = IdempotentConsumer(
            runtime.topic(f"{runtime.settings.service}-support"),
            runtime.store,
            dead_letters=broker_dead_letters(runtime.broker, runtime.topic(DLQ_TOPIC)),
            ignore_unknown=True,
            on_applied=runtime.wake_relay,
        )
        consumer.handles_batch(*GRANT_EVENTS, *GIVE_BACK_EVENTS)(self.apply)
        runtime.extras.setdefault("consumers", []).append(consumer)
        consumer.subscribe(
            runtime.broker,
            *(runtime.topic(events_topic(p)) for p in PROGRAMMES),
            session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=READ_MODEL_FETCH_WAIT_MS,
        )
        return consumer


class GrantGate:
    """The support limits checked again as a programme grants, on the firms' grants read
    under their locks (:meth:`SupportBook.gate`). A grant admitted earlier in the same
    batch counts for the later ones."""

    def __init__(
        self,
        programme: str,
        policy: SupportPolicy,
        grants: list[Grant],
        at: datetime,
        firms: Iterable[str],
    ) -> None:
        self.programme = programme
        self.policy = policy
        self.at = at
        self._grants = grants
        self.firms = frozenset(firms)
        """The firms whose grants were read (under their locks)."""

    def admit(
        self,
        *,
        application_id: str,
        firm_id: str,
        year: int,
        cost_reference: str | None,
        amount: int,
    ) -> RefuseGrant | None:
        """The refusal a grant of ``amount`` won to the firm meets, or None: the grant is
        made (the caller makes it in this transaction) and the next checks count it."""
        if firm_id not in self.firms:
            raise RuntimeError(f"firm {firm_id}'s grants were not locked and read for this grant")
        facts = facts_among(
            self._grants,
            firm_id=firm_id,
            year=year,
            cost_reference=cost_reference,
            policy=self.policy,
        )
        refusal = refusal_at_grant(facts, amount)
        if refusal is None:
            self._grants.append(
                Grant(
                    programme=self.programme,
                    application_id=application_id,
                    firm_id=firm_id,
                    amount=amount,
                    year=year,
                    cost_reference=cost_reference,
                    event_id=f"granting:{application_id}",
                    granted_at=self.at,
                )
            )
        return refusal


def _grant_of_row(r: Mapping[str, Any]) -> Grant:
    """A ``support_grants`` row as the grant it still stands for (net of what went back)."""
    return Grant(
        programme=r["programme"],
        application_id=r["application_id"],
        firm_id=r["firm_id"],
        amount=max(r["granted"] - r["given_back"], 0),
        year=r["year"],
        cost_reference=r["cost_reference"],
        event_id=r["event_id"],
        granted_at=r["granted_at"],
    )


# On PostgreSQL the book's statements go straight to the driver (UnitOfWork.fetch_all and
# write_many), with arrays for the lists: SQLAlchemy's execution of a Core statement cost
# a programme service 3-4 % of its CPU at half its peak. SQLite runs the Core statements.
_GRANT = (
    "programme, application_id, firm_id, year, cost_reference, granted, given_back,"
    " event_id, granted_at"
)
_PG_FACTS = sa.text(
    f"SELECT {_GRANT} FROM support_grants WHERE firm_id = ANY(:firms)"
    " AND (year = ANY(:years) OR cost_reference = ANY(:costs)) AND granted > given_back"
)
_PG_LOCK_FIRMS = sa.text(
    "SELECT pg_advisory_xact_lock(:space, k)"
    " FROM unnest(CAST(:keys AS integer[])) WITH ORDINALITY AS u(k, n) ORDER BY n"
)
_PG_OF_FIRMS = sa.text(f"SELECT {_GRANT} FROM support_grants WHERE firm_id = ANY(:firms)")
_PG_RELATED = sa.text(
    f"SELECT {_GRANT} FROM support_grants"
    " WHERE firm_id = ANY(:firms) OR cost_reference = ANY(:costs)"
)
_PG_RECORD = sa.text(
    f"INSERT INTO support_grants ({_GRANT}) VALUES (:programme, :application_id, :firm_id,"
    " :year, :cost_reference, :granted, :given_back, :event_id, :granted_at)"
    " ON CONFLICT (programme, application_id) DO NOTHING"
)


def _on_postgresql(uow: UnitOfWork) -> bool:
    return bool(uow.connection.dialect.name == "postgresql")


async def _core_rows(uow: UnitOfWork, statement: sa.Select[Any]) -> list[Mapping[str, Any]]:
    return [row._mapping for row in await uow.connection.execute(statement)]


def support_router() -> APIRouter:
    """``GET /v1/support-policy``: the policy in force, public like the rules it applies."""
    router = APIRouter(prefix="/v1", tags=["support limits"])

    @router.get("/support-policy", summary="The cross-programme support policy in force")
    async def support_policy(request: Request) -> dict[str, Any]:
        """The combined yearly cap per firm across programmes, what counts as a grant, and
        the window in which two programmes may both grant before either sees the other."""
        book: SupportBook = request.app.state.support
        return {
            **book.policy.model_dump(mode="json"),
            "programmes": list(PROGRAMMES),
            "grants": {
                "voucher": "voucher issued",
                "taxcredit": "credit certified",
                "fund": "investment committed",
            },
            "rejection_reasons": ["duplicate_support", "combined_cap_exceeded"],
            "conflict_event": "support.conflict.detected",
        }

    return router


__all__ = [
    "FIRM_LOCKS",
    "GrantGate",
    "SupportBook",
    "default_policy",
    "firm_lock_key",
    "support_router",
    "support_table",
]
