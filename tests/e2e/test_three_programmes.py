"""Voucher, taxcredit and fund as three processes on the real broker, each on its own
PostgreSQL database: co-investments become tax-credit claims exactly once, and no firm is
supported twice for one cost or beyond the combined yearly cap."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts import Role
from tests.e2e.service_process import ServiceProcess, StartService, read_topic, wait_for_status

FUND = "global-open-innovation-fund"
MEMBERS = ("officer-kim", "officer-lee")
CAP = 50_000_000_000
"""The packaged support policy's combined yearly cap (shared/catalogue/support-policy.json)."""


def business_number() -> str:
    n = uuid.uuid4().int
    return f"{n % 900 + 100}-{n // 10**3 % 90 + 10}-{n // 10**5 % 90000 + 10000}"


def firm(firm_id: str) -> dict[str, Any]:
    return {
        "firm_id": firm_id,
        "name": "Hanbit Bio",
        "founded_on": "2023-03-02",
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
    }


class Stack:
    """The three services and a client for each."""

    def __init__(self, start_service: StartService) -> None:
        self.voucher = start_service("voucher")
        self.taxcredit = start_service("taxcredit")
        self.fund = start_service("fund")
        self.http = {
            p.service: httpx.Client(base_url=p.url, timeout=10)
            for p in (self.voucher, self.taxcredit, self.fund)
        }

    def close(self) -> None:
        for client in self.http.values():
            client.close()

    def as_firm(self, firm_id: str) -> dict[str, str]:
        return self.fund.headers(Role.FIRM, "cfo", firm_id=firm_id)

    def officer(self, sub: str) -> dict[str, str]:
        return self.fund.headers(Role.OFFICER, sub)

    # --- fund --------------------------------------------------------------------------

    def apply_to_fund(
        self,
        firm_id: str,
        amount: int,
        cost_reference: str,
        co_investors: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> str:
        response = self.http["fund"].post(
            "/v1/applications",
            headers={**self.as_firm(firm_id), "Idempotency-Key": str(uuid.uuid4())},
            json={
                "fund_id": FUND,
                "firm": firm(firm_id),
                "stage": "clinical",
                "instrument": "equity",
                "amount": amount,
                "pre_money_valuation": 90_000_000_000,
                "tranches": [{"amount": amount, "milestone": "first patient dosed"}],
                "co_investors": list(co_investors),
                "due_diligence": {
                    "financials": True,
                    "ip": True,
                    "legal": True,
                    "site_visit": True,
                },
                "cost_reference": cost_reference,
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def commit_investment(self, application_id: str, firm_id: str) -> dict[str, Any]:
        http = self.http["fund"]
        wait_for_status(http, application_id, "verified", self.as_firm(firm_id))
        for member in MEMBERS:
            response = http.post(
                f"/v1/applications/{application_id}/votes",
                headers=self.officer(member),
                json={"vote": "for", "reason": "credible plan"},
            )
            assert response.status_code == 200, response.text
        return wait_for_status(http, application_id, "committed", self.as_firm(firm_id))

    # --- voucher -----------------------------------------------------------------------

    def apply_for_voucher(self, firm_id: str, amount: int, cost_reference: str) -> str:
        response = self.http["voucher"].post(
            "/v1/applications",
            headers={**self.as_firm(firm_id), "Idempotency-Key": str(uuid.uuid4())},
            json={
                "programme_id": "cluster-startup-support-2026",
                "firm": firm(firm_id),
                "service_category": "legal",
                "requested_amount": amount,
                "purpose": "patent filing",
                "cost_reference": cost_reference,
            },
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def issue_voucher(self, application_id: str, firm_id: str) -> None:
        http = self.http["voucher"]
        wait_for_status(http, application_id, "verified", self.as_firm(firm_id))
        response = http.post(
            f"/v1/applications/{application_id}/decisions",
            headers=self.officer("officer-kim"),
            json={"decision": "approve", "reason": "eligible"},
        )
        assert response.status_code == 200, response.text
        wait_for_status(http, application_id, "issued", self.as_firm(firm_id))

    # --- taxcredit ---------------------------------------------------------------------

    def claims_of(self, firm_id: str) -> list[dict[str, Any]]:
        response = self.http["taxcredit"].get(
            "/v1/applications", headers=self.as_firm(firm_id), params={"limit": 200}
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    def verified_claims(self, firm_id: str, count: int, within: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within
        claims: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            claims = self.claims_of(firm_id)
            if len(claims) >= count and all(c["status"] == "verified" for c in claims):
                return claims
            time.sleep(0.1)
        raise AssertionError(f"{firm_id} has {claims}, expected {count} verified claims")


@pytest.fixture
def stack(start_service: StartService) -> Iterator[Stack]:
    running = Stack(start_service)
    try:
        yield running
    finally:
        running.close()


def caught_up(process: ServiceProcess, group: str, topic: str, within: float = 30) -> None:
    """Wait until consumer group ``group`` has committed every record now on ``topic``
    (asked as the group's own member would: assigned, not joined, so it takes nothing over)."""

    async def lag() -> int:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=process.bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            assert partitions, f"{topic} has no partitions"
            ends = await consumer.end_offsets(partitions)
            behind = 0
            for partition, end in ends.items():
                committed = await consumer.committed(partition)
                # the embedded broker may report an end below a fresh commit: caught up
                behind += max(0, end - (committed or 0))
            return behind
        finally:
            await consumer.stop()

    deadline = time.monotonic() + within
    behind = -1
    while time.monotonic() < deadline:
        behind = asyncio.run(lag())
        if behind == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{group} is {behind} records behind on {topic}")


def redeliver(process: ServiceProcess, topic: str, count: int) -> int:
    """Send the first ``count`` records of ``topic`` again, as a broker redelivery would."""

    async def again() -> int:
        records = await read_topic(process.bootstrap, topic, count)
        producer = AIOKafkaProducer(bootstrap_servers=process.bootstrap, acks="all")
        await producer.start()
        try:
            for record in records:
                await producer.send_and_wait(
                    topic, record.value, key=record.key, headers=list(record.headers)
                )
        finally:
            await producer.stop()
        return len(records)

    return asyncio.run(again())


def test_co_investments_become_one_claim_each(stack: Stack) -> None:
    investee, first, second = business_number(), business_number(), business_number()
    co_investors = [
        {"investor_firm_id": first, "name": "Hanbit Pharma", "amount": 1_000_000_000},
        {"investor_firm_id": second, "name": "Daejeon Ventures", "amount": 400_000_000},
    ]
    application_id = stack.apply_to_fund(investee, 5_000_000_000, f"TRIAL-{investee}", co_investors)
    committed = stack.commit_investment(application_id, investee)
    assert len(committed["co_investment_ids"]) == 2

    for investor, amount in ((first, 1_000_000_000), (second, 400_000_000)):
        [claim] = stack.verified_claims(investor, 1)
        assert claim["programme"] == "corporate_venture_investment"
        assert claim["firm_id"] == investor
        assert claim["amount_invested"] == amount
        assert claim["credit"]["amount"] > 0
        events = (
            stack.http["taxcredit"]
            .get(f"/v1/applications/{claim['id']}/events", headers=stack.as_firm(investor))
            .json()
        )
        assert events[0]["actor"]["role"] == "system"
        fund_events = (
            stack.http["fund"]
            .get(f"/v1/applications/{application_id}/events", headers=stack.as_firm(investee))
            .json()
        )
        recorded = {
            e["event_id"] for e in fund_events if e["type"] == "fund.co_investment.recorded"
        }
        assert events[0]["causation_id"] in recorded

    # the broker delivers every fund event again: no claim is opened twice
    fund_topic = stack.fund.topic_prefix + "fund.events"
    total = len(
        stack.http["fund"]
        .get(f"/v1/applications/{application_id}/events", headers=stack.as_firm(investee))
        .json()
    )
    assert redeliver(stack.fund, fund_topic, total) >= total
    group = stack.taxcredit.topic_prefix + "taxcredit-fund-co-investments"
    caught_up(stack.taxcredit, group, fund_topic)
    assert len(stack.claims_of(first)) == 1
    assert len(stack.claims_of(second)) == 1


def test_taxcredit_stopped_while_fund_publishes_still_gets_every_claim(stack: Stack) -> None:
    stack.taxcredit.stop()
    investee, first, second = business_number(), business_number(), business_number()
    co_investors = [
        {"investor_firm_id": first, "name": "Hanbit Pharma", "amount": 800_000_000},
        {"investor_firm_id": second, "name": "Daejeon Ventures", "amount": 300_000_000},
    ]
    application_id = stack.apply_to_fund(investee, 4_000_000_000, f"TRIAL-{investee}", co_investors)
    stack.commit_investment(application_id, investee)

    stack.taxcredit.start()
    assert len(stack.verified_claims(first, 1)) == 1
    assert len(stack.verified_claims(second, 1)) == 1


def test_a_cost_supported_by_a_voucher_is_not_invested_in_again(stack: Stack) -> None:
    firm_id = business_number()
    cost = f"PATENT-{firm_id}"
    voucher_application = stack.apply_for_voucher(firm_id, 8_000_000, cost)
    stack.issue_voucher(voucher_application, firm_id)
    caught_up(
        stack.fund,
        stack.fund.topic_prefix + "fund-support",
        stack.voucher.topic_prefix + "voucher.events",
    )

    application_id = stack.apply_to_fund(firm_id, 2_000_000_000, cost)
    rejected = wait_for_status(
        stack.http["fund"], application_id, "rejected", stack.as_firm(firm_id)
    )
    codes = [r["code"] for r in rejected["rejection_reasons"]]
    assert codes == ["duplicate_support"]
    assert voucher_application in rejected["rejection_reasons"][0]["message"]


def test_a_firm_over_the_combined_cap_is_rejected(stack: Stack) -> None:
    firm_id = business_number()
    near_cap = CAP - 5_000_000
    application_id = stack.apply_to_fund(firm_id, near_cap, f"PLANT-{firm_id}")
    stack.commit_investment(application_id, firm_id)
    caught_up(
        stack.voucher,
        stack.voucher.topic_prefix + "voucher-support",
        stack.fund.topic_prefix + "fund.events",
    )

    voucher_application = stack.apply_for_voucher(firm_id, 8_000_000, f"PATENT-{firm_id}")
    rejected = wait_for_status(
        stack.http["voucher"], voucher_application, "rejected", stack.as_firm(firm_id)
    )
    assert [r["code"] for r in rejected["rejection_reasons"]] == ["combined_cap_exceeded"]
    policy = stack.http["voucher"].get("/v1/support-policy").json()
    assert policy["combined_yearly_cap"] == CAP
    assert policy["assumption"]
