"""Tranches paid by a treasury over HTTP that fails, times out after paying and goes down (both
backends, the real broker, a real local HTTP server as the treasury).

The payout stage notes a released tranche due; the payout worker asks the treasury outside
any command's transaction, with the tranche's payout id as the Idempotency-Key, and records
the tranche paid once the treasury answers. However the treasury misbehaves, each tranche
is paid once, there and in the log. A cancellation asks the treasury first: a tranche it
paid after all is recorded paid and not given back; one it did not pay is never paid.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from services.fund.main import create_app
from services.fund.service_layer import FundService
from shared.contracts import Actor, Role
from shared.domain import Conflict
from shared.eventstore import EventContext
from tests.integration.fund.conftest import (
    GOIF,
    apply,
    document,
    events_of,
    funds,
    investment,
    release,
    vote,
)
from tests.integration.harness import ServiceHarness, running, service_settings, wait_until
from tests.integration.treasury import Treasury, paid_by

AMOUNT = 3_000_000_000
TRANCHES = [1_000_000_000, 1_200_000_000, 800_000_000]


@pytest.fixture
async def fund(
    database_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    treasury: tuple[Treasury, str],
) -> AsyncIterator[ServiceHarness]:
    settings = paid_by(
        service_settings("fund", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path),
        treasury[1],
    )
    async with running(create_app, settings) as harness:
        yield harness


async def committed(fund: ServiceHarness) -> str:
    created = await apply(fund, investment(AMOUNT, tranches=TRANCHES), "k1")
    application_id = str(created["id"])
    await wait_until(fund, application_id, lambda a: a["status"] == "verified")
    for member in ("officer-kim", "officer-lee"):
        assert (await vote(fund, application_id, member)).status_code == 200
    await wait_until(fund, application_id, lambda a: a["status"] == "committed")
    return application_id


def statuses(application: dict[str, Any]) -> list[str]:
    return [t["status"] for t in application["tranches"]]


async def tranche_paid(fund: ServiceHarness, application_id: str, number: int) -> dict[str, Any]:
    return await wait_until(
        fund, application_id, lambda a: a["tranches"][number - 1]["status"] == "paid"
    )


async def until_asked(treasury: Treasury, times: int, within: float = 10) -> None:
    """Until the treasury was asked to pay ``times`` times."""
    deadline = asyncio.get_running_loop().time() + within
    while treasury.requests < times:
        assert asyncio.get_running_loop().time() < deadline, f"asked {treasury.requests} times"
        await asyncio.sleep(0.02)


async def cancel(fund: ServiceHarness, application_id: str) -> Any:
    return await fund.client.post(
        f"/v1/applications/{application_id}/cancellation",
        json={"reason": "the trial was stopped"},
        headers={**fund.officer("officer-park"), "Idempotency-Key": f"cancel-{application_id}"},
    )


async def test_a_failing_late_treasury_pays_each_tranche_once_and_the_last_completes(
    fund: ServiceHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    before = await funds(fund)
    application_id = await committed(fund)
    fake.failing, fake.hanging = 2, 2  # two 500s, then two payments answered too late

    for number in (1, 2, 3):
        assert (await release(fund, application_id, number)).status_code == 200
        await tranche_paid(fund, application_id, number)
    completed = await wait_until(fund, application_id, lambda a: a["status"] == "completed")

    assert len(fake.paid) == 3  # once each at the treasury, though asked more often
    assert fake.requests > 3
    assert sorted(t["payout_id"] for t in completed["tranches"]) == sorted(fake.paid)
    assert [p["amount"] for p in fake.paid.values()] == TRANCHES
    assert {p["payee"] for p in fake.paid.values()} == {f"firm:{completed['firm_id']}"}
    chain = await events_of(fund, application_id)
    released = {e["payload"]["number"]: e for e in chain if e["type"] == "fund.tranche.released"}
    paid = [e for e in chain if e["type"] == "fund.tranche.paid"]
    assert len(paid) == 3
    for event in paid:  # each payment caused by its tranche's release, in its correlation
        cause = released[event["payload"]["number"]]
        assert event["causation_id"] == cause["event_id"]
        assert event["correlation_id"] == cause["correlation_id"]
        assert event["actor"] == {"sub": "fund-payout", "role": "system"}
    figures = (await funds(fund))[GOIF]
    assert figures["disbursed"] - before[GOIF]["disbursed"] == AMOUNT
    assert figures["committed"] == before[GOIF]["committed"]


async def test_a_tranche_waits_while_the_treasury_is_down_and_a_cancellation_gives_it_back(
    fund: ServiceHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    before = await funds(fund)
    application_id = await committed(fund)
    fake.down = True
    assert (await release(fund, application_id, 1)).status_code == 200
    await until_asked(fake, 3)  # asked again and again, longer apart
    assert statuses(await document(fund, application_id)) == ["released", "planned", "planned"]

    cancelled = await cancel(fund, application_id)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert statuses(cancelled.json()) == ["cancelled"] * 3
    fake.down = False
    asked = fake.requests
    await asyncio.sleep(1.5)  # the worker looks every second
    assert fake.requests == asked and fake.paid == {}  # never paid after its cancellation
    figures = (await funds(fund))[GOIF]
    assert figures["available"] == before[GOIF]["available"]  # all of it given back
    assert figures["disbursed"] == before[GOIF]["disbursed"]


async def test_a_tranche_the_treasury_paid_after_all_is_recorded_paid_not_given_back(
    fund: ServiceHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    before = await funds(fund)
    application_id = await committed(fund)
    fake.hanging = 1_000  # pays, and answers only after the worker gave up, every time
    assert (await release(fund, application_id, 1)).status_code == 200
    await until_asked(fake, 1)
    await asyncio.sleep(0.6)  # the worker's attempt timed out: it does not know it paid
    assert statuses(await document(fund, application_id))[0] == "released"
    assert len(fake.paid) == 1

    cancelled = await cancel(fund, application_id)
    assert cancelled.status_code == 200, cancelled.text
    assert statuses(cancelled.json()) == ["paid", "cancelled", "cancelled"]
    assert cancelled.json()["tranches"][0]["payout_id"] in fake.paid
    figures = (await funds(fund))[GOIF]
    assert figures["disbursed"] - before[GOIF]["disbursed"] == TRANCHES[0]
    assert before[GOIF]["available"] - figures["available"] == TRANCHES[0]
    chain = await events_of(fund, application_id)
    assert [e["type"] for e in chain][-2:] == ["fund.tranche.paid", "fund.investment.cancelled"]
    assert chain[-1]["payload"]["returned_amount"] == AMOUNT - TRANCHES[0]
    assert len(fake.paid) == 1


async def test_a_cancellation_the_treasury_cannot_answer_changes_nothing(
    fund: ServiceHarness, treasury: tuple[Treasury, str]
) -> None:
    fake, _ = treasury
    application_id = await committed(fund)
    fake.down = fake.lookups_down = True
    assert (await release(fund, application_id, 1)).status_code == 200
    await until_asked(fake, 1)
    events_before = await events_of(fund, application_id)

    refused = await cancel(fund, application_id)
    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "tranche 1" in refused.json()["detail"]
    assert await events_of(fund, application_id) == events_before
    assert statuses(await document(fund, application_id)) == ["released", "planned", "planned"]

    fake.lookups_down = False  # it can say now: it did not pay
    cancelled = await cancel(fund, application_id)  # the same key: it was not recorded
    assert cancelled.status_code == 200, cancelled.text
    assert statuses(cancelled.json()) == ["cancelled"] * 3
    fake.down = False
    await asyncio.sleep(1.5)
    assert fake.paid == {}


async def test_a_tranche_released_while_a_cancellation_is_made_makes_it_a_conflict(
    fund: ServiceHarness, treasury: tuple[Treasury, str]
) -> None:
    """A cancellation holds the payouts due when it begins; one released after that (not
    held, so the worker may be paying it) refuses the cancellation rather than give back
    a tranche the treasury may be paying."""
    fake, _ = treasury
    application_id = await committed(fund)
    fake.down = True
    service: FundService = fund.service
    async with service.payouts_settled(application_id) as settled:
        assert settled == frozenset()  # nothing due yet
        assert (await release(fund, application_id, 1)).status_code == 200
        await until_asked(fake, 1)  # noted due, and the worker is asking for it
        context = EventContext(
            actor=Actor(sub="officer-park", role=Role.OFFICER), correlation_id="c"
        )
        with pytest.raises(Conflict, match="tranche 1 was released"):
            async with service.store.transaction() as uow:
                await service.cancel(
                    uow, application_id, reason="stop", context=context, settled=settled
                )
    assert statuses(await document(fund, application_id)) == ["released", "planned", "planned"]
    cancelled = await cancel(fund, application_id)  # asked again: it holds tranche 1 now
    assert cancelled.status_code == 200, cancelled.text
    fake.down = False
    await asyncio.sleep(1.5)
    assert fake.paid == {}
