"""Fund tranches are paid exactly once though the service dies (SIGKILL) around their release
and payout: the fund service as its own process, on PostgreSQL and the real broker.

The kills land where a crash hurts: after a release committed and before its payout ran;
right after a payout committed, before its event was published or the consumer's offset
moved on; and while a release request was in flight, so the officer retries it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts import Role, verify_chain
from tests.e2e.service_process import ServiceProcess, StartService

FIRM_ID = "214-86-13579"
GOIF = "global-open-innovation-fund"
MEGA = "bio-mega-fund"
TRANCHES = [1_000_000_000, 1_500_000_000, 2_500_000_000]
AMOUNT = sum(TRANCHES)

Seen = list[tuple[str, list[str]]]
"""What polling saw of an application: its status and its tranches' statuses."""


@pytest.fixture
def fund_process(start_service: StartService) -> ServiceProcess:
    """The fund service, its stages acting on the broker's delivery only.

    Acting on its own commits, the service pays a released tranche a millisecond or two
    after the release commits, before the answer reaches the test: no kill sent on the
    answer lands between the two. The window these kills need is the broker's round trip.
    What a restart recovers is the same either way: a release committed and not paid comes
    back through the broker, and the inbox keeps its payout to one."""
    return start_service("fund", INCENTIVES_STAGES_ACT_ON_COMMIT="false")


def investment(cost_reference: str) -> dict[str, Any]:
    return {
        "fund_id": GOIF,
        "firm": {
            "firm_id": FIRM_ID,
            "name": "Osong Cell Therapeutics",
            "founded_on": "2015-03-02",
            "size": "sme",
            "cluster": "osong-bio",
            "industry": "advanced_bio",
        },
        "stage": "clinical",
        "instrument": "equity",
        "amount": AMOUNT,
        "pre_money_valuation": 30_000_000_000,
        "tranches": [
            {"amount": a, "milestone": f"phase {n} read-out"} for n, a in enumerate(TRANCHES, 1)
        ],
        "due_diligence": {"financials": True, "ip": True, "legal": True, "site_visit": True},
        "cost_reference": cost_reference,
    }


def watch(
    http: httpx.Client,
    process: ServiceProcess,
    application_id: str,
    until: Callable[[dict[str, Any]], bool],
    seen: Seen,
    within: float = 30,
) -> dict[str, Any]:
    """Poll the application until ``until`` holds, recording every state seen on the way."""
    headers = process.headers(Role.OFFICER, "officer-park")
    deadline = time.monotonic() + within
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = http.get(f"/v1/applications/{application_id}", headers=headers).json()
        seen.append((body["status"], [t["status"] for t in body["tranches"]]))
        if until(body):
            return body
        time.sleep(0.02)
    raise AssertionError(f"{application_id} never got there: {body}")


def tranche_is(number: int, status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: bool(body["tranches"][number - 1]["status"] == status)


def committed_investment(process: ServiceProcess, http: httpx.Client, cost: str) -> str:
    firm = process.headers(Role.FIRM, "ceo", firm_id=FIRM_ID)
    created = http.post(
        "/v1/applications",
        headers={**firm, "Idempotency-Key": str(uuid.uuid4())},
        json=investment(cost),
    )
    assert created.status_code == 201, created.text
    application_id = str(created.json()["id"])
    seen: Seen = []
    watch(http, process, application_id, lambda b: b["status"] == "verified", seen)
    for member in ("officer-kim", "officer-lee"):
        voted = http.post(
            f"/v1/applications/{application_id}/votes",
            headers=process.headers(Role.OFFICER, member),
            json={"vote": "for", "reason": "diligence read"},
        )
        assert voted.status_code == 200, voted.text
    watch(http, process, application_id, lambda b: b["status"] == "committed", seen)
    return application_id


def release(
    http: httpx.Client, process: ServiceProcess, application_id: str, number: int
) -> httpx.Response:
    return http.post(
        f"/v1/applications/{application_id}/tranches/{number}/release",
        headers={
            **process.headers(Role.OFFICER, "officer-park"),
            "Idempotency-Key": f"release-{application_id}-{number}",
        },
        json={"milestone_evidence": f"phase {number} report, signed by the CRO"},
    )


def funds(http: httpx.Client, process: ServiceProcess) -> dict[str, dict[str, Any]]:
    response = http.get("/v1/funds", headers=process.headers(Role.MINISTRY, "mof-analyst"))
    assert response.status_code == 200, response.text
    return {f["id"]: f for f in response.json()}


# --- the database, read directly ------------------------------------------------------------


def _dsn(process: ServiceProcess) -> str:
    return process.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def query(process: ServiceProcess, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(_dsn(process))
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def kill_once(process: ServiceProcess, sql: str, *args: Any, within: float = 20) -> None:
    """SIGKILL the service the moment ``sql`` (a count) finds something in its database."""

    async def poll_then_kill() -> None:
        connection = await asyncpg.connect(_dsn(process))
        try:
            deadline = time.monotonic() + within
            while not await connection.fetchval(sql, *args):
                assert time.monotonic() < deadline, f"never found: {sql} {args}"
                await asyncio.sleep(0.002)
            process.kill()
        finally:
            await connection.close()

    asyncio.run(poll_then_kill())


RELEASED = (
    "SELECT count(*) FROM events WHERE aggregate_id = $1"
    " AND type = 'fund.tranche.released' AND payload->>'number' = $2"
)
PAID = (
    "SELECT count(*) FROM events WHERE aggregate_id = $1"
    " AND type = 'fund.tranche.paid' AND payload->>'number' = $2"
)
LEDGER = (
    "SELECT payout_id, reference, amount, debit_account, credit_account FROM ledger_entries"
    " WHERE reference LIKE $1 ORDER BY reference"
)


def ledger(process: ServiceProcess, application_id: str) -> list[asyncpg.Record]:
    return query(process, LEDGER, f"{application_id}:tranche:%")


def count(process: ServiceProcess, sql: str, application_id: str, number: int) -> int:
    [row] = query(process, sql, application_id, str(number))
    return int(row[0])


# --- the tests ------------------------------------------------------------------------------


def test_killed_around_releases_and_payouts_each_tranche_is_paid_exactly_once(
    fund_process: ServiceProcess,
) -> None:
    process = fund_process
    seen: Seen = []
    with httpx.Client(base_url=process.url, timeout=10) as http:
        before = funds(http, process)
        app_id = committed_investment(process, http, "TRIAL-2026-PH2-CRASH")

        # 1. released, then killed before the payout stage got to it
        released = release(http, process, app_id, 1)
        assert released.status_code == 200, released.text
        process.kill()
        assert count(process, RELEASED, app_id, 1) == 1
        assert ledger(process, app_id) == [], "paid before the kill: the test proves nothing"
        assert count(process, PAID, app_id, 1) == 0

    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        watch(http, process, app_id, tranche_is(1, "paid"), seen)

        # 2. killed the moment the payout committed: its event unpublished, its offset not moved
        assert release(http, process, app_id, 2).status_code == 200
        kill_once(process, PAID, app_id, "2")

    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        after_second = watch(http, process, app_id, tranche_is(2, "paid"), seen)
        assert after_second["status"] == "committed"  # the third is not paid

        # 3. killed while the release request was in flight; the officer retries it
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(release, http, process, app_id, 3)
            kill_once(process, RELEASED, app_id, "3")
            with contextlib.suppress(httpx.HTTPError):  # the service may die under it
                in_flight.result()

    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        retried = release(http, process, app_id, 3)  # same Idempotency-Key: the same answer
        assert retried.status_code == 200, retried.text
        assert retried.json()["tranches"][2]["status"] in ("released", "paid")
        completed = watch(http, process, app_id, lambda b: b["status"] == "completed", seen)
        served = http.get(  # the whole chain, officers named: an auditor's view
            f"/v1/applications/{app_id}/events",
            headers=process.headers(Role.AUDITOR, "auditor-lee"),
        ).json()
        after = funds(http, process)

    # the ledger: one entry per tranche, of its amount, under the payout id the tranche shows
    entries = ledger(process, app_id)
    assert [e["reference"] for e in entries] == [f"{app_id}:tranche:{n}" for n in (1, 2, 3)]
    assert [e["amount"] for e in entries] == TRANCHES
    assert {e["debit_account"] for e in entries} == {f"fund:{GOIF}"}
    assert {e["credit_account"] for e in entries} == {f"firm:{FIRM_ID}"}
    assert [e["payout_id"] for e in entries] == [t["payout_id"] for t in completed["tranches"]]

    # the log: each tranche released once and paid once, completed once, after the last payment
    types = [e["type"] for e in served]
    paid = [e["payload"]["number"] for e in served if e["type"] == "fund.tranche.paid"]
    released_numbers = [
        e["payload"]["number"] for e in served if e["type"] == "fund.tranche.released"
    ]
    assert paid == [1, 2, 3]
    assert released_numbers == [1, 2, 3]
    assert types.count("fund.investment.completed") == 1
    assert types[-2:] == ["fund.tranche.paid", "fund.investment.completed"]
    assert verify_chain(served).ok

    # never completed with a tranche unpaid; committed while any tranche was
    assert seen, "nothing was observed"
    for status, tranches in seen:
        if any(t != "paid" for t in tranches):
            assert status == "committed", (status, tranches)
        else:
            assert status == "completed", (status, tranches)
    assert [t["status"] for t in completed["tranches"]] == ["paid"] * 3
    assert completed["disbursed"] == AMOUNT

    assert after[GOIF]["disbursed"] == AMOUNT
    assert after[GOIF]["committed"] == 0
    assert after[GOIF]["available"] == before[GOIF]["available"] - AMOUNT
    assert after[MEGA]["available"] == before[MEGA]["available"] - AMOUNT


def test_cancelled_after_a_payout_survived_a_kill_the_rest_goes_back_to_the_fund(
    fund_process: ServiceProcess,
) -> None:
    process = fund_process
    with httpx.Client(base_url=process.url, timeout=10) as http:
        before = funds(http, process)
        app_id = committed_investment(process, http, "TRIAL-2026-PH2-CANCEL")
        committed = funds(http, process)
        assert committed[GOIF]["committed"] == AMOUNT
        assert release(http, process, app_id, 1).status_code == 200
        process.kill()
        assert ledger(process, app_id) == [], "paid before the kill: the test proves nothing"

    process.start()
    with httpx.Client(base_url=process.url, timeout=10) as http:
        watch(http, process, app_id, tranche_is(1, "paid"), [])
        officer = process.headers(Role.OFFICER, "officer-park")
        cancelled = http.post(
            f"/v1/applications/{app_id}/cancellation",
            headers={**officer, "Idempotency-Key": f"cancel-{app_id}"},
            json={"reason": "the phase 2 trial was stopped"},
        )
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        refused = release(http, process, app_id, 2)
        after = funds(http, process)
        served = http.get(f"/v1/applications/{app_id}/events", headers=officer).json()

    assert body["status"] == "cancelled"
    assert [t["status"] for t in body["tranches"]] == ["paid", "cancelled", "cancelled"]
    assert body["returned_amount"] == TRANCHES[1] + TRANCHES[2]
    assert body["disbursed"] == TRANCHES[0]
    assert refused.status_code == 409, refused.text

    for fund_id in (GOIF, MEGA):
        assert after[fund_id]["available"] == before[fund_id]["available"] - TRANCHES[0]
        assert after[fund_id]["available"] == committed[fund_id]["available"] + (
            TRANCHES[1] + TRANCHES[2]
        )
        assert after[fund_id]["committed"] == 0
        assert after[fund_id]["disbursed"] == TRANCHES[0]

    assert [e["reference"] for e in ledger(process, app_id)] == [f"{app_id}:tranche:1"]
    types = [e["type"] for e in served]
    assert types.count("fund.tranche.paid") == 1
    assert types[-1] == "fund.investment.cancelled"
    assert "fund.investment.completed" not in types
    assert verify_chain(served).ok
