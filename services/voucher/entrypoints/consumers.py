"""Kafka entry points of the voucher service: its own stages, driven by its own events."""

from __future__ import annotations

import asyncio
import logging

from services.voucher.domain.events import E
from services.voucher.service_layer import VoucherService
from shared.consumer import IdempotentConsumer
from shared.kit.stages import subscribe_stages
from shared.service import ServiceRuntime

log = logging.getLogger(__name__)


def subscribe_voucher_stages(
    runtime: ServiceRuntime, service: VoucherService
) -> IdempotentConsumer:
    """Verification, voucher issue and payout react to events on voucher.events."""
    return subscribe_stages(
        runtime,
        "voucher-stages",
        batches={
            E.SUBMITTED: service.when_applications_submitted_verify,
            E.APPROVED: service.when_applications_approved_issue_vouchers,
        },
        singles={E.REDEMPTION_REQUESTED: service.when_redemption_requested_pay},
    )


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
