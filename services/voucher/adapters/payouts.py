"""The payout gateway port and its two adapters: the in-database ledger and a treasury over HTTP.

Either way a payout id is derived from its redemption, so a retry after a crash
asks for the same payout again and the payee is paid once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

import httpx

from services.voucher.adapters.projection import record_ledger_entry
from shared.eventstore import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PayoutOrder:
    payout_id: str
    redemption_id: str
    voucher_id: str
    programme_id: str
    provider_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class PayoutReceipt:
    payout_id: str
    reference: str


class PayoutGateway(Protocol):
    async def pay(self, uow: UnitOfWork, order: PayoutOrder) -> PayoutReceipt:
        """Pay ``order`` once, whatever happened to earlier attempts with the same payout id."""
        ...


def payout_id_for(redemption_id: str) -> str:
    return f"po-{redemption_id}"


class LedgerPayouts:
    """Double entry in the service's own database: programme budget account to provider account."""

    async def pay(self, uow: UnitOfWork, order: PayoutOrder) -> PayoutReceipt:
        await record_ledger_entry(
            uow,
            payout_id=order.payout_id,
            debit_account=f"programme:{order.programme_id}",
            credit_account=f"provider:{order.provider_id}",
            amount=order.amount,
            redemption_id=order.redemption_id,
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
            "payee": f"provider:{order.provider_id}",
            "payer": f"programme:{order.programme_id}",
            "amount": order.amount,
            "currency": "KRW",
            "reference": order.redemption_id,
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
