"""The taxcredit read models, kept in step with the log in the same transaction as the events."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.taxcredit.adapters.tables import CLAIM_HOLDING, applications, rate_tables
from services.taxcredit.domain.model import Application, Certificate
from services.taxcredit.domain.rates import PublishedTable, RateTable
from shared.contracts import Envelope
from shared.eventstore import UnitOfWork
from shared.kit.projection import ApplicationProjection, iso


def describe(app: Application) -> dict[str, Any]:
    """What the API shows of a claim: what the firm filed, the credit, the certificate.
    ``cost_reference`` is the cost the credit covers: the one submitted, else the claim's
    reference."""
    return {
        "programme": str(app.programme),
        "tax_year": app.tax_year,
        "firm": app.firm.to_json(),
        **app.claim.model_dump(mode="json", exclude={"programme"}),
        "claim_reference": app.claim_reference,
        "cost_reference": app.cost_reference,
        "credit": app.credit.to_json() if app.credit else None,
        "four_eyes_threshold": app.four_eyes_threshold,
        "approvals": [
            {"officer": a.officer, "amount": a.amount, "reason": a.reason, "at": iso(a.at)}
            for a in app.approvals
        ],
        "rejection_reasons": [r.to_json() for r in app.rejection_reasons],
        "certificate": _certificate(app.certificate),
        "clawbacks": [
            {"amount": c.amount, "reason": c.reason, "officer": c.officer, "at": iso(c.at)}
            for c in app.clawbacks
        ],
    }


def _certificate(certificate: Certificate | None) -> dict[str, Any] | None:
    if certificate is None:
        return None
    return {
        "number": certificate.number,
        "amount": certificate.amount,
        "original_amount": certificate.original_amount,
        "issued_on": certificate.issued_on.isoformat(),
        "status": certificate.status,
        "event_id": certificate.event_id,
        "event_hash": certificate.event_hash,
    }


PROJECTION: ApplicationProjection[Application] = ApplicationProjection(
    applications,
    describe,
    paths={"credit_amount": ("credit", "amount"), "certificate_number": ("certificate", "number")},
)


async def claim_holders(
    uow: UnitOfWork, references: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(programme, reference): (application id, firm id)}`` for the references claimed."""
    wanted = set(references)
    if not wanted:
        return {}
    refs = sorted({r for _, r in wanted})
    if uow.connection.dialect.name == "postgresql":
        rows = await uow.fetch_all(_CLAIM_HOLDERS, {"refs": refs})
    else:
        t = applications.c
        result = await uow.connection.execute(
            sa.select(t.id, t.firm_id, t.programme, t.claim_reference)
            .where(t.claim_reference.in_(refs))
            .where(t.status.in_(CLAIM_HOLDING))
        )
        rows = [dict(row._mapping) for row in result]
    return {
        (row["programme"], row["claim_reference"]): (row["id"], row["firm_id"])
        for row in rows
        if (row["programme"], row["claim_reference"]) in wanted
    }


_CLAIM_HOLDERS = sa.text(
    "SELECT id, firm_id, programme, claim_reference FROM applications"
    " WHERE claim_reference = ANY(CAST(:refs AS TEXT[]))"
    f" AND status IN ({', '.join(repr(s) for s in CLAIM_HOLDING)})"
)


def certificate_view(document: dict[str, Any]) -> dict[str, Any]:
    """A certificate as the tax authority reads it, from its application's document."""
    certificate = document["certificate"]
    return {
        "number": certificate["number"],
        "application_id": document["id"],
        "firm_id": document["firm_id"],
        "firm_name": document["firm"]["name"],
        "tax_year": document["tax_year"],
        "programme": document["programme"],
        "amount": certificate["amount"],
        "original_amount": certificate["original_amount"],
        "status": certificate["status"],
        "issued_on": certificate["issued_on"],
        "table_version": document["credit"]["table_version"],
        "event_id": certificate["event_id"],
        "event_hash": certificate["event_hash"],
    }


async def certificate(connection: AsyncConnection, number: str) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            sa.select(applications.c.id).where(applications.c.certificate_number == number)
        )
    ).first()
    if row is None:
        return None
    document = await PROJECTION.document(connection, row.id)
    return None if document is None else certificate_view(document)


def _published(row: Any) -> PublishedTable:
    table = json.loads(row.table) if isinstance(row.table, str) else row.table
    return PublishedTable(
        table=RateTable.from_json(table), published_at=row.published_at, sequence=row.sequence
    )


def published_resource(
    published: PublishedTable, published_by: str, event_hash: str
) -> dict[str, Any]:
    """A rate table as the API shows it: the table as published, and when, by whom, in which order."""
    return {
        **published.table.to_json(),
        "sequence": published.sequence,
        "published_at": iso(published.published_at),
        "published_by": published_by,
        "event_hash": event_hash,
    }


async def published_resources(connection: AsyncConnection) -> list[dict[str, Any]]:
    """Every rate table published, as the API lists them, in publication order."""
    rows = await connection.execute(sa.select(rate_tables).order_by(rate_tables.c.sequence))
    return [published_resource(_published(r), r.published_by, r.event_hash) for r in rows]


class TablesInForce:
    """The published tables as verification reads them: once per batch, in one round trip
    for those not read before, each parsed once (a published table never changes).

    Not read before, rather than of a higher sequence: on PostgreSQL a sequence is taken
    at insert, so a table can commit after one with a higher sequence was read."""

    def __init__(self) -> None:
        self._known: dict[int, PublishedTable] = {}

    async def read(self, uow: UnitOfWork) -> tuple[PublishedTable, ...]:
        known = sorted(self._known)
        if uow.connection.dialect.name == "postgresql":
            rows = await uow.fetch_all(_TABLES_NOT_READ, {"known": known})
        else:
            t = rate_tables.c
            result = await uow.connection.execute(
                sa.select(t.sequence, t.table, t.published_at).where(t.sequence.not_in(known))
            )
            rows = [dict(row._mapping) for row in result]
        for row in rows:
            table = json.loads(row["table"]) if isinstance(row["table"], str) else row["table"]
            published_at = row["published_at"]
            if published_at.tzinfo is None:  # SQLite through the plain select: naive UTC
                published_at = published_at.replace(tzinfo=UTC)
            self._known[row["sequence"]] = PublishedTable(
                table=RateTable.from_json(table),
                published_at=published_at,
                sequence=row["sequence"],
            )
        return tuple(self._known[s] for s in sorted(self._known))


_TABLES_NOT_READ = sa.text(
    'SELECT sequence, "table"::text AS table, published_at FROM rate_tables'
    " WHERE NOT (sequence = ANY(CAST(:known AS INTEGER[]))) ORDER BY sequence"
)


async def save_rate_table(uow: UnitOfWork, table: RateTable, published: Envelope) -> dict[str, Any]:
    """Record a table as its ``published`` event says (the same moment, by the same actor);
    its sequence is its place in publication order."""
    published_by, event_hash = published.actor.sub, published.hash
    result = await uow.connection.execute(
        rate_tables.insert().values(
            version=table.version,
            valid_from=table.valid_from,
            table=table.to_json(),
            published_at=published.occurred_at,
            published_by=published_by,
            event_hash=event_hash,
        )
    )
    (sequence,) = result.inserted_primary_key or (0,)
    entry = PublishedTable(table=table, published_at=published.occurred_at, sequence=int(sequence))
    return published_resource(entry, published_by, event_hash)
