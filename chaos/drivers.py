"""Scripted firms, officers, committee members and providers: the services' own users,
over HTTP only, each request sent to either replica and sent again (same Idempotency-Key)
when the replica it reached died or refused."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaos.stack import Stack
from shared.contracts import Role

VOUCHER_AMOUNT = 1_000_000
"""Below the four-eyes threshold: one approval approves."""
REDEEMED = 400_000
FUND_AMOUNT = 100_000_000
COMMITTEE = ("officer-kim", "officer-lee")
"""Two of the Global Open Innovation Fund's three members: its quorum."""
PROVIDER = "prov-hanbit-law"
FIRST_FIRM = {"voucher": 0, "taxcredit": 300_000, "fund": 600_000}
"""Each programme's firms are numbered apart: no firm is supported by two of them."""


def firm_id(n: int) -> str:
    """A business registration number (NNN-NN-NNNNN) of its own for each ``n`` below 900,000."""
    return f"{100 + n // 10000 % 900:03d}-{10 + n // 1000 % 90:02d}-{10000 + n % 1000 * 7:05d}"


def firm(n: int, founded_on: str) -> dict[str, Any]:
    return {
        "firm_id": firm_id(n),
        "name": f"Chaos Firm {n}",
        "founded_on": founded_on,
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
    }


def voucher_application(n: int) -> dict[str, Any]:
    return {
        "programme_id": "cluster-startup-support-2026",
        "firm": firm(n, "2023-03-02"),
        "service_category": "legal",
        "requested_amount": VOUCHER_AMOUNT,
        "purpose": "patent filing",
    }


def taxcredit_application(n: int) -> dict[str, Any]:
    return {
        "programme": "strategic_investment",
        "tax_year": 2026,
        "firm": firm(n, "2015-03-02"),
        "technology": "biopharma-animal-cell-culture",
        # a credit of 26,000,000 won, far below the four-eyes threshold
        "investment": {"current_year": 100_000_000, "previous_years": [90_000_000]},
        "facility_reference": f"chaos-facility-{n}",
    }


def fund_application(n: int) -> dict[str, Any]:
    return {
        "fund_id": "global-open-innovation-fund",
        "firm": firm(n, "2015-03-02"),
        "stage": "clinical",
        "instrument": "equity",
        "amount": FUND_AMOUNT,
        "pre_money_valuation": 30_000_000_000,
        "tranches": [{"amount": FUND_AMOUNT, "milestone": "first patient dosed"}],
        "co_investors": [],
        "due_diligence": {"financials": True, "ip": True, "legal": True, "site_visit": True},
        "cost_reference": f"chaos-trial-{n}",
    }


APPLICATIONS: dict[str, Callable[[int], dict[str, Any]]] = {
    "voucher": voucher_application,
    "taxcredit": taxcredit_application,
    "fund": fund_application,
}


@dataclass
class Tally:
    """What the users saw."""

    accepted: dict[str, dict[str, str]] = field(default_factory=dict)
    """Service -> application id -> firm: every application a firm got a 2xx for."""
    acts: list[tuple[str, str, str]] = field(default_factory=list)
    """``(act, application id, what)`` of every other request answered 2xx: an approval
    (``approve:voucher``), a vote (what: the member), a redemption (what: its id), a release."""
    requests: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """503 answers (with ``Retry-After``): allowed while a dependency is away."""
    refused_without_retry_after: list[str] = field(default_factory=list)
    unreachable: Counter[str] = field(default_factory=Counter)
    """Connections refused, reset or timed out: the replica asked had just been killed."""
    server_errors: list[str] = field(default_factory=list)
    """Any other 5xx: never allowed."""
    unexpected: list[str] = field(default_factory=list)
    """4xx answers that a scripted user's request should not get."""
    gave_up: list[str] = field(default_factory=list)


class Caller:
    """Sends a request to one replica, and on a dead one or a 503 to the other, until answered."""

    def __init__(self, stack: Stack, tally: Tally) -> None:
        self.stack, self.tally = stack, tally
        self.http = httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=200))

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        *,
        headers: dict[str, str],
        body: Any = None,
        params: dict[str, Any] | None = None,
        expected: tuple[int, ...] = (200,),
        tolerated: tuple[int, ...] = (),
        within: float = 90,
    ) -> httpx.Response | None:
        """The answer (one of ``expected`` or ``tolerated``, else recorded as unexpected), or
        None when no replica answered within ``within`` seconds."""
        urls = self.stack.urls(service)
        start = random.randrange(len(urls))
        deadline = time.monotonic() + within
        what = f"{service} {method} {path}"
        for attempt in itertools.count():
            if time.monotonic() > deadline:
                self.tally.gave_up.append(what)
                return None
            url = urls[(start + attempt) % len(urls)]
            self.tally.requests[service] += 1
            try:
                answer = await self.http.request(
                    method, url + path, headers=headers, json=body, params=params
                )
            except httpx.TransportError:
                self.tally.unreachable[service] += 1
                await asyncio.sleep(0.2)
                continue
            if answer.status_code == 503:
                self.tally.refused[service] += 1
                retry_after = answer.headers.get("retry-after")
                if retry_after is None:
                    self.tally.refused_without_retry_after.append(what)
                await asyncio.sleep(min(1.0, _seconds(retry_after)))
                continue
            if answer.status_code >= 500:
                self.tally.server_errors.append(f"{what}: {answer.status_code} {answer.text[:300]}")
                await asyncio.sleep(0.2)
                continue
            if answer.status_code not in expected + tolerated:
                self.tally.unexpected.append(f"{what}: {answer.status_code} {answer.text[:300]}")
            return answer
        raise AssertionError("unreachable")


def _seconds(retry_after: str | None) -> float:
    """A ``Retry-After`` in seconds (a date, or nothing usable: one second)."""
    try:
        return max(0.0, float(retry_after or 1))
    except ValueError:
        return 1.0


class Users:
    """Every scripted user of the run, until ``stop_submitting`` and then ``stop``."""

    def __init__(self, stack: Stack, caller: Caller, rate: float) -> None:
        self.stack, self.caller, self.rate = stack, caller, rate
        self.tally = caller.tally
        self.stop_submitting = asyncio.Event()
        self.stop = asyncio.Event()
        self.done: dict[str, set[str]] = {}
        """Per act (``decide:voucher``...): the applications it was done to."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.officer = stack.headers(Role.OFFICER, "officer-park")
        self.provider = stack.headers(Role.PROVIDER, "clerk", provider_id=PROVIDER)
        self.numbers = {service: itertools.count(first) for service, first in FIRST_FIRM.items()}

    def run(self) -> list[Coroutine[Any, Any, None]]:
        loops: list[Coroutine[Any, Any, None]] = [self.firms(service) for service in APPLICATIONS]
        loops += [
            self.each("voucher", "verified", "decide", self.approve),
            self.each("taxcredit", "verified", "decide", self.approve),
            self.each("fund", "verified", "vote", self.vote),
            self.each("voucher", "issued", "redeem", self.redeem),
            self.each("fund", "committed", "release", self.release),
        ]
        return loops

    # --- firms -----------------------------------------------------------------------

    async def firms(self, service: str) -> None:
        """Firms apply at ``rate`` a second, each firm once."""
        started, sent = time.monotonic(), 0
        pending: set[asyncio.Task[str | None]] = set()
        while not self.stop_submitting.is_set():
            await asyncio.sleep(max(0.0, started + sent / self.rate - time.monotonic()))
            task = asyncio.create_task(self.apply(service))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)

    async def apply(self, service: str) -> str | None:
        """One firm's application; its id once a 201 said it was taken."""
        n = next(self.numbers[service])
        body = APPLICATIONS[service](n)
        owner = body["firm"]["firm_id"]
        headers = {
            **self.stack.headers(Role.FIRM, f"ceo-{n}", firm_id=owner),
            "Idempotency-Key": str(uuid.uuid4()),
        }
        answer = await self.caller.call(
            service, "POST", "/v1/applications", headers=headers, body=body, expected=(201,)
        )
        if answer is None or answer.status_code != 201:
            return None
        application_id = str(answer.json()["id"])
        self.tally.accepted.setdefault(service, {})[application_id] = owner
        return application_id

    # --- officers, committee, providers -------------------------------------------------

    async def each(
        self,
        service: str,
        status: str,
        act: str,
        do: Callable[[dict[str, Any]], Awaitable[bool]],
    ) -> None:
        """Every half second, ``do`` to each application in ``status`` not done yet."""
        done = self.done.setdefault(f"{act}:{service}", set())
        busy: set[str] = set()

        async def once(item: dict[str, Any]) -> None:
            try:
                if await do(item):
                    done.add(item["id"])
            finally:
                busy.discard(item["id"])

        while not self.stop.is_set():
            async for item in self.listed(service, status):
                if item["id"] not in done and item["id"] not in busy:
                    busy.add(item["id"])
                    task = asyncio.create_task(once(item))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(0.5)

    async def listed(self, service: str, status: str) -> AsyncIterator[dict[str, Any]]:
        """Every application in ``status``, page after page, as an officer lists them."""
        cursor = None
        while True:
            params: dict[str, Any] = {"status": status, "limit": 200}
            if cursor is not None:
                params["cursor"] = cursor
            answer = await self.caller.call(
                service, "GET", "/v1/applications", headers=self.officer, params=params
            )
            if answer is None or answer.status_code != 200:
                return
            page = answer.json()
            for item in page["items"]:
                yield item
            cursor = page["next_cursor"]
            if cursor is None:
                return

    async def approve(self, item: dict[str, Any]) -> bool:
        service = "voucher" if "programme_id" in item else "taxcredit"
        answer = await self.caller.call(
            service,
            "POST",
            f"/v1/applications/{item['id']}/decisions",
            headers={**self.officer, "Idempotency-Key": f"approve-{item['id']}"},
            body={"decision": "approve", "reason": "eligible, scripted"},
            tolerated=(409,),
        )
        self.record(answer, f"approve:{service}", item["id"], "officer-park")
        return answer is not None

    async def vote(self, item: dict[str, Any]) -> bool:
        for member in COMMITTEE:  # in turn: the second vote approves
            answer = await self.caller.call(
                "fund",
                "POST",
                f"/v1/applications/{item['id']}/votes",
                headers={
                    **self.stack.headers(Role.OFFICER, member),
                    "Idempotency-Key": f"vote-{member}-{item['id']}",
                },
                body={"vote": "for", "reason": "diligence read", "conflict_of_interest": False},
                tolerated=(409,),
            )
            if answer is None:
                return False
            self.record(answer, "vote:fund", item["id"], member)
        return True

    async def redeem(self, item: dict[str, Any]) -> bool:
        voucher = item.get("voucher") or {}
        if not voucher.get("id"):
            return False
        answer = await self.caller.call(
            "voucher",
            "POST",
            f"/v1/vouchers/{voucher['id']}/redemptions",
            headers={**self.provider, "Idempotency-Key": f"redeem-{item['id']}"},
            body={
                "invoice_number": f"INV-{item['id']}",
                "amount": REDEEMED,
                "service_category": "legal",
            },
            expected=(202,),
            tolerated=(409,),
        )
        if answer is not None and answer.status_code == 202:
            self.record(answer, "redeem:voucher", item["id"], str(answer.json()["id"]))
        return answer is not None

    async def release(self, item: dict[str, Any]) -> bool:
        answer = await self.caller.call(
            "fund",
            "POST",
            f"/v1/applications/{item['id']}/tranches/1/release",
            headers={**self.officer, "Idempotency-Key": f"release-{item['id']}"},
            body={"milestone_evidence": "first patient dosed, site report"},
            tolerated=(409,),
        )
        self.record(answer, "release:fund", item["id"], "1")
        return answer is not None

    def record(
        self, answer: httpx.Response | None, act: str, application_id: str, what: str
    ) -> None:
        """A request answered 2xx: what it did must be in the log."""
        if answer is not None and answer.is_success:
            self.tally.acts.append((act, application_id, what))

    async def finish(self) -> None:
        self.stop.set()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
