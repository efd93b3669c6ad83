"""Oversight beside voucher, taxcredit and fund, four processes on the real broker and
PostgreSQL: its figures equal the services' own, its stream carries the exact envelopes
in one order that resumes across services, and it checks every service's checkpoints."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts import Role
from tests.e2e.service_process import ServiceProcess, StartService, read_topic, wait_for_status
from tests.e2e.test_three_programmes import Stack, business_number

PROVIDER = "prov-hanbit-law"
PROGRAMME_FIELD = {"voucher": "programme_id", "taxcredit": "programme", "fund": "fund_id"}


class Watched(Stack):
    def __init__(self, start_service: StartService) -> None:
        super().__init__(start_service)
        self.oversight = start_service("oversight")
        self.http["oversight"] = httpx.Client(base_url=self.oversight.url, timeout=10)

    def ministry(self) -> dict[str, str]:
        return self.oversight.headers(Role.MINISTRY, "analyst-yoon")

    def summary(self) -> dict[str, Any]:
        response = self.http["oversight"].get("/v1/summary", headers=self.ministry())
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def all_applications(self, service: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = self.http[service].get(
                "/v1/applications", headers=self.officer("officer-kim"), params=params
            )
            assert page.status_code == 200, page.text
            items += page.json()["items"]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return items

    def redeem_and_wait_paid(self, application_id: str, firm_id: str, amount: int) -> None:
        http = self.http["voucher"]
        document = wait_for_status(http, application_id, "issued", self.as_firm(firm_id))
        voucher_id = document["voucher"]["id"]
        provider = self.voucher.headers(Role.PROVIDER, "clerk", provider_id=PROVIDER)
        response = http.post(
            f"/v1/vouchers/{voucher_id}/redemptions",
            json={"invoice_number": "INV-1", "amount": amount, "service_category": "legal"},
            headers={**provider, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert response.status_code == 202, response.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = http.get(f"/v1/vouchers/{voucher_id}/redemptions", headers=provider).json()
            if listed and all(r["status"] == "paid" for r in listed):
                return
            time.sleep(0.1)
        raise AssertionError(f"the redemption of {voucher_id} was never paid")

    def certify(self, application_id: str, firm_id: str) -> None:
        http = self.http["taxcredit"]
        for officer in ("officer-kim", "officer-park"):
            response = http.post(
                f"/v1/applications/{application_id}/decisions",
                headers=self.officer(officer),
                json={"decision": "approve", "reason": "investment confirmed"},
            )
            assert response.status_code == 200, response.text
            if response.json()["status"] != "verified":
                break
        wait_for_status(http, application_id, "certified", self.as_firm(firm_id))


@pytest.fixture
def watched(start_service: StartService) -> Iterator[Watched]:
    running = Watched(start_service)
    try:
        yield running
    finally:
        running.close()


def the_services_own_figures(stack: Watched) -> dict[str, Any]:
    """What the three services report themselves, in the summary's shape."""
    statuses: dict[tuple[str, str], Counter[str]] = {}
    certified: Counter[str] = Counter()
    for service, field in PROGRAMME_FIELD.items():
        for item in stack.all_applications(service):
            key = (service, str(item[field]))
            statuses.setdefault(key, Counter())[item["status"]] += 1
            if service == "taxcredit" and item["certificate"]:
                certified[item["programme"]] += item["certificate"]["original_amount"]
    money: dict[tuple[str, str], dict[str, int]] = {}
    programmes = stack.http["voucher"].get("/v1/programmes", headers=stack.ministry()).json()
    for programme in programmes:
        money[("voucher", programme["id"])] = programme["money"]
    funds = stack.http["fund"].get("/v1/funds", headers=stack.ministry()).json()
    for fund in funds:
        money[("fund", fund["id"])] = {
            k: fund[k] for k in ("capacity", "committed", "disbursed", "available")
        }
    for programme, amount in certified.items():
        money[("taxcredit", programme)] = {"certified": amount, "clawed_back": 0}
    return {
        "statuses": {k: dict(v) for k, v in statuses.items()},
        "money": money,
    }


def oversight_figures(summary: dict[str, Any]) -> dict[str, Any]:
    statuses = {
        (p["service"], p["programme_id"]): p["statuses"]
        for p in summary["programmes"]
        if p["statuses"]
    }
    money = {
        (p["service"], p["programme_id"]): p["money"]
        for p in summary["programmes"]
        if p["service"] != "taxcredit" or p["money"]["certified"]
    }
    return {"statuses": statuses, "money": money}


def figures_agree(stack: Watched, within: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + within
    theirs: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    while time.monotonic() < deadline:
        theirs = the_services_own_figures(stack)
        ours = oversight_figures(stack.summary())
        if ours == theirs:
            return ours
        time.sleep(0.3)
    assert ours == theirs


def read_stream(
    stack: Watched,
    count: int,
    *,
    params: dict[str, Any],
    headers: dict[str, str] | None = None,
    within: float = 20,
    then: Any = None,
) -> list[dict[str, Any]]:
    """The first ``count`` SSE events (``then()`` runs once the stream is open)."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    deadline = time.monotonic() + within
    with (
        httpx.Client(base_url=stack.oversight.url, timeout=within) as client,
        client.stream("GET", "/v1/stream", params=params, headers=headers or {}) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        if then is not None:
            then()
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"only {len(found)} of {count} events came"
            if line.startswith(":"):
                continue
            if not line:
                if current:
                    found.append(current)
                    current = {}
                    if len(found) == count:
                        return found
                continue
            name, _, value = line.partition(": ")
            current[name] = value
    return found


def test_oversight_sees_what_the_services_report(watched: Watched) -> None:
    stack = watched
    # a voucher issued and part redeemed; one withdrawn
    paid_firm = business_number()
    voucher_app = stack.apply_for_voucher(paid_firm, 3_000_000, f"invoice-{uuid.uuid4()}")
    stack.issue_voucher(voucher_app, paid_firm)
    stack.redeem_and_wait_paid(voucher_app, paid_firm, 1_000_000)
    quitter = business_number()
    withdrawn = stack.apply_for_voucher(quitter, 2_000_000, f"invoice-{uuid.uuid4()}")
    wait_for_status(stack.http["voucher"], withdrawn, "verified", stack.as_firm(quitter))
    response = stack.http["voucher"].post(
        f"/v1/applications/{withdrawn}/withdrawal", json={}, headers=stack.as_firm(quitter)
    )
    assert response.status_code == 200, response.text
    # a fund investment with two co-investors: two tax-credit claims, one certified
    investee = business_number()
    investors = [business_number(), business_number()]
    investment = stack.apply_to_fund(
        investee,
        4_000_000_000,
        f"trial-{uuid.uuid4()}",
        co_investors=[
            {"investor_firm_id": f, "name": f"Investor {n}", "amount": 500_000_000 * (n + 1)}
            for n, f in enumerate(investors)
        ],
    )
    stack.commit_investment(investment, investee)
    claims = stack.verified_claims(investors[0], 1)
    stack.certify(claims[0]["id"], investors[0])

    agreed = figures_agree(stack)
    assert agreed["statuses"][("voucher", "cluster-startup-support-2026")] == {
        "issued": 1,
        "withdrawn": 1,
    }
    assert agreed["money"][("voucher", "cluster-startup-support-2026")]["paid"] == 1_000_000
    assert agreed["money"][("fund", "global-open-innovation-fund")]["committed"] == 4_000_000_000
    assert agreed["money"][("taxcredit", "corporate_venture_investment")]["certified"] > 0

    # every service's checkpoints are checked and verify, up to the services' latest
    deadline = time.monotonic() + 40
    checked: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answers = {s: stack.http[s].get("/v1/checkpoints/latest") for s in PROGRAMME_FIELD}
        if any(a.status_code == 404 for a in answers.values()):  # a service not sealed yet
            time.sleep(0.5)
            continue
        latest = {s: a.json()["tree_size"] for s, a in answers.items()}
        checked = {c["service"]: c for c in stack.summary()["checkpoints"]}
        if all(
            s in checked and checked[s]["verified"] and checked[s]["tree_size"] >= latest[s]
            for s in PROGRAMME_FIELD
        ):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"checkpoints not all verified: {checked}")
    assert all(c["finding"] is None for c in checked.values())
    summary = stack.summary()
    assert summary["conflicts"] == 0 and summary["stuck"] == []
    wanted = {("oversight", "voucher.events"), ("taxcredit", "fund.events")}  # the latter:
    deadline = time.monotonic() + 20  # the co-investment claims' consumer; read every 5 s
    while not wanted <= {(r["service"], r["topic"]) for r in stack.summary()["lag"]}:
        assert time.monotonic() < deadline, stack.summary()["lag"]
        time.sleep(0.5)

    # the stream from the beginning is every envelope, exactly as on the topics
    records = []
    for service in PROGRAMME_FIELD:
        topic = stack.voucher.topic_prefix + f"{service}.events"
        records += asyncio.run(read_topic(stack.voucher.bootstrap, topic, 10_000, within=3))
    on_topics = {json.loads(r.value)["event_id"]: r.value.decode() for r in records}
    token = stack.ministry()["Authorization"].removeprefix("Bearer ")
    streamed = read_stream(stack, len(on_topics), params={"from": 0, "access_token": token})
    ids = [int(e["id"]) for e in streamed]
    assert ids == sorted(set(ids))  # one order across the services, each once
    assert {json.loads(e["data"])["event_id"]: e["data"] for e in streamed} == on_topics
    assert all(e["event"] == json.loads(e["data"])["type"] for e in streamed)

    # resuming after an id, with the token in the header, and filtered
    resumed = read_stream(
        stack, 3, params={}, headers={**stack.ministry(), "Last-Event-ID": streamed[9]["id"]}
    )
    assert [e["id"] for e in resumed] == [e["id"] for e in streamed[10:13]]
    committed = read_stream(
        stack,
        1,
        params={"from": 0, "type": "fund.investment.committed", "access_token": token},
    )
    assert json.loads(committed[0]["data"])["aggregate_id"] == investment

    # live: a stream opened now carries the next submission, and nothing before it
    newcomer = business_number()
    live = read_stream(
        stack,
        1,
        params={"service": "voucher", "access_token": token},
        then=lambda: stack.apply_for_voucher(newcomer, 1_000_000, f"invoice-{uuid.uuid4()}"),
    )
    assert json.loads(live[0]["data"])["type"] == "voucher.application.submitted"
    assert json.loads(live[0]["data"])["firm_id"] == newcomer
    assert int(live[0]["id"]) > ids[-1]


@pytest.fixture
def oversight(start_service: StartService) -> Iterator[ServiceProcess]:
    yield start_service("oversight")


def summary_of(oversight: ServiceProcess) -> dict[str, Any]:
    headers = oversight.headers(Role.MINISTRY, "analyst-yoon")
    response = httpx.get(oversight.url + "/v1/summary", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def test_who_may_watch(oversight: ServiceProcess) -> None:
    with httpx.Client(base_url=oversight.url, timeout=10) as http:
        who_may_watch(oversight, http)


def who_may_watch(oversight: ServiceProcess, http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and "<html" in page.text  # the shell is public
    assert http.get("/static/app.js").status_code == 200
    assert http.get("/v1/summary").status_code == 401
    firm = oversight.headers(Role.FIRM, "cfo", firm_id=business_number())
    assert http.get("/v1/summary", headers=firm).status_code == 403
    assert http.get("/v1/stream", headers=firm).status_code == 403
    assert http.get("/v1/stream", params={"access_token": "garbage"}).status_code == 401
    auditor = oversight.headers(Role.AUDITOR, "auditor-han")
    assert http.get("/v1/summary", headers=auditor).status_code == 200
    bad_resume = http.get("/v1/stream", headers={**auditor, "Last-Event-ID": "x" * 10})
    assert bad_resume.status_code == 422
    assert "Last-Event-ID" in bad_resume.text
    assert http.get("/v1/stream", headers=auditor, params={"service": "bank"}).status_code == 422
    for garbage in ("\u00b2", "9" * 19, "-1"):  # a superscript digit, beyond 2**63, a sign
        resume = http.get(
            "/v1/stream", headers={**auditor, "Last-Event-ID": garbage.encode("latin-1")}
        )
        assert resume.status_code == 422, garbage


def test_a_forged_checkpoint_is_a_finding(oversight: ServiceProcess) -> None:
    forged = {
        "service": "voucher",
        "tree_size": 0,
        "last_position": 0,
        "root_hash": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "previous_checkpoint_hash": "0" * 64,
        "sealed_at": "2026-12-01T00:00:00.000000Z",
        "key_id": "ed25519-forger",
        "signature": "AAAA",
    }

    async def publish() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=oversight.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                oversight.topic_prefix + "voucher.checkpoints",
                json.dumps(forged).encode(),
                key=b"voucher",
            )
            for garbage in (
                b"[" * 100_000,
                b"not json",
                json.dumps({**forged, "tree_size": 1e300}).encode(),
            ):
                await producer.send_and_wait(oversight.topic_prefix + "fund.checkpoints", garbage)
        finally:
            await producer.stop()

    asyncio.run(publish())
    deadline = time.monotonic() + 20
    found: dict[str, Any] = {}
    while time.monotonic() < deadline:
        found = {c["service"]: c for c in summary_of(oversight)["checkpoints"]}
        if found.get("voucher", {}).get("finding") and found.get("fund", {}).get("finding"):
            break
        time.sleep(0.2)
    assert "bad_signature" in found["voucher"]["finding"], found
    assert "not a checkpoint" in found["fund"]["finding"], found  # and the consumer lives on


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("INCENTIVES_TEST_ARTIFACTS", "var/test-artifacts"))


def page_table(browser: Any, table_id: str) -> list[dict[str, str]]:
    rows: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' tr')]"
        ".map(r => [...r.cells].map(c => c.textContent));",
        table_id,
    )
    if not rows:
        return []
    head, *body = rows
    return [dict(zip(head, row, strict=True)) for row in body]


def statuses_on_the_page(browser: Any) -> dict[tuple[str, str], dict[str, int]]:
    found = {}
    for row in page_table(browser, "statuses"):
        counts = {
            k: int(v.replace(",", ""))
            for k, v in row.items()
            if k not in ("service", "programme") and v not in ("", "0")
        }
        if counts:
            found[(row["service"], row["programme"])] = counts
    return found


def money_on_the_page(browser: Any) -> dict[tuple[str, str], dict[str, int]]:
    found: dict[tuple[str, str], dict[str, int]] = {}
    for row in page_table(browser, "money"):
        found.setdefault((row["service"], row["programme"]), {})[row["figure"]] = int(
            row["won"].replace(",", "")
        )
    return found


def test_the_ministry_page_in_a_real_browser(watched: Watched) -> None:
    """Debian's Chromium, headless, no download: the numbers on the page equal the services'
    own, and a new application shows up live, without a reload."""
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "install Debian's chromium and chromium-driver (make browser)"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    stack = watched
    issued_firm = business_number()
    issued = stack.apply_for_voucher(issued_firm, 2_000_000, f"invoice-{uuid.uuid4()}")
    stack.issue_voucher(issued, issued_firm)
    investee = business_number()
    investment = stack.apply_to_fund(investee, 3_000_000_000, f"trial-{uuid.uuid4()}")
    stack.commit_investment(investment, investee)
    theirs = figures_agree(stack)  # oversight has caught up

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,2400")
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser.get(stack.oversight.url + "/")
        assert "oversight" in browser.title
        assert browser.find_element(By.ID, "board").get_attribute("hidden") is not None
        token = stack.ministry()["Authorization"].removeprefix("Bearer ")
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda b: statuses_on_the_page(b) == theirs["statuses"])
        assert money_on_the_page(browser) == theirs["money"]
        wait.until(lambda b: b.find_element(By.ID, "connection").text == "live")

        newcomer = business_number()
        stack.apply_for_voucher(newcomer, 1_000_000, f"invoice-{uuid.uuid4()}")
        wait.until(lambda b: any(row["firm"] == newcomer for row in page_table(b, "live")))
        now = figures_agree(stack)["statuses"]
        wait.until(lambda b: statuses_on_the_page(b) == now)
        assert browser.execute_script("return performance.navigation.type") == 0  # no reload
        assert (
            browser.execute_script("return sessionStorage.getItem('incentives.oversight.token')")
            == token
        )
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "oversight-page.png"))
    finally:
        browser.quit()
