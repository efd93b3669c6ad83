"""Kafka entry points of the voucher service: its own stages, driven by its own events."""

from __future__ import annotations

import asyncio
import logging

from services.voucher.domain.model import E
from services.voucher.service_layer import VoucherService
from shared.consumer import IdempotentConsumer, broker_dead_letters
from shared.service import ServiceRuntime
from shared.topics import DLQ_TOPIC

log = logging.getLogger(__name__)


def subscribe_stages(runtime: ServiceRuntime, service: VoucherService) -> IdempotentConsumer:
    """Verification, voucher issue and payout react to events on voucher.events."""
    stages = IdempotentConsumer(
        runtime.topic("voucher-stages"),
        runtime.store,
        dead_letters=broker_dead_letters(runtime.broker, runtime.topic(DLQ_TOPIC)),
        ignore_unknown=True,  # the topic carries every voucher event; these stages want three
        on_applied=runtime.wake_relay,  # the stages' own events go out without waiting a poll
    )
    stages.handles_batch(E.SUBMITTED)(service.when_applications_submitted_verify)
    stages.handles_batch(E.APPROVED)(service.when_applications_approved_issue_vouchers)
    stages.handles(E.REDEMPTION_REQUESTED)(service.when_redemption_requested_pay)
    runtime.extras.setdefault("consumers", []).append(stages)
    stages.subscribe(
        runtime.broker,
        runtime.events_topic,
        session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
    )
    return stages


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
