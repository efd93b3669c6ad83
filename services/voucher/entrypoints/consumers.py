"""Voucher work on a timer: expiry (the stages that react to events are the service's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.voucher.service_layer import VoucherService

log = logging.getLogger(__name__)


async def expire_vouchers_periodically(service: VoucherService, every: float = 60.0) -> None:
    """Vouchers past their date expire and give their unspent rest back to the budget."""
    while True:
        try:
            expired = await service.expire_due_vouchers()
            if expired:
                log.info("expired %d vouchers", expired)
        except Exception:
            log.exception("voucher expiry failed; trying again later")
        await asyncio.sleep(every)


async def pay_due_payouts(service: VoucherService, every: float = 1.0) -> None:
    """The payout worker, when a treasury pays: each payout that is due, tried outside any
    command's transaction, at once when a redemption is requested and every ``every`` s."""
    while True:
        service.payouts_due.clear()
        try:
            await service.pay_due()
        except Exception:
            log.exception("paying due payouts failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.payouts_due.wait(), every)
