"""The fund read models, kept in step with the log in the same transaction as the events."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.fund.adapters.tables import applications, capacity
from services.fund.domain import events as ev
from services.fund.domain.funds import Fund, lineage
from services.fund.domain.model import Application, Tranche
from shared.eventstore import UnitOfWork
from shared.kit.projection import ApplicationProjection, iso

S = TypeVar("S")


class _Once(Generic[S]):
    """A part of the document that depends on one object of the state alone, built once per
    application: the document is written again at each vote and stage, and an application
    keeps that very object (its submitted terms, its verification facts) through every
    later version of its state.

    An entry holds the object itself, so that ``is`` compares what the part was built from
    with what is asked for (an ``id()`` can be reused once an object is gone). A part is
    shared by the documents built from it: read them, never change them (as every
    document here)."""

    KEPT = 20_000
    """Applications whose part is kept (the oldest goes first); as many as the service
    keeps folded states of (``ApplicationService.RECENT_STATES``)."""

    def __init__(self, build: Callable[[S], Any]) -> None:
        self._build = build
        self._parts: dict[str, tuple[S, Any]] = {}

    def __call__(self, application_id: str, source: S) -> Any:
        entry = self._parts.get(application_id)
        if entry is not None and entry[0] is source:
            return entry[1]
        part = self._build(source)
        self._parts.pop(application_id, None)
        self._parts[application_id] = (source, part)
        while len(self._parts) > self.KEPT:
            del self._parts[next(iter(self._parts))]
        return part


def _applied_for(terms: ev.ApplicationSubmitted) -> dict[str, Any]:
    """What the firm applied for, as the document shows it."""
    return {
        "fund_id": terms.fund_id,
        "firm": terms.firm.to_json(),
        "stage": str(terms.stage),
        "instrument": str(terms.instrument),
        "amount": terms.amount,
        "pre_money_valuation": terms.pre_money_valuation,
        "cost_reference": terms.cost_reference,
        "due_diligence": terms.due_diligence.model_dump(mode="json"),
        "co_investors": [c.model_dump(mode="json") for c in terms.co_investors],
    }


_APPLIED_FOR = _Once(_applied_for)


def _verification(facts: ev.VerificationFacts) -> dict[str, Any]:
    """What verification compared, as the document shows it."""
    return facts.model_dump(mode="json")


_VERIFICATION = _Once(_verification)


def describe(app: Application) -> dict[str, Any]:
    """What the API shows of an application: what the firm applied for, the committee's
    votes, and the investment's tranches."""
    return {
        **_APPLIED_FOR(app.id, app.terms),
        "votes": [
            {
                "member": b.member,
                "vote": str(b.vote),
                "conflict_of_interest": b.conflict_of_interest,
                "reason": b.reason,
                "at": iso(b.at),
            }
            for b in app.ballots
        ],
        "quorum": app.committee.quorum if app.committee else None,
        "votes_for": app.votes_for,
        "approved_amount": app.approved_amount,
        "committed_on": app.committed_on.isoformat() if app.committed_on else None,
        "tranches": [_tranche(t) for t in app.tranches],
        "disbursed": app.paid_amount,
        "returned_amount": app.returned_amount,
        "co_investment_ids": list(app.co_investment_ids),
        "rejection_reasons": [r.to_json() for r in app.rejection_reasons],
        "verification": _VERIFICATION(app.id, app.facts) if app.facts else None,
    }


def _tranche(tranche: Tranche) -> dict[str, Any]:
    return {
        "number": tranche.number,
        "amount": tranche.amount,
        "milestone": tranche.milestone,
        "status": tranche.status,
        "payout_id": tranche.payout_id,
        "milestone_evidence": tranche.milestone_evidence,
        "released_by": tranche.released_by,
    }


PROJECTION: ApplicationProjection[Application] = ApplicationProjection(applications, describe)


async def approved_amounts(
    uow: UnitOfWork, application_ids: Sequence[str]
) -> dict[str, tuple[str, int]]:
    """``{id: (fund_id, amount)}`` of those of the applications that are approved now."""
    if not application_ids:
        return {}
    t = applications.c
    rows = await uow.connection.execute(
        sa.select(t.id, t.fund_id, t.amount).where(
            t.id.in_(list(dict.fromkeys(application_ids))), t.status == "approved"
        )
    )
    return {r.id: (r.fund_id, int(r.amount)) for r in rows}


_FIGURES = sa.text(
    "SELECT p.pool_id, p.total, p.available,"
    " (SELECT COALESCE(SUM(a.disbursed), 0) FROM applications a WHERE a.fund_id = p.pool_id)"
    " AS disbursed FROM fund_capacity p"
)


async def fund_figures(
    connection: AsyncConnection, funds: Mapping[str, Fund]
) -> list[dict[str, Any]]:
    """Each fund of the catalogue with its live figures, read in one statement (one snapshot):
    ``committed`` (held and not yet disbursed), ``disbursed`` (paid tranches) and ``available``
    (capacity − committed − disbursed); and ``available_to_commit``, the least the fund and
    its parents have left (a sub-fund cannot commit more than its parent holds). A parent's
    figures include its sub-funds'."""
    rows = {r.pool_id: r for r in await connection.execute(_FIGURES)}
    own_disbursed = {pool_id: int(r.disbursed) for pool_id, r in rows.items()}
    disbursed = dict.fromkeys(funds, 0)
    for fund_id, amount in own_disbursed.items():
        for ancestor in lineage(funds, fund_id):
            disbursed[ancestor] += amount
    left = {pool_id: int(r.available) for pool_id, r in rows.items()}
    listed = []
    for fund in funds.values():
        row = rows.get(fund.id)
        available = int(row.available) if row is not None else fund.capacity
        total = int(row.total) if row is not None else fund.capacity
        listed.append(
            {
                "id": fund.id,
                "name": fund.name,
                "parent": fund.parent,
                "capacity": total,
                "remit": fund.remit.model_dump(mode="json"),
                "committee": fund.committee.model_dump(mode="json"),
                "committed": total - available - disbursed[fund.id],
                "disbursed": disbursed[fund.id],
                "available": available,
                "available_to_commit": min(
                    (left[f] for f in lineage(funds, fund.id) if f in left), default=available
                ),
            }
        )
    return listed


async def available_capacity(
    connection: AsyncConnection, funds: Mapping[str, Fund], fund_id: str
) -> int:
    """What ``fund_id`` can still commit: the least its own pool and its parents' have left."""
    left = await capacity.read(connection)
    chain = [left[f][1] for f in lineage(funds, fund_id) if f in left]
    return min(chain) if chain else 0


__all__ = [
    "PROJECTION",
    "approved_amounts",
    "available_capacity",
    "describe",
    "fund_figures",
    "lineage",
]
