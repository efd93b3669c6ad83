"""The payout gateway port and its two adapters: the in-database ledger and a treasury over HTTP.

A payout id is derived from what it pays (a redemption, a tranche), so a retry after a
crash asks for the same payout again and the payee is paid once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import httpx
import sqlalchemy as sa

from shared.eventstore import UnitOfWork
from shared.eventstore.schema import UTCDateTime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PayoutOrder:
    payout_id: str
    """The idempotency key of the payment: the same id is never paid twice."""
    reference: str
    """What is paid: a redemption id, a tranche of an investment."""
    payer: str
    """The account debited (``programme:<id>``, ``fund:<id>``)."""
    payee: str
    """The account credited (``provider:<id>``, ``firm:<id>``)."""
    amount: int


@dataclass(frozen=True, slots=True)
class PayoutReceipt:
    payout_id: str
    reference: str


class PayoutGateway(Protocol):
    async def pay(self, uow: UnitOfWork, order: PayoutOrder) -> PayoutReceipt:
        """Pay ``order`` once, whatever happened to earlier attempts with the same payout id."""
        ...


def ledger_table(metadata: sa.MetaData) -> sa.Table:
    """``ledger_entries``: one double entry per payout id, one per thing paid."""
    return sa.Table(
        "ledger_entries",
        metadata,
        sa.Column("payout_id", sa.String(100), primary_key=True),
        sa.Column("debit_account", sa.String(100), nullable=False),
        sa.Column("credit_account", sa.String(100), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(200), nullable=False, unique=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_ledger_positive"),
    )


class LedgerPayouts:
    """Double entry in the service's own database, in the payout stage's transaction."""

    def __init__(self, table: sa.Table) -> None:
        self.table = table

    async def pay(self, uow: UnitOfWork, order: PayoutOrder) -> PayoutReceipt:
        t = self.table
        booked = await uow.connection.execute(
            sa.select(t.c.payout_id).where(t.c.payout_id == order.payout_id)
        )
        if booked.first() is None:
            await uow.connection.execute(
                t.insert().values(
                    payout_id=order.payout_id,
                    debit_account=order.payer,
                    credit_account=order.payee,
                    amount=order.amount,
                    reference=order.reference,
                    recorded_at=uow.now,
                )
            )
        return PayoutReceipt(order.payout_id, reference=f"ledger:{order.payout_id}")


class TreasuryError(RuntimeError):
    pass


class TreasuryPayouts:
    """A treasury endpoint over HTTP; the payout id is its idempotency key."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        attempts: int = 5,
        first_backoff: float = 0.2,
    ) -> None:
        self._client = client
        self._url = url
        self._attempts = attempts
        self._first_backoff = first_backoff

    async def pay(self, uow: UnitOfWork, order: PayoutOrder) -> PayoutReceipt:
        body = {
            "payout_id": order.payout_id,
            "payee": order.payee,
            "payer": order.payer,
            "amount": order.amount,
            "currency": "KRW",
            "reference": order.reference,
        }
        delay = self._first_backoff
        last: Exception | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(
                    self._url, json=body, headers={"Idempotency-Key": order.payout_id}
                )
                if response.status_code < 500:
                    response.raise_for_status()
                    reference = str(response.json().get("reference", order.payout_id))
                    return PayoutReceipt(order.payout_id, reference)
                last = TreasuryError(f"treasury answered {response.status_code}")
            except httpx.TransportError as error:
                last = error
            except httpx.HTTPStatusError as error:
                raise TreasuryError(
                    f"treasury refused payout {order.payout_id}: {error}"
                ) from error
            log.warning("payout %s attempt %d failed: %s", order.payout_id, attempt, last)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise TreasuryError(f"treasury unreachable for payout {order.payout_id}: {last}")


__all__ = [
    "LedgerPayouts",
    "PayoutGateway",
    "PayoutOrder",
    "PayoutReceipt",
    "TreasuryError",
    "TreasuryPayouts",
    "ledger_table",
]
