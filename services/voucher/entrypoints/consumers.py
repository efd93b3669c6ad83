"""Voucher work on a timer: expiry (the stages that react to events are the service's)."""

from __future__ import annotations

import asyncio
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
