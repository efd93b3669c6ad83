"""Co-investments the fund service records become tax-credit claims of the investors: through
the real broker, on PostgreSQL and SQLite, once each however often the event comes, whether
taxcredit was running when it was published or not."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.fund.domain.events import CoInvestmentRecorded
from services.taxcredit.main import create_app
from shared.contracts import Envelope, verify_chain
from shared.topics import ensure_topics, events_topic, standard_topics
from tests.integration.harness import ServiceHarness, running, service_settings, wait_for_status
from tests.integration.taxcredit.conftest import (
    consumer_named,
    other_programme_event,
    programme_topic,
    publish,
    until,
)

INVESTOR = "220-81-12345"
OTHER_INVESTOR = "220-81-67890"
INVESTEE = "314-86-24680"
CONSUMER = "taxcredit-fund-co-investments"


def co_investment(
    investor: str = INVESTOR, amount: int = 2_000_000_000, index: int = 0
) -> Envelope:
    """``fund.co_investment.recorded`` as the fund service publishes it."""
    application = "fa_" + uuid.uuid4().hex
    payload = CoInvestmentRecorded(
        investor_firm_id=investor,
        name="Hanbit Pharma Holdings",
        amount=amount,
        co_investment_id=f"{application}:{index}",
        fund_id="global-open-innovation",
        investee_firm_id=INVESTEE,
        application_id=application,
    ).event()
    return other_programme_event(
        payload.type,
        payload.payload,
        aggregate_id=application,
        firm_id=INVESTEE,
        actor="fund-commitments",
        seq=7,
    )


async def claims_of(harness: ServiceHarness, firm_id: str) -> list[dict[str, Any]]:
    response = await harness.client.get(
        "/v1/applications", headers=harness.firm(firm_id=firm_id, sub="cfo")
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def all_claims(harness: ServiceHarness) -> list[dict[str, Any]]:
    response = await harness.client.get("/v1/applications", headers=harness.officer())
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_co_investment_published_before_taxcredit_ran_is_claimed_once(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = unique_name("t") + "."
    await ensure_topics(kafka_bootstrap, standard_topics(2, prefix=prefix))
    fund_events = prefix + events_topic("fund")
    recorded = co_investment()
    await publish(kafka_bootstrap, fund_events, [recorded, recorded])  # the relay sent it twice

    settings = service_settings("taxcredit", database_url, kafka_bootstrap, prefix, tmp_path)
    async with running(create_app, settings) as taxcredit:
        [claim] = await until(lambda: claims_of(taxcredit, INVESTOR))
        verified = await wait_for_status(taxcredit, claim["id"], "verified")
        assert verified["credit"]["amount"] == 100_000_000  # 0.05 × 2,000,000,000
        assert verified["firm_id"] == INVESTOR
        assert verified["programme"] == "corporate_venture_investment"
        assert verified["tax_year"] == 2026
        assert verified["investment_reference"] == f"fund-co-investment:{recorded.event_id}"
        consumer = consumer_named(taxcredit, CONSUMER)
        await until(lambda: consumer.stats.applied + consumer.stats.duplicates >= 2)

        await publish(kafka_bootstrap, fund_events, [recorded])  # and once more, later
        await until(lambda: consumer.stats.duplicates >= 2)
        assert consumer.stats.applied == 1
        assert [c["id"] for c in await all_claims(taxcredit)] == [claim["id"]]

    async with running(create_app, settings) as again:  # restarted: nothing opens twice
        await publish(kafka_bootstrap, fund_events, [recorded])
        consumer = consumer_named(again, CONSUMER)
        await until(lambda: consumer.stats.duplicates >= 1)
        assert consumer.stats.applied == 0
        assert [c["id"] for c in await all_claims(again)] == [claim["id"]]
        chain = await again.client.get(
            f"/v1/applications/{claim['id']}/events", headers=again.officer()
        )
        assert [e["type"] for e in chain.json()] == [
            "taxcredit.application.submitted",
            "taxcredit.application.verified",
        ]


async def test_the_claim_is_the_investors_caused_by_the_fund_event_and_bad_ones_go_to_the_dlq(
    taxcredit: ServiceHarness, kafka_bootstrap: str
) -> None:
    fund_events = programme_topic(taxcredit, "fund")
    mine, theirs = co_investment(), co_investment(OTHER_INVESTOR, amount=12_345, index=1)
    unreadable = {**mine.payload, "amount": 0}
    bad = other_programme_event(
        mine.type, unreadable, aggregate_id=mine.aggregate_id, firm_id=INVESTEE, actor="fund"
    )
    committed = other_programme_event(  # another fund event: a grant, not a co-investment
        "fund.investment.committed",
        {
            "committed_on": "2026-11-25",
            "amount": 5_000_000_000,
            "firm_id": INVESTEE,
            "programme": "fund",
            "year": 2026,
            "fund_id": "global-open-innovation",
            "cost_reference": "COST-INVESTEE-1",
        },
        aggregate_id=mine.aggregate_id,
        firm_id=INVESTEE,
        actor="fund-commitments",
        seq=6,
    )
    await publish(
        kafka_bootstrap,
        fund_events,
        [committed, bad, (mine.aggregate_id, b"not json"), mine, theirs, mine],
    )

    [claim] = await until(lambda: claims_of(taxcredit, INVESTOR))
    verified = await wait_for_status(taxcredit, claim["id"], "verified")
    assert verified["credit"]["amount"] == 100_000_000
    [other] = await until(lambda: claims_of(taxcredit, OTHER_INVESTOR))
    other_verified = await wait_for_status(taxcredit, other["id"], "verified")
    assert other_verified["credit"]["amount"] == 617  # floor(0.05 × 12,345)
    assert other_verified["firm"]["size"] == "large"
    assert other_verified["firm"]["founded_on"] == "1900-01-01"
    assert other_verified["firm"]["cluster"] == other_verified["firm"]["industry"] == "undeclared"

    consumer = consumer_named(taxcredit, CONSUMER)
    await until(lambda: consumer.stats.duplicates >= 1)
    assert consumer.stats.applied == 2  # mine and theirs, once each
    assert consumer.stats.dead_lettered == 2  # the unreadable payload and the non-JSON value
    assert {c["id"] for c in await all_claims(taxcredit)} == {claim["id"], other["id"]}
    assert await claims_of(taxcredit, INVESTEE) == []  # the investee claims nothing

    chain = await taxcredit.client.get(
        f"/v1/applications/{claim['id']}/events", headers=taxcredit.firm(firm_id=INVESTOR)
    )
    assert chain.status_code == 200
    first, second = chain.json()
    assert first["type"] == "taxcredit.application.submitted"
    assert first["causation_id"] == mine.event_id
    assert first["correlation_id"] == mine.correlation_id
    assert first["actor"] == {"sub": CONSUMER, "role": "system"}
    assert first["firm_id"] == INVESTOR
    assert second["type"] == "taxcredit.application.verified"
    assert second["payload"]["facts"]["support"]["cost_reference"] == (
        f"fund-co-investment:{mine.event_id}"
    )
    assert verify_chain(chain.json()).ok
    rival = await taxcredit.client.get(
        f"/v1/applications/{claim['id']}", headers=taxcredit.firm(firm_id=OTHER_INVESTOR)
    )
    assert rival.status_code == 404
    assert first["payload"]["claim"]["amount_invested"] == 2_000_000_000
