"""A taxcredit service app in-process, on a fresh database and the real broker; and events of
the other programmes, published on their topics as their relays would."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.taxcredit.main import create_app
from shared.consumer import IdempotentConsumer
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.topics import events_topic
from tests.integration.harness import FIRM_ID, START, ServiceHarness, Start


def firm(**overrides: Any) -> dict[str, Any]:
    return {
        "firm_id": FIRM_ID,
        "name": "Osong Cell Therapeutics",
        "founded_on": "2015-03-02",
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
        **overrides,
    }


def strategic(
    current_year: int,
    previous_years: list[int] | None = None,
    *,
    size: str = "sme",
    reference: str = "FAC-1",
    technology: str = "biopharma-animal-cell-culture",
    tax_year: int = 2026,
    **firm_overrides: Any,
) -> dict[str, Any]:
    return {
        "programme": "strategic_investment",
        "tax_year": tax_year,
        "firm": firm(size=size, **firm_overrides),
        "technology": technology,
        "investment": {"current_year": current_year, "previous_years": previous_years or []},
        "facility_reference": reference,
    }


def mna(technology_value: int, *, reference: str = "DEAL-1", **firm_overrides: Any) -> dict:
    return {
        "programme": "mna_technology_value",
        "tax_year": 2026,
        "firm": firm(technology_innovative=True, **firm_overrides),
        "technology": "biopharma-purification",
        "target_firm_id": "555-55-55555",
        "technology_value": technology_value,
        "deal_reference": reference,
    }


def venture(amount: int, *, reference: str = "INV-1", **firm_overrides: Any) -> dict:
    return {
        "programme": "corporate_venture_investment",
        "tax_year": 2026,
        "firm": firm(size="large", **firm_overrides),
        "investee": "global-open-innovation-fund",
        "amount_invested": amount,
        "investment_reference": reference,
    }


@pytest.fixture
async def taxcredit(start_service: Start) -> AsyncIterator[ServiceHarness]:
    async with start_service("taxcredit", create_app) as harness:
        yield harness


async def submit(harness: ServiceHarness, body: dict[str, Any], key: str) -> dict[str, Any]:
    response = await harness.client.post(
        "/v1/applications", json=body, headers={**harness.firm(), "Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def decide(
    harness: ServiceHarness, application_id: str, officer: str, decision: str = "approve"
) -> Any:
    return await harness.client.post(
        f"/v1/applications/{application_id}/decisions",
        json={"decision": decision, "reason": "figures checked"},
        headers=harness.officer(officer),
    )


# --- the other programmes' events, as their relays publish them --------------------------------


def other_programme_event(
    event_type: str,
    payload: dict[str, Any],
    *,
    aggregate_id: str,
    firm_id: str,
    actor: str,
    at: datetime = START,
    seq: int = 1,
    event_id: str | None = None,
) -> Envelope:
    """An envelope of another programme's log (one link, with a valid hash)."""
    return Envelope.seal(
        aggregate_id=aggregate_id,
        aggregate_seq=seq,
        event=NewEvent(type=event_type, payload=payload),
        occurred_at=at,
        actor=Actor(sub=actor, role=Role.SYSTEM),
        firm_id=firm_id,
        correlation_id=f"corr-{aggregate_id}",
        causation_id=None,
        prev_hash=GENESIS_HASH,
        event_id=event_id,
    )


async def publish(
    bootstrap: str, topic: str, envelopes: Sequence[Envelope | tuple[str, bytes]]
) -> None:
    """Publish as a relay does (key = application id, value = the envelope, acks=all); a
    ``(key, bytes)`` pair is published as it is."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for envelope in envelopes:
            if isinstance(envelope, Envelope):
                key = envelope.aggregate_id
                value = json.dumps(envelope.to_json_dict()).encode()
                headers = [("type", envelope.type.encode())]
            else:
                (key, value), headers = envelope, []
            await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


def programme_topic(harness: ServiceHarness, programme: str) -> str:
    """The events topic of ``programme`` on the harness's deployment (its topic prefix)."""
    runtime = harness.app.state.runtime
    return str(runtime.topic(events_topic(programme)))


def consumer_named(harness: ServiceHarness, name: str) -> IdempotentConsumer:
    runtime = harness.app.state.runtime
    names = {name, runtime.topic(name)}
    [consumer] = [c for c in runtime.extras["consumers"] if c.name in names]
    return consumer


async def until(check: Callable[[], Awaitable[Any] | Any], within: float = 20) -> Any:
    """Poll ``check`` (a function, or a coroutine function) until it answers something true;
    return that."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        answer = check()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer
        await asyncio.sleep(0.03)
    raise AssertionError("condition not met in time")
