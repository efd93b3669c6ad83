"""The released tranches a treasury is to pay: noted by the payout stage, read by the payout
worker, dropped in the transaction that records the tranche paid or the investment
cancelled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.fund.adapters.tables import tranche_payouts
from shared.eventstore import UnitOfWork

_T = tranche_payouts.c
_DUE = (_T.payout_id, _T.application_id, _T.number, _T.release_event_id, _T.correlation_id)


@dataclass(frozen=True, slots=True)
class Due:
    """A released tranche the treasury is to pay, and the release that caused it."""

    payout_id: str
    application_id: str
    number: int
    release_event_id: str
    correlation_id: str


async def note_due(uow: UnitOfWork, due: Due, released_at: datetime) -> None:
    """The tranche is to be paid by the treasury (noted once, however often asked)."""
    dialect = postgresql if uow.connection.dialect.name == "postgresql" else sqlite
    await uow.connection.execute(
        dialect.insert(tranche_payouts)
        .values(
            payout_id=due.payout_id,
            application_id=due.application_id,
            number=due.number,
            released_at=released_at,
            release_event_id=due.release_event_id,
            correlation_id=due.correlation_id,
        )
        .on_conflict_do_nothing()
    )


async def all_due(connection: AsyncConnection) -> list[Due]:
    """Each tranche due, the longest waiting first."""
    rows = await connection.execute(sa.select(*_DUE).order_by(_T.released_at, _T.payout_id))
    return [_due(r) for r in rows]


async def due_of(connection: AsyncConnection, application_id: str) -> list[Due]:
    """The application's tranches due, in payout id order."""
    rows = await connection.execute(
        sa.select(*_DUE).where(_T.application_id == application_id).order_by(_T.payout_id)
    )
    return [_due(r) for r in rows]


async def is_due(engine: AsyncEngine, payout_id: str) -> bool:
    """Whether the payout is still to be made (not recorded paid, not cancelled)."""
    async with engine.connect() as connection:
        found = await connection.scalar(sa.select(_T.payout_id).where(_T.payout_id == payout_id))
    return found is not None


async def drop(uow: UnitOfWork, application_id: str, number: int | None = None) -> None:
    """The application's payouts due (tranche ``number``'s, or all) are settled: recorded
    paid, or cancelled with the investment."""
    settled = _T.application_id == application_id
    if number is not None:
        settled = sa.and_(settled, _T.number == number)
    await uow.connection.execute(tranche_payouts.delete().where(settled))


def _due(row: Any) -> Due:
    return Due(
        row.payout_id, row.application_id, int(row.number), row.release_event_id, row.correlation_id
    )
