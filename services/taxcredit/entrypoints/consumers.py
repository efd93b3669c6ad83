"""Kafka entry points of the taxcredit service beyond its own stages: the fund's
co-investments, each opening a corporate venture investment claim for the investor."""

from __future__ import annotations

from typing import Final

from services.taxcredit.domain.co_investments import (
    CO_INVESTMENT_RECORDED,
    SOURCE,
    claim_for_co_investment,
)
from services.taxcredit.service_layer import TaxCreditService
from shared.consumer import IdempotentConsumer, broker_dead_letters
from shared.contracts import Actor, Envelope, Role
from shared.eventstore import EventContext, UnitOfWork
from shared.service import ServiceRuntime
from shared.topics import DLQ_TOPIC, events_topic

FUND_CO_INVESTMENTS: Final = "taxcredit-fund-co-investments"
"""The consumer (and its Kafka group) reading ``fund.events`` for co-investments."""

CO_INVESTMENTS = Actor(sub=FUND_CO_INVESTMENTS, role=Role.SYSTEM)
"""Who opens a co-investment's claim, as its events record it."""


def co_investment_context(event: Envelope, investor_firm_id: str) -> EventContext:
    """The claim is the investor's, opened by the system, caused by the fund's event."""
    return EventContext(
        actor=CO_INVESTMENTS,
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
        firm_id=investor_firm_id,
    )


def subscribe_fund_co_investments(
    runtime: ServiceRuntime, service: TaxCreditService
) -> IdempotentConsumer:
    """Consume ``fund.events`` from its beginning; each ``fund.co_investment.recorded``
    opens one claim, however often it is delivered: the inbox passes over an event applied
    before, and the claim's id comes from the event (``open_claim`` finds a claim opened
    before). Other fund events pass by; one that cannot be read goes to the DLQ."""
    consumer = IdempotentConsumer(
        runtime.topic(FUND_CO_INVESTMENTS),
        runtime.store,
        dead_letters=broker_dead_letters(runtime.broker, runtime.topic(DLQ_TOPIC)),
        ignore_unknown=True,  # the topic carries every event of the fund programme
        on_applied=runtime.wake_relay,
    )

    @consumer.handles(CO_INVESTMENT_RECORDED)
    async def open_claim(uow: UnitOfWork, event: Envelope) -> None:
        command = claim_for_co_investment(event)
        context = co_investment_context(event, command.firm.firm_id)
        await service.open_claim(uow, SOURCE, command, context)

    runtime.extras.setdefault("consumers", []).append(consumer)
    consumer.subscribe(
        runtime.broker,
        runtime.topic(events_topic("fund")),
        session_timeout_ms=runtime.settings.kafka_session_timeout_ms,
        fetch_max_wait_ms=100,  # a claim opened a tenth of a second later is no worse
    )
    return consumer


__all__ = [
    "CO_INVESTMENTS",
    "FUND_CO_INVESTMENTS",
    "co_investment_context",
    "subscribe_fund_co_investments",
]
