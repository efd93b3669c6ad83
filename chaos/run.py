"""The chaos run: two replicas of every service on PostgreSQL and the embedded broker,
scripted users applying and deciding, and a driver that kills a random service process
(-9) every few seconds and starts it again, and resets the broker. Then the checks.

The run's faults, in order:
- every ``kill_every`` seconds, one replica of a service whose two replicas are both up
  is killed and started again at once (the other replica keeps serving);
- ``broker_resets`` times, spread over the run, the broker is killed and started again
  empty (it keeps nothing), with a new cluster id.
Recovery after a kill is the time until the replica answers ``/readyz`` again; after a
broker reset, the time until each programme has verified an application submitted after it.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import POSTGRES
from chaos import checks
from chaos.drivers import Caller, Tally, Users
from chaos.stack import PROGRAMMES, Replica, Stack
from shared.contracts import Role


@dataclass(frozen=True)
class Options:
    duration: float = 300.0
    """Seconds of applications and faults (the drain and the checks come after)."""
    rate: float = 2.0
    """Applications a second, per programme."""
    kill_every: float = 4.0
    broker_resets: int = 1
    drain: float = 240.0
    """At most this long, after the faults, for every application to settle."""
    state: Path = Path("var") / "chaos"
    postgres: str = POSTGRES
    seed: int | None = None
    keep_databases: bool = False


@dataclass
class Fault:
    kind: str
    """``kill`` or ``broker_reset``."""
    target: str
    at: float
    """Seconds into the run."""
    recovered_after: float | None = None


@dataclass
class Faults:
    happened: list[Fault] = field(default_factory=list)
    restarts: set[asyncio.Task[None]] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


async def run(options: Options) -> dict[str, Any]:
    """Run, check, and return the report (``ok`` says whether every check held)."""
    rng = random.Random(options.seed)
    stack = Stack(options.state, options.postgres)
    tally = Tally()
    faults = Faults()
    began = time.monotonic()
    try:
        await stack.start()
        async with httpx.AsyncClient(timeout=10) as http:
            split = await checks.replicas_split(http, stack)
        caller = Caller(stack, tally)
        users = Users(stack, caller, options.rate)
        loops = [asyncio.create_task(loop) for loop in users.run()]
        try:
            await inflict(stack, users, faults, options, rng, time.monotonic())
            users.stop_submitting.set()
            await asyncio.gather(*faults.restarts)
            for replica in stack.all_replicas():  # one that did not come back: once more
                if not replica.ready:
                    await restart(replica, Fault("restart", replica.name, 0.0), faults)
            await asyncio.gather(*loops[: len(PROGRAMMES)])  # the firms' last answers
            drained = await drain(stack, options.drain)
        finally:
            await users.finish()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await caller.close()
        report = await verify(stack, tally, faults, drained, split)
    finally:
        await stack.stop(keep_databases=options.keep_databases)
    report["figures"]["seconds"] = round(time.monotonic() - began, 1)
    report["options"] = {
        "duration": options.duration,
        "rate_per_programme": options.rate,
        "kill_every": options.kill_every,
        "seed": options.seed,
    }
    return report


async def inflict(
    stack: Stack,
    users: Users,
    faults: Faults,
    options: Options,
    rng: random.Random,
    began: float,
) -> None:
    """Kill and restart replicas, and reset the broker, for ``options.duration`` seconds."""
    resets = [
        began + options.duration * (i + 1) / (options.broker_resets + 1)
        for i in range(options.broker_resets)
    ]
    end = began + options.duration
    restarting: dict[str, asyncio.Task[None]] = {}
    while (now := time.monotonic()) < end:
        await asyncio.sleep(min(options.kill_every, end - now))
        if time.monotonic() >= end:
            break
        if resets and time.monotonic() >= resets[0]:
            resets.pop(0)
            await reset_broker(stack, users, faults, began)
            continue
        # any replica whose sibling serves: one still starting may die again (a crash
        # during startup), the one left serving never does
        killable = [
            replica
            for replicas in stack.replicas.values()
            for replica in replicas
            if any(other.ready for other in replicas if other is not replica)
        ]
        if not killable:
            continue
        replica = rng.choice(killable)
        fault = Fault(
            "kill" if replica.ready else "kill_while_starting",
            replica.name,
            round(time.monotonic() - began, 1),
        )
        faults.happened.append(fault)
        starting = restarting.pop(replica.name, None)
        if starting is not None and not starting.done():
            starting.cancel()  # its start is abandoned: the process dies now
            await asyncio.gather(starting, return_exceptions=True)
        replica.kill()
        task = asyncio.create_task(restart(replica, fault, faults))
        restarting[replica.name] = task
        faults.restarts.add(task)
        task.add_done_callback(faults.restarts.discard)


async def restart(replica: Replica, fault: Fault, faults: Faults) -> None:
    killed = time.monotonic()
    replica.kill()  # whatever is left of it: one port, one process
    try:
        await replica.start()
    except RuntimeError as error:
        faults.errors.append(f"{replica.name} did not come back: {error}")
        return
    fault.recovered_after = round(time.monotonic() - killed, 2)


async def reset_broker(stack: Stack, users: Users, faults: Faults, began: float) -> None:
    fault = Fault(
        "broker_reset", stack.broker.bootstrap_servers, round(time.monotonic() - began, 1)
    )
    faults.happened.append(fault)
    reset = time.monotonic()
    stack.reset_broker()  # in the loop's thread, as the replicas: see Replica.launch
    probes = await asyncio.gather(*(users.apply(service) for service in PROGRAMMES))
    waits = [
        verified_after(users.caller, stack, service, application_id)
        for service, application_id in zip(PROGRAMMES, probes, strict=True)
        if application_id is not None
    ]
    task = asyncio.create_task(recovered(fault, reset, waits, faults))
    faults.restarts.add(task)
    task.add_done_callback(faults.restarts.discard)


async def recovered(fault: Fault, since: float, waits: list[Any], faults: Faults) -> None:
    if all(await asyncio.gather(*waits)):
        fault.recovered_after = round(time.monotonic() - since, 2)
    else:
        faults.errors.append("after the broker reset, a probe application was not verified")


async def verified_after(
    caller: Caller, stack: Stack, service: str, application_id: str, within: float = 120
) -> bool:
    """Whether the application left ``submitted`` (its service's stages work again)."""
    officer = stack.headers(Role.OFFICER, "officer-probe")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        answer = await caller.call(
            service, "GET", f"/v1/applications/{application_id}", headers=officer
        )
        if (
            answer is not None
            and answer.status_code == 200
            and answer.json()["status"] != "submitted"
        ):
            return True
        await asyncio.sleep(0.2)
    return False


async def drain(stack: Stack, within: float) -> dict[str, int]:
    """Until every application has settled (or ``within`` seconds): what is left."""
    deadline = time.monotonic() + within
    left: dict[str, int] = {}
    while time.monotonic() < deadline:
        left = dict(checks.unsettled(await checks.read_logs(stack)))
        if not left:
            return left
        await asyncio.sleep(2)
    return left


async def verify(
    stack: Stack, tally: Tally, faults: Faults, unsettled: dict[str, int], split: checks.Check
) -> dict[str, Any]:
    await asyncio.sleep(7)  # one sealing interval: every event is in a checkpoint
    logs = await checks.read_logs(stack)
    async with httpx.AsyncClient(timeout=30) as http:
        statuses, lists = await checks.statuses_explained(http, stack, logs)
        found = [
            split,
            statuses,
            checks.nothing_lost(tally.accepted, tally.acts, logs),
            await checks.exactly_once(stack, logs),
            await checks.money(stack, logs),
            await asyncio.to_thread(checks.audit, stack),
            await checks.oversight_agrees(http, stack, lists),
        ]
    answers = checks.Check("answers", "no 5xx but a 503 with Retry-After; no replica stayed down")
    answers.findings += tally.server_errors + tally.refused_without_retry_after + faults.errors
    answers.findings += [f"nobody answered {what}" for what in tally.gave_up]
    answers.findings += [f"unexpected answer: {what}" for what in tally.unexpected]
    found.append(answers)
    kills = [f for f in faults.happened if f.kind in ("kill", "kill_while_starting")]
    resets = [f for f in faults.happened if f.kind == "broker_reset"]
    return {
        "ok": all(c.ok for c in found),
        "figures": {
            "applications": {s: len(a) for s, a in tally.accepted.items()},
            "unsettled_after_drain": unsettled,
            "process_kills": len(kills),
            "killed_while_starting": sum(1 for f in kills if f.kind == "kill_while_starting"),
            "broker_resets": len(resets),
            "requests": sum(tally.requests.values()),
            "refused_503": dict(tally.refused),
            "unreachable": dict(tally.unreachable),
            "recovery_after_kill_s": spread([f.recovered_after for f in kills]),
            "recovery_after_broker_reset_s": [f.recovered_after for f in resets],
            "lost": len(checks_named(found, "accepted").findings),
        },
        "checks": {c.name: c.as_json() for c in found},
        "faults": [f.__dict__ for f in faults.happened],
    }


def checks_named(found: list[checks.Check], name: str) -> checks.Check:
    return next(c for c in found if c.name == name)


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"count": 0, "median": None, "max": None}
    return {
        "count": len(known),
        "median": round(statistics.median(known), 2),
        "max": round(max(known), 2),
    }
