"""A strategic-investment tax credit end to end: the taxcredit service as its own process, the
real broker, PostgreSQL; from the firm's claim to a certificate anyone can check."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from shared.contracts import Role, verify_chain
from tests.e2e.service_process import ServiceProcess, StartService, read_topic, wait_for_status

FIRM_ID = "314-86-24680"
ISSUED = "taxcredit.certificate.issued"


@pytest.fixture
def taxcredit(start_service: StartService) -> ServiceProcess:
    return start_service("taxcredit")


@pytest.fixture
def taxcredit_on_the_broker(start_service: StartService) -> ServiceProcess:
    """Taxcredit with its stages acting on the broker's delivery only: acting on its own
    commits, it certifies an approval a millisecond or two after it commits, and a kill
    sent on the first answer would rarely land before every certificate (the test would
    prove nothing). What a restart recovers is the same either way."""
    return start_service("taxcredit", INCENTIVES_STAGES_ACT_ON_COMMIT="false")


def strategic_claim(
    current_year: int, previous_years: list[int], *, facility_reference: str
) -> dict[str, Any]:
    return {
        "programme": "strategic_investment",
        "tax_year": 2026,
        "firm": {
            "firm_id": FIRM_ID,
            "name": "Osong Cell Therapeutics",
            "founded_on": "2015-03-02",
            "size": "sme",
            "cluster": "osong-bio",
            "industry": "advanced_bio",
        },
        "technology": "biopharma-animal-cell-culture",
        "investment": {"current_year": current_year, "previous_years": previous_years},
        "facility_reference": facility_reference,
    }


def submit(http: httpx.Client, firm: dict[str, str], body: dict[str, Any]) -> str:
    response = http.post(
        "/v1/applications", headers={**firm, "Idempotency-Key": str(uuid.uuid4())}, json=body
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "submitted"
    return str(response.json()["id"])


def approve(http: httpx.Client, process: ServiceProcess, application_id: str, officer: str) -> Any:
    return http.post(
        f"/v1/applications/{application_id}/decisions",
        headers=process.headers(Role.OFFICER, officer),
        json={"decision": "approve", "reason": "figures checked against the facility ledger"},
    )


def read_records(
    process: ServiceProcess, expected: Mapping[str, int], within: float = 20
) -> list[Any]:
    """Every record of the service's topic, once each application in ``expected`` (id -> how
    many events) has at least that many records there."""
    topic = f"{process.topic_prefix}taxcredit.events"
    deadline = time.monotonic() + within
    while True:
        records = asyncio.run(read_topic(process.bootstrap, topic, count=10_000, within=1))
        keys = Counter(r.key for r in records)
        if all(keys[i.encode()] >= n for i, n in expected.items()):
            return records
        if time.monotonic() > deadline:
            raise AssertionError(f"records on {topic} by key: {keys}, expected {expected}")
        time.sleep(0.2)


def test_strategic_investment_from_claim_to_certificate(taxcredit: ServiceProcess) -> None:
    process = taxcredit
    firm = process.headers(Role.FIRM, "ceo", firm_id=FIRM_ID)
    auditor = process.headers(Role.AUDITOR, "auditor-lee")
    # SME: 0.25 × 400,000,000 + 0.10 × (400,000,000 − mean(300, 200, 100 million) = 200,000,000)
    body = strategic_claim(
        400_000_000, [300_000_000, 200_000_000, 100_000_000], facility_reference="FAC-OSONG-7"
    )
    with httpx.Client(base_url=process.url, timeout=10) as http:
        application_id = submit(http, firm, body)
        verified = wait_for_status(http, application_id, "verified", firm)
        credit = verified["credit"]
        assert credit["amount"] == 120_000_000
        assert credit["table_version"] == "2023-1"
        steps = {step["step"]: step["value"] for step in credit["trace"]}
        assert Fraction(steps["base_credit"]) == 100_000_000
        assert Fraction(steps["average_previous_years"]) == 200_000_000
        assert Fraction(steps["incremental_credit"]) == 20_000_000
        assert credit["trace"][-1]["value"] == "120000000"
        assert verified["four_eyes_threshold"] == 500_000_000  # below it: one officer

        approved = approve(http, process, application_id, "officer-kim")
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        certified = wait_for_status(http, application_id, "certified", firm)
        number = certified["certificate"]["number"]
        assert number.startswith("TC-2026-")
        assert certified["certificate"]["amount"] == 120_000_000

        found = http.get(f"/v1/certificates/{number}", headers=auditor)
        assert found.status_code == 200, found.text
        certificate = found.json()
        pdf = http.get(f"/v1/certificates/{number}.pdf", headers=firm)
        served = http.get(f"/v1/applications/{application_id}/events", headers=auditor).json()

    assert [e["type"] for e in served] == [
        "taxcredit.application.submitted",
        "taxcredit.application.verified",
        "taxcredit.application.approved",
        ISSUED,
    ]
    assert verify_chain(served).ok
    [issued] = [e for e in served if e["type"] == ISSUED]
    assert certificate["number"] == number
    assert certificate["application_id"] == application_id
    assert certificate["firm_id"] == FIRM_ID
    assert certificate["amount"] == 120_000_000
    assert certificate["status"] == "valid"
    assert certificate["event_hash"] == issued["hash"]
    assert issued["payload"]["amount"] == 120_000_000 and issued["payload"]["number"] == number

    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert number in text
    assert "120,000,000" in text and "120000000" in text
    assert issued["hash"][:32] in text  # the hash is printed in two lines of 32

    records = read_records(process, {application_id: len(served)})
    on_kafka = [json.loads(r.value) for r in records if r.key == application_id.encode()]
    assert on_kafka == served
    assert verify_chain(on_kafka).ok
    for record in records:  # the seeded rate table's event too
        headers = dict(record.headers)
        assert headers["type"].decode() == json.loads(record.value)["type"]


def test_killed_right_after_approvals_each_application_is_certified_once(
    taxcredit_on_the_broker: ServiceProcess,
) -> None:
    process = taxcredit_on_the_broker
    firm = process.headers(Role.FIRM, "ceo", firm_id=FIRM_ID)
    auditor = process.headers(Role.AUDITOR, "auditor-lee")
    with httpx.Client(base_url=process.url, timeout=10) as http:
        ids = [
            submit(
                http,
                firm,
                strategic_claim(100_000_000 + n, [80_000_000], facility_reference=f"FAC-KILL-{n}"),
            )
            for n in range(6)
        ]
        for application_id in ids:
            wait_for_status(http, application_id, "verified", firm)

    async def approvals_then_kill() -> list[str]:
        """Approve every claim at once; die as soon as the first approval is accepted."""
        accepted: list[str] = []
        first = asyncio.Event()
        async with httpx.AsyncClient(base_url=process.url, timeout=5) as client:

            async def decide(application_id: str) -> None:
                try:
                    response = await client.post(
                        f"/v1/applications/{application_id}/decisions",
                        headers=process.headers(Role.OFFICER, "officer-kim"),
                        json={"decision": "approve", "reason": "figures checked"},
                    )
                except httpx.HTTPError:
                    return  # the service died under this request
                if response.status_code == 200:
                    assert response.json()["status"] == "approved", response.text
                    accepted.append(application_id)
                    first.set()

            async def killer() -> None:
                await asyncio.wait_for(first.wait(), timeout=10)
                await asyncio.to_thread(process.kill)

            await asyncio.gather(*(decide(i) for i in ids), killer())
        return accepted

    accepted = asyncio.run(approvals_then_kill())
    killed_at = datetime.now(UTC)
    assert accepted, "no approval was accepted before the kill; the test proves nothing"
    assert process.process is not None and process.process.returncode is not None

    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        for application_id in ids:
            status = http.get(f"/v1/applications/{application_id}", headers=firm).json()["status"]
            if application_id in accepted:
                assert status in ("approved", "certified"), (application_id, status)
            elif status == "verified":  # its approval died with the process: ask again
                assert approve(http, process, application_id, "officer-park").status_code == 200
        chains = {}
        for application_id in ids:
            certified = wait_for_status(http, application_id, "certified", firm)
            chains[application_id] = http.get(  # officers named: an auditor's view
                f"/v1/applications/{application_id}/events", headers=auditor
            ).json()
            number = certified["certificate"]["number"]
            found = http.get(f"/v1/certificates/{number}", headers=firm).json()
            assert found["application_id"] == application_id and found["status"] == "valid"
        time.sleep(1)  # a second certificate stage run would have appended by now
        for application_id in ids:
            again = http.get(f"/v1/applications/{application_id}/events", headers=auditor).json()
            assert again == chains[application_id]

    for chain in chains.values():
        assert [e["type"] for e in chain].count(ISSUED) == 1, chain
        assert [e["type"] for e in chain][-2:] == ["taxcredit.application.approved", ISSUED]
        assert verify_chain(chain).ok
    issued_at = {i: datetime.fromisoformat(chains[i][-1]["occurred_at"]) for i in accepted}
    assert any(at > killed_at for at in issued_at.values()), (
        "every accepted approval was certified before the kill; the test proves nothing"
    )
    # the relay published what was committed before the kill, maybe twice: never another event
    records = read_records(process, {i: len(chain) for i, chain in chains.items()})
    for application_id, chain in chains.items():
        on_kafka: dict[str, Any] = {}
        for record in records:
            if record.key == application_id.encode():
                envelope = json.loads(record.value)
                on_kafka.setdefault(envelope["event_id"], envelope)
        assert list(on_kafka.values()) == chain
