"""The voucher's read models, kept in step with the log in the same transaction as the events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.voucher.adapters.tables import (
    applications,
    budgets,
    providers,
    redemptions,
)
from services.voucher.domain.model import Application, Redemption
from shared.eventstore import UnitOfWork
from shared.kit.projection import ApplicationProjection, iso


def describe(app: Application) -> dict[str, Any]:
    """What the API shows of a voucher application besides what every application shows."""
    voucher = app.voucher
    return {
        "programme_id": app.programme_id,
        "firm": app.firm.to_json(),
        "service_category": app.service_category,
        "purpose": app.purpose,
        "requested_amount": app.requested_amount,
        "cost_reference": app.cost_reference,
        "approved_amount": app.approved_amount,
        "approvals": [
            {"officer": a.officer, "amount": a.amount, "reason": a.reason, "at": iso(a.at)}
            for a in app.approvals
        ],
        "rejection_reasons": [
            {"code": r.code, "message": r.message} for r in app.rejection_reasons
        ],
        "voucher": None
        if voucher is None
        else {
            "id": voucher.id,
            "amount": voucher.amount,
            "balance": voucher.balance,
            "expires_on": voucher.expires_on.isoformat(),
        },
        "returned_amount": app.returned_amount,
    }


PROJECTION: ApplicationProjection[Application] = ApplicationProjection(
    applications,
    describe,
    paths={"voucher_id": ("voucher", "id"), "voucher_expires_on": ("voucher", "expires_on")},
)
"""The applications table as the service kit keeps it."""


HOLDING = ("approved", "issued", "closed", "expired")
"""Statuses in which an application holds part of the firm's per-programme maximum."""
OPEN = ("verified", "approved", "issued")
"""Statuses of an application that is still open: one per firm and programme."""

_FIRM_APPLICATIONS = sa.text(
    "SELECT id, firm_id, programme_id, status, approved_amount, returned_amount"
    " FROM applications WHERE firm_id = ANY(CAST(:firms AS TEXT[]))"
)


@dataclass
class FirmBook:
    """Every application of some firms, as verification needs them: what each firm holds
    in a programme and whether it has another open application there.

    Loaded once for a batch of verifications and kept current with :meth:`note`, so
    that a verification sees the ones decided before it in the same transaction.
    """

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    firms: set[str] = field(default_factory=set)

    async def load(self, uow: UnitOfWork, firm_ids: set[str]) -> None:
        missing = sorted(firm_ids - self.firms)
        if not missing:
            return
        if uow.connection.dialect.name == "postgresql":
            found = await uow.fetch_all(_FIRM_APPLICATIONS, {"firms": missing})
        else:
            found = [
                dict(r._mapping)
                for r in await uow.connection.execute(
                    sa.select(
                        applications.c.id,
                        applications.c.firm_id,
                        applications.c.programme_id,
                        applications.c.status,
                        applications.c.approved_amount,
                        applications.c.returned_amount,
                    ).where(applications.c.firm_id.in_(missing))
                )
            ]
        for row in found:
            self.rows[row["id"]] = row
        self.firms.update(missing)

    def note(self, app: Application) -> None:
        self.rows[app.id] = {
            "id": app.id,
            "firm_id": app.firm_id,
            "programme_id": app.programme_id,
            "status": str(app.status),
            "approved_amount": app.approved_amount,
            "returned_amount": app.returned_amount,
        }

    def _others(self, firm_id: str, programme_id: str, exclude: str) -> list[dict[str, Any]]:
        assert firm_id in self.firms, f"firm {firm_id} was not loaded"
        return [
            r
            for r in self.rows.values()
            if r["firm_id"] == firm_id and r["programme_id"] == programme_id and r["id"] != exclude
        ]

    def held(self, firm_id: str, programme_id: str, exclude: str) -> int:
        """Won the firm holds in the programme from its other vouchers (less returns)."""
        return sum(
            (r["approved_amount"] or 0) - (r["returned_amount"] or 0)
            for r in self._others(firm_id, programme_id, exclude)
            if r["status"] in HOLDING
        )

    def other_open(self, firm_id: str, programme_id: str, exclude: str) -> str | None:
        for r in self._others(firm_id, programme_id, exclude):
            if r["status"] in OPEN:
                return str(r["id"])
        return None


async def save_redemption(
    uow: UnitOfWork, app: Application, redemption: Redemption, *, new: bool | None = None
) -> None:
    """Record the redemption's row: made when it is requested, brought up to date after.
    ``new``: whether it is the request (default: a ``requested`` one is)."""
    assert app.voucher is not None
    values = {
        "voucher_id": app.voucher.id,
        "application_id": app.id,
        "provider_id": redemption.provider_id,
        "invoice_number": redemption.invoice_number,
        "amount": redemption.amount,
        "service_category": redemption.service_category,
        "status": redemption.status,
        "payout_id": redemption.payout_id,
        "requested_at": redemption.requested_at,
        "paid_at": redemption.paid_at,
    }
    if new if new is not None else redemption.status == "requested":
        await uow.connection.execute(redemptions.insert().values(id=redemption.id, **values))
    else:
        await uow.connection.execute(
            redemptions.update().where(redemptions.c.id == redemption.id).values(**values)
        )


async def save_provider(
    uow: UnitOfWork, provider_id: str, name: str, categories: list[str], by: str
) -> None:
    await uow.connection.execute(
        providers.insert().values(
            id=provider_id,
            name=name,
            service_categories=categories,
            registered_by=by,
            registered_at=uow.now,
        )
    )


async def provider_categories(uow: UnitOfWork, provider_id: str) -> frozenset[str] | None:
    row = (
        await uow.connection.execute(
            sa.select(providers.c.service_categories).where(providers.c.id == provider_id)
        )
    ).first()
    if row is None:
        return None
    categories = row.service_categories
    if isinstance(categories, str):
        categories = json.loads(categories)
    return frozenset(categories)


async def list_providers(connection: AsyncConnection) -> list[dict[str, Any]]:
    rows = await connection.execute(sa.select(providers).order_by(providers.c.id))
    return [
        {
            "id": r.id,
            "name": r.name,
            "service_categories": list(r.service_categories),
            "registered_at": iso(r.registered_at),
        }
        for r in rows
    ]


async def application_for_voucher(connection: AsyncConnection, voucher_id: str) -> str | None:
    found = (
        await connection.execute(
            sa.select(applications.c.id).where(applications.c.voucher_id == voucher_id)
        )
    ).scalar_one_or_none()
    return str(found) if found is not None else None


async def requested_redemptions(
    connection: AsyncConnection, limit: int = 500
) -> list[tuple[str, str]]:
    """``(application id, redemption id)`` of the redemptions waiting for their payout, oldest first."""
    rows = await connection.execute(
        sa.select(redemptions.c.application_id, redemptions.c.id)
        .where(redemptions.c.status == "requested")
        .order_by(redemptions.c.requested_at, redemptions.c.id)
        .limit(limit)
    )
    return [(r.application_id, r.id) for r in rows]


async def redemptions_of(connection: AsyncConnection, voucher_id: str) -> list[dict[str, Any]]:
    rows = await connection.execute(
        sa.select(redemptions)
        .where(redemptions.c.voucher_id == voucher_id)
        .order_by(redemptions.c.requested_at, redemptions.c.id)
    )
    return [
        {
            "id": r.id,
            "voucher_id": r.voucher_id,
            "provider_id": r.provider_id,
            "invoice_number": r.invoice_number,
            "amount": r.amount,
            "service_category": r.service_category,
            "status": r.status,
            "payout_id": r.payout_id,
            "requested_at": iso(r.requested_at),
            "paid_at": iso(r.paid_at) if r.paid_at else None,
        }
        for r in rows
    ]


async def invoice_taken(uow: UnitOfWork, provider_id: str, invoice_number: str) -> bool:
    found = (
        await uow.connection.execute(
            sa.select(redemptions.c.id).where(
                redemptions.c.provider_id == provider_id,
                redemptions.c.invoice_number == invoice_number,
            )
        )
    ).first()
    return found is not None


async def due_for_expiry(connection: AsyncConnection, today: Any) -> list[str]:
    rows = await connection.execute(
        sa.select(applications.c.id).where(
            applications.c.status == "issued", applications.c.voucher_expires_on < today
        )
    )
    return [str(r.id) for r in rows]


async def money_by_programme(connection: AsyncConnection) -> dict[str, tuple[int, int, int]]:
    """Per programme: ``(budget_total, available, paid)``. ``available`` is what the budget
    can still hold; ``paid`` the redemptions paid out; ``committed`` = total − available − paid
    (held for approved and issued vouchers, not yet paid)."""
    pools = await budgets.read(connection)
    paid_rows = await connection.execute(
        sa.select(applications.c.programme_id, sa.func.sum(redemptions.c.amount))
        .join(applications, applications.c.id == redemptions.c.application_id)
        .where(redemptions.c.status == "paid")
        .group_by(applications.c.programme_id)
    )
    paid = {programme_id: int(amount or 0) for programme_id, amount in paid_rows}
    return {
        programme_id: (total, available, paid.get(programme_id, 0))
        for programme_id, (total, available) in pools.items()
    }
