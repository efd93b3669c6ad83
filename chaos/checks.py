"""What the run must leave behind, checked from the services' databases (the log, the
source of truth), their APIs, oversight's summary and the auditor's own tool."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from chaos.stack import PARTITIONS, PROGRAMMES, SECRET, Stack
from shared.clock import SystemClock
from shared.contracts import Envelope, Role
from shared.domain.decider import Decider
from shared.eventstore import EventStore, create_engine
from shared.kit.catalogue import load_document

PROGRAMME_FIELD = {"voucher": "programme_id", "taxcredit": "programme", "fund": "fund_id"}
SETTLED = {
    "voucher": {"rejected", "withdrawn", "closed", "expired"},
    "taxcredit": {"certified", "rejected", "withdrawn", "revoked"},
    "fund": {"completed", "rejected", "withdrawn", "cancelled"},
}
"""Statuses in which nothing is left for anyone to do (a voucher is settled once it is
issued and its redemption paid: see ``settled``)."""
HOLDING = {
    "voucher": {"approved", "issued", "closed", "expired"},
    "fund": {"committed", "completed", "cancelled"},
}
"""Statuses in which an application holds (or spent) its approved amount from the budget
or the fund, less what it gave back."""


def deciders() -> dict[str, Decider[Any]]:
    from services.fund.domain.decider import DECIDER as FUND
    from services.taxcredit.domain.decider import DECIDER as TAXCREDIT
    from services.voucher.domain.decider import DECIDER as VOUCHER

    return {"voucher": VOUCHER, "taxcredit": TAXCREDIT, "fund": FUND}


@dataclass
class Check:
    name: str
    what: str
    findings: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_json(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "ok": self.ok,
            "findings": self.findings[:20],
            "findings_total": len(self.findings),
            **self.figures,
        }


@dataclass
class Log:
    """One service's log as its database holds it, each application folded by its decider."""

    events: dict[str, list[Envelope]]
    states: dict[str, Any]
    unfoldable: dict[str, str]


async def read_log(url: str, decider: Decider[Any]) -> Log:
    engine = create_engine(url)
    events: dict[str, list[Envelope]] = defaultdict(list)
    try:
        store, after = EventStore(engine, SystemClock()), 0
        while page := await store.read_all(after=after, limit=5000):
            for stored in page:
                envelope = Envelope.model_validate(stored.envelope)
                events[envelope.aggregate_id].append(envelope)
            after = page[-1].position
    finally:
        await engine.dispose()
    states: dict[str, Any] = {}
    unfoldable: dict[str, str] = {}
    for aggregate_id, history in events.items():
        if not history[0].type.endswith(".application.submitted"):
            continue  # providers, rate tables: not applications
        try:
            states[aggregate_id] = decider.fold(history)
        except (ValueError, KeyError, TypeError) as error:
            unfoldable[aggregate_id] = str(error)
    return Log(dict(events), states, unfoldable)


async def read_logs(stack: Stack) -> dict[str, Log]:
    found = deciders()
    return {s: await read_log(stack.databases[s][1], found[s]) for s in PROGRAMMES}


def settled(service: str, state: Any) -> bool:
    status = str(state.status)
    if service == "voucher" and status == "issued":
        return bool(state.redemptions) and all(r.status == "paid" for r in state.redemptions)
    return status in SETTLED[service]


def unsettled(logs: dict[str, Log]) -> Counter[str]:
    """``service:status`` of the applications someone still has something to do for."""
    left: Counter[str] = Counter()
    for service, log in logs.items():
        for state in log.states.values():
            if not settled(service, state):
                left[f"{service}:{state.status}"] += 1
    return left


async def listed(http: httpx.AsyncClient, stack: Stack, service: str) -> list[dict[str, Any]]:
    """Every application the service lists to an officer, page by page."""
    officer = stack.headers(Role.OFFICER, "officer-audit")
    items: list[dict[str, Any]] = []
    cursor = None
    url = stack.url(service)
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = await http.get(f"{url}/v1/applications", headers=officer, params=params)
        page.raise_for_status()
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def statuses_explained(
    http: httpx.AsyncClient, stack: Stack, logs: dict[str, Log]
) -> tuple[Check, dict[str, list[dict[str, Any]]]]:
    check = Check(
        "statuses", "every application is in exactly one status, the one its events explain"
    )
    lists: dict[str, list[dict[str, Any]]] = {}
    for service, log in logs.items():
        items = lists[service] = await listed(http, stack, service)
        seen = Counter(item["id"] for item in items)
        check.findings += [f"{service} {i} listed {n} times" for i, n in seen.items() if n > 1]
        for item in items:
            state = log.states.get(item["id"])
            if state is None:
                check.findings.append(f"{service} {item['id']} listed, not in the log")
            elif str(state.status) != item["status"]:
                check.findings.append(
                    f"{service} {item['id']}: shown {item['status']}, its events say {state.status}"
                )
        check.findings += [
            f"{service} {i} in the log, not listed" for i in set(log.states) - set(seen)
        ]
        check.findings += [
            f"{service} {i}: events do not fold: {why}" for i, why in log.unfoldable.items()
        ]
        check.findings += [
            f"{service} {i} unsettled: {log.states[i].status}"
            for i in log.states
            if not settled(service, log.states[i])
        ]
        check.figures[service] = dict(Counter(str(s.status) for s in log.states.values()))
    return check, lists


ACTED = {
    "approve:voucher": ("voucher", "voucher.application.approved", None),
    "approve:taxcredit": ("taxcredit", "taxcredit.application.approved", None),
    "vote:fund": ("fund", "fund.application.vote_recorded", "member"),
    "redeem:voucher": ("voucher", "voucher.redemption.requested", "redemption_id"),
    "release:fund": ("fund", "fund.tranche.released", "number"),
}
"""What each act answered 2xx leaves in its application's log: the event type, and the
payload field that says which one (None: the application has one such event)."""


def nothing_lost(
    accepted: dict[str, dict[str, str]], acts: list[tuple[str, str, str]], logs: dict[str, Log]
) -> Check:
    check = Check(
        "accepted",
        "every request answered 2xx is in the log (applications, decisions, votes, redemptions, releases)",
    )
    for service, applications in accepted.items():
        missing = set(applications) - set(logs[service].states)
        check.findings += [f"{service} {i} accepted, not in the log" for i in sorted(missing)]
        check.figures[service] = len(applications)
    for act, application_id, what in acts:
        service, event_type, field_name = ACTED[act]
        found = [
            e
            for e in logs[service].events.get(application_id, [])
            if e.type == event_type
            and (field_name is None or str(e.payload.get(field_name)) == what)
        ]
        if not found:
            check.findings.append(
                f"{act} of {application_id} ({what}) answered 2xx, not in the log"
            )
    check.figures["acts"] = dict(Counter(act for act, _, _ in acts))
    return check


def once_each(values: Iterable[str], what: str) -> list[str]:
    return [f"{what} {v} {n} times" for v, n in Counter(values).items() if n > 1]


async def ledger(dsn: str) -> list[tuple[str, int]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT payout_id, amount FROM ledger_entries")
    finally:
        await connection.close()
    return [(row["payout_id"], int(row["amount"])) for row in rows]


async def exactly_once(stack: Stack, logs: dict[str, Log]) -> Check:
    check = Check(
        "exactly_once",
        "each payout, tranche and certificate exists once: the ledger equals the events",
    )
    every = {s: [e for events in log.events.values() for e in events] for s, log in logs.items()}
    paid = [e.payload for e in every["voucher"] if e.type == "voucher.redemption.paid"]
    check.findings += once_each((p["redemption_id"] for p in paid), "redemption paid")
    tranches = [(e.aggregate_id, e.payload) for e in every["fund"] if e.type == "fund.tranche.paid"]
    check.findings += once_each((f"{a}#{p['number']}" for a, p in tranches), "tranche paid")
    certificates = [e for e in every["taxcredit"] if e.type == "taxcredit.certificate.issued"]
    check.findings += once_each((e.aggregate_id for e in certificates), "certificate of")
    check.findings += once_each((e.payload["number"] for e in certificates), "certificate number")
    for service, payouts in (
        ("voucher", {(p["payout_id"], int(p["amount"])) for p in paid}),
        ("fund", {(p["payout_id"], int(p["amount"])) for _, p in tranches}),
    ):
        booked = await ledger(stack.databases[service][0])
        check.findings += once_each((payout for payout, _ in booked), f"{service} ledger entry")
        if set(booked) != payouts:
            check.findings.append(
                f"{service}: ledger {len(booked)} entries, events {len(payouts)} payouts; "
                f"only in the ledger: {sorted(set(booked) - payouts)[:5]}, "
                f"only in the events: {sorted(payouts - set(booked))[:5]}"
            )
        check.figures[f"{service}_payouts"] = len(booked)
    check.figures["certificates"] = len(certificates)
    return check


async def pools(dsn: str, table: str) -> dict[str, tuple[int, int]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(f"SELECT pool_id, total, available FROM {table}")
    finally:
        await connection.close()
    return {row["pool_id"]: (int(row["total"]), int(row["available"])) for row in rows}


def lineage(parents: dict[str, str | None], fund_id: str) -> list[str]:
    chain: list[str] = []
    current: str | None = fund_id
    while current is not None:
        chain.append(current)
        current = parents.get(current)
    return chain


async def money(stack: Stack, logs: dict[str, Log]) -> Check:
    check = Check(
        "money",
        "no budget or fund went below zero; what they hold and spent equals what the events say",
    )
    expected: dict[str, dict[str, int]] = {"voucher": Counter(), "fund": Counter()}
    for state in logs["voucher"].states.values():
        if str(state.status) in HOLDING["voucher"]:
            expected["voucher"][state.programme_id] += (
                state.approved_amount or 0
            ) - state.returned_amount
    catalogue = load_document("services.fund.catalogue", "default.json")
    parents = {f["id"]: f["parent"] for f in catalogue["funds"]}
    for state in logs["fund"].states.values():
        if str(state.status) in HOLDING["fund"]:
            for pool in lineage(parents, state.fund_id):
                expected["fund"][pool] += (state.approved_amount or 0) - state.returned_amount
    for service, table in (("voucher", "programme_budgets"), ("fund", "fund_capacity")):
        found = await pools(stack.databases[service][0], table)
        for pool, (total, available) in sorted(found.items()):
            if available < 0:
                check.findings.append(f"{service} {pool}: {available:,} available")
            if total - available != expected[service].get(pool, 0):
                check.findings.append(
                    f"{service} {pool}: holds {total - available:,}, "
                    f"the events say {expected[service].get(pool, 0):,}"
                )
            check.figures[f"{service}:{pool}"] = {"total": total, "available": available}
    return check


def audit(stack: Stack) -> Check:
    """``incentives audit verify`` against each service, as an auditor runs it."""
    check = Check("audit", "every chain and every checkpoint verifies (incentives audit verify)")
    incentives = os.path.join(os.path.dirname(sys.executable), "incentives")
    for service in PROGRAMMES:
        token = stack.tokens.issue(sub="chaos-auditor", role=Role.AUDITOR)
        answer = subprocess.run(
            [
                incentives,
                "audit",
                "verify",
                "--service",
                service,
                "--source",
                stack.url(service),
                "--token",
                token,
                "--json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "INCENTIVES_JWT_SECRET": SECRET},
            timeout=600,
        )
        try:
            report = json.loads(answer.stdout)
        except json.JSONDecodeError:
            report = {}
        if answer.returncode != 0:
            check.findings.append(
                f"{service}: exit {answer.returncode}: {answer.stdout[-600:]} {answer.stderr[-600:]}"
            )
        check.figures[service] = report.get("checked", {})
    return check


def services_figures(lists: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    figures: dict[str, Counter[str]] = defaultdict(Counter)
    for service, items in lists.items():
        for item in items:
            figures[f"{service}:{item[PROGRAMME_FIELD[service]]}"][item["status"]] += 1
    return {k: dict(v) for k, v in figures.items()}


async def oversight_agrees(
    http: httpx.AsyncClient,
    stack: Stack,
    lists: dict[str, list[dict[str, Any]]],
    within: float = 60,
) -> Check:
    check = Check("oversight", "oversight's counts equal the services' own")
    ours = services_figures(lists)
    ministry = stack.headers(Role.MINISTRY, "analyst-yoon")
    deadline = time.monotonic() + within
    theirs: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        for url in stack.urls("oversight"):
            try:
                answer = await http.get(f"{url}/v1/summary", headers=ministry)
            except httpx.TransportError:
                continue
            if answer.status_code != 200:
                continue
            theirs = {
                f"{p['service']}:{p['programme_id']}": p["statuses"]
                for p in answer.json()["programmes"]
                if p["statuses"]
            }
            if theirs == ours:
                check.figures["programmes"] = ours
                return check
        await asyncio.sleep(1)
    check.findings.append(f"oversight says {theirs}, the services {ours}")
    return check


ASSIGNED = re.compile(
    r'^incentives_consumer_assigned_partitions\{group="([^"]*)",topic="([^"]*)"\} (\S+)$', re.M
)


async def assignments(http: httpx.AsyncClient, url: str) -> dict[tuple[str, str], int]:
    """``(group, topic) -> partitions`` the replica at ``url`` holds, from its /metrics."""
    try:
        text = (await http.get(f"{url}/metrics")).text
    except httpx.TransportError:
        return {}
    return {(g, t): int(float(n)) for g, t, n in ASSIGNED.findall(text)}


def partitions_of(topic: str) -> int:
    return 1 if topic.endswith(".checkpoints") else PARTITIONS


async def replicas_split(http: httpx.AsyncClient, stack: Stack, within: float = 60) -> Check:
    """Each consumer group's partitions are held once, and where a topic has as many
    partitions as there are replicas, every replica holds some."""
    check = Check("replicas", "the two replicas of each service split every group's partitions")
    deadline = time.monotonic() + within
    while True:
        findings: list[str] = []
        figures: dict[str, Any] = {}
        for service, replicas in stack.replicas.items():
            held = [await assignments(http, r.url) for r in replicas]
            keys = sorted({key for one in held for key in one})
            if not keys:
                findings.append(f"{service}: no replica holds a partition")
            for group, topic in keys:
                counts = [one.get((group, topic), 0) for one in held]
                figures[f"{group} {topic}"] = counts
                if sum(counts) != partitions_of(topic):
                    findings.append(f"{group} on {topic}: {counts} of {partitions_of(topic)}")
                elif partitions_of(topic) >= len(replicas) and 0 in counts:
                    findings.append(f"{group} on {topic}: {counts}, one replica holds none")
        if not findings or time.monotonic() > deadline:
            check.findings, check.figures = findings, {"held": figures}
            return check
        await asyncio.sleep(1)
