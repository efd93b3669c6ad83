"""The auditor's replaying commands against a voucher service with hundreds of applications,
on the real broker and PostgreSQL: ``replay --as-of`` gives the statuses the service showed
at three moments, ``diff`` is clean until a projection row is edited by hand, ``history``
tells one application's story, and ``verify --source`` reads the service's own API."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from services.oversight.cli import app
from shared.audit_cli import read_whole_topic
from shared.contracts import Role
from shared.eventstore import create_engine
from tests.e2e.service_process import ServiceProcess, StartService
from tests.e2e.test_three_programmes import business_number, firm

APPLICATIONS = 200


@pytest.fixture
def voucher(start_service: StartService) -> Iterator[ServiceProcess]:
    yield start_service("voucher")


def statuses_now(http: httpx.Client, officer: dict[str, str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = http.get("/v1/applications", params=params, headers=officer).json()
        found.update({a["id"]: (a["status"], a["version"]) for a in page["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def settle(http: httpx.Client, officer: dict[str, str], done: Any, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(done(status) for status, _ in statuses_now(http, officer).values()):
            return
        time.sleep(0.2)
    raise AssertionError("the applications did not settle")


def moment(http: httpx.Client, officer: dict[str, str]) -> tuple[str, dict[str, tuple[str, int]]]:
    """Now, as RFC 3339 with an offset, and what the service shows at it."""
    time.sleep(0.05)
    shown = statuses_now(http, officer)
    at = datetime.now(UTC).astimezone().isoformat()  # local offset, fractional seconds
    time.sleep(0.05)
    return at, shown


def audit(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["audit", *arguments])
    return result.exit_code, result.stdout


def test_replay_diff_and_history_from_the_topics(voucher: ServiceProcess) -> None:
    officer = voucher.headers(Role.OFFICER, "officer-kim")
    topics = ["--service", "voucher", "--topic-prefix", voucher.topic_prefix]
    topics += ["--bootstrap", voucher.bootstrap]
    with httpx.Client(base_url=voucher.url, timeout=10) as http:
        firms = {}
        for _ in range(APPLICATIONS):
            firm_id = business_number()
            response = http.post(
                "/v1/applications",
                headers={
                    **voucher.headers(Role.FIRM, "cfo", firm_id=firm_id),
                    "Idempotency-Key": str(uuid.uuid4()),
                },
                json={
                    "programme_id": "cluster-startup-support-2026",
                    "firm": firm(firm_id),
                    "service_category": "legal",
                    "requested_amount": 1_000_000,
                    "purpose": "patent filing",
                },
            )
            assert response.status_code == 201, response.text
            firms[response.json()["id"]] = firm_id
        settle(http, officer, lambda s: s == "verified")
        first = moment(http, officer)

        ids = sorted(firms)
        for application_id in ids[: APPLICATIONS // 2]:
            response = http.post(
                f"/v1/applications/{application_id}/decisions",
                headers=officer,
                json={"decision": "approve", "reason": "eligible"},
            )
            assert response.status_code == 200, response.text
        settle(http, officer, lambda s: s in ("verified", "issued"))
        second = moment(http, officer)

        for application_id in ids[APPLICATIONS // 2 : APPLICATIONS // 2 + 30]:
            response = http.post(
                f"/v1/applications/{application_id}/withdrawal",
                headers=voucher.headers(Role.FIRM, "cfo", firm_id=firms[application_id]),
                json={},
            )
            assert response.status_code == 200, response.text
        for application_id in ids[APPLICATIONS // 2 + 30 :]:
            response = http.post(
                f"/v1/applications/{application_id}/decisions",
                headers=officer,
                json={"decision": "reject", "reason": "outside the plan"},
            )
            assert response.status_code == 200, response.text
        third = moment(http, officer)
        assert {s for s, _ in third[1].values()} == {"issued", "withdrawn", "rejected"}
        wait_until_published(voucher, http)

    for at, shown in (first, second, third):
        code, out = audit("replay", "--as-of", at, "--json", *topics)
        assert code == 0, out
        replayed = json.loads(out)
        assert replayed["as_of"].endswith("Z")
        assert {
            a["application_id"]: (a["status"], a["version"]) for a in replayed["applications"]
        } == shown

    url = ["--url", f"voucher={voucher.url}", "--token", auditor_token(voucher)]
    code, out = audit("diff", "--json", *topics, *url)
    assert code == 0, out
    assert json.loads(out) == {
        "ok": True,
        "checked": {"voucher.applications": APPLICATIONS},
        "findings": [],
    }

    edited = ids[0]
    asyncio.run(edit_projection(voucher.database_url, edited))
    code, out = audit("diff", "--json", *topics, *url)
    assert code == 1, out
    [finding] = json.loads(out)["findings"]
    assert finding["kind"] == "diff" and finding["application_id"] == edited
    assert finding["expected"]["status"] == "issued" and finding["found"]["status"] == "approved"

    code, out = audit("history", edited, "--json", *topics)
    assert code == 0, out
    story = json.loads(out)
    assert story["chain"] == {"intact": True, "breaks": []}
    assert [e["type"] for e in story["events"]] == [
        "voucher.application.submitted",
        "voucher.application.verified",
        "voucher.application.approved",
        "voucher.voucher.issued",
    ]
    assert story["events"][2]["actor"] == "officer-kim (officer)"

    code, out = audit(
        "verify",
        "--json",
        "--service",
        "voucher",
        "--source",
        voucher.url,
        "--token",
        auditor_token(voucher),
        "--sealing-seconds",
        "3600",
    )
    assert code == 0, out
    checked = json.loads(out)["checked"]
    assert checked["voucher.checkpoints"] >= 1
    assert checked["voucher.applications"] >= APPLICATIONS  # and the providers' streams


def test_usage_errors_exit_2(voucher: ServiceProcess) -> None:
    assert audit("replay", "--as-of", "yesterday")[0] == 2
    assert audit("replay", "--as-of", "2026-12-01T09:00:00")[0] == 2  # no zone
    assert audit("verify", "--source", voucher.url)[0] == 2  # which service?
    assert audit("diff", "--url", "bank=http://x")[0] == 2


def auditor_token(voucher: ServiceProcess) -> str:
    return voucher.headers(Role.AUDITOR, "auditor-han")["Authorization"].removeprefix("Bearer ")


def wait_until_published(voucher: ServiceProcess, http: httpx.Client, within: float = 30) -> None:
    """Until the topic holds every event of the service's log."""
    token = auditor_token(voucher)
    logged = http.get(
        "/v1/events", params={"limit": 10_000}, headers={"Authorization": f"Bearer {token}"}
    ).json()["items"]
    wanted = {e["envelope"]["event_id"] for e in logged}
    deadline = time.monotonic() + within
    topic = voucher.topic_prefix + "voucher.events"
    while time.monotonic() < deadline:
        records = asyncio.run(read_whole_topic(voucher.bootstrap, topic))
        if wanted <= {json.loads(r.value)["event_id"] for r in records}:
            return
        time.sleep(0.2)
    raise AssertionError("the log was not all published")


async def edit_projection(database_url: str, application_id: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "UPDATE applications SET status = 'approved',"
                    " document = jsonb_set(document, '{status}', '\"approved\"') WHERE id = :id"
                ),
                {"id": application_id},
            )
    finally:
        await engine.dispose()
