"""Applications fully processed per second by one service, from submit to its last stage.

The service runs as its own process (uvicorn) on PostgreSQL and the embedded broker.
Firms submit over HTTP, 32 at a time; scripted officers who watch the service's topic
decide each application as soon as it is verified (one decision, or a committee's votes);
the service's own stages do the rest. Stage times come from the events' own ``occurred_at``.

Three trials, each on a service just started: its peak, printed beside the raw asyncpg
3-statement transaction rate measured in the same run just before and just after the trial
(their mean), then the latency with submissions paced at half that peak. The median ratio
and the median p99 are reported, and each trial's.
A section (``bench/voucher.py``, ``bench/taxcredit.py``, ``bench/fund.py``) names its
service, its stage event types, its request body and, if it needs them, its officers'
decisions and a catalogue; everything else is here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from bench.append import PROJECTION_DDL, raw_rate
from bench.common import drop_database, fresh_database, line, percentile
from bench.lean_http import HTTPError, LeanClient
from bench.relay import broker_for_bench
from shared.auth import HS256Verifier
from shared.contracts import Role
from shared.eventstore import create_engine
from shared.migrations import migrations_of, upgrade
from shared.processes import ServiceStartError, start_service, wait_until_up

SECRET = "bench-secret-" + "z" * 32
FIRMS_AT_ONCE = 32
PACED_FRACTION = 0.5  # latency is measured at this fraction of the peak found in the same run
TRIALS = 3
"""Runs of a section, each on a service just started: the median figures are reported."""
SETTLED_CPU = 0.2
"""Below this share of a core, a service has worked through what its peak left it (idle, a
programme service uses under a tenth: its consumers' fetches)."""
STATE = Path("var") / "bench"


@dataclass(frozen=True)
class Decision:
    """What one scripted officer posts on each verified application."""

    officer: str
    """The officer's ``sub`` (a committee member, for a fund's vote)."""
    path: str
    """With ``{id}`` for the application id."""
    body: dict[str, Any]


@dataclass(frozen=True)
class Pipeline:
    """What a section tells this module about its service.

    Every service built on ``shared.kit`` names its application events
    ``<service>.application.submitted``, ``.verified`` and ``.approved``; the last stage,
    the service's own, is ``last``.
    """

    service: str
    """``services.<service>.main:create_app``; its topic is ``<service>.events``."""
    body: Callable[[int, str], dict[str, Any]]
    """The ``n``-th application's request body in run ``run``; ``firm.firm_id`` is its firm."""
    last: tuple[str, str]
    """The last stage's event type and its label."""
    decision_path: str = "/v1/applications/{id}/decisions"
    submit_path: str = "/v1/applications"
    decision: tuple[str, str] = ("approve", "scripted")
    count: int = 1500
    paced_seconds: float = 15.0
    decisions: tuple[Decision, ...] = ()
    """What the officers post on each verified application; none given: one officer posts
    ``decision`` to ``decision_path``."""
    in_turn: bool = False
    """The decisions on one application are posted one after another, each once the previous
    one was answered, instead of all at once."""
    decided_by: str = "scripted officer"
    """How the report names who approves."""
    catalogue: Callable[[], dict[str, Any]] | None = None
    """Builds a programme catalogue for the service (``INCENTIVES_CATALOGUE_PATH``), when the
    section runs; None: the service's own."""
    target_ratio: float = 0.08
    """Peak applications/s over raw tx/s that the section aims at."""
    target_p99_ms: float = 500.0
    """Submit-to-last-stage p99 at the paced rate that the section aims at."""

    @property
    def officers(self) -> tuple[Decision, ...]:
        if self.decisions:
            return self.decisions
        decision, reason = self.decision
        body = {"decision": decision, "reason": reason}
        return (Decision("officer-bench", self.decision_path, body),)

    @property
    def stages(self) -> dict[str, str]:
        """Event type -> label, in order."""
        kit = {f"{self.service}.application.{s}": s for s in ("submitted", "verified", "approved")}
        return {**kit, self.last[0]: self.last[1]}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.stages)

    @property
    def verified(self) -> bytes:
        return self.types[1].encode()


def _cpu_seconds(stat: Path) -> float | None:
    """A process's user and system CPU time so far, from its ``/proc/<pid>/stat`` (None
    where there is no such file)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def firm_id(n: int) -> str:
    """A business registration number (NNN-NN-NNNNN) of its own for each ``n`` of a run."""
    return f"{100 + n // 100000 % 900:03d}-{10 + n // 10000 % 90:02d}-{10000 + n % 10000 * 7 % 90000:05d}"


def firm(n: int, run: str, **profile: str) -> dict[str, Any]:
    """The ``n``-th firm of a run: an SME with ``profile`` (founded_on, cluster, industry)."""
    return {"firm_id": firm_id(n), "name": f"Bench Firm {run}-{n}", "size": "sme", **profile}


class Stack:
    """The service under test as its own uvicorn process, on a fresh database and topic prefix."""

    def __init__(
        self,
        service: str,
        dsn: str,
        url: str,
        bootstrap: str,
        state: Path,
        catalogue: dict[str, Any] | None = None,
    ) -> None:
        self.service, self.dsn, self.url, self.bootstrap = service, dsn, url, bootstrap
        self.state = state
        self.catalogue = catalogue
        self.catalogue_file: Path | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.tokens = HS256Verifier(SECRET)

    @property
    def topic(self) -> str:
        return f"{self.prefix}{self.service}.events"

    def start(self) -> None:
        environment = {
            "INCENTIVES_DATABASE_URL": self.url,
            "INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "INCENTIVES_TOPIC_PREFIX": self.prefix,
            "INCENTIVES_JWT_SECRET": SECRET,
            "INCENTIVES_STATE_DIR": str(self.state),
            "INCENTIVES_KAFKA_SESSION_TIMEOUT_MS": "1000",
        }
        if self.catalogue is not None:
            self.catalogue_file = self.state / f"{self.prefix}{self.service}-catalogue.json"
            self.catalogue_file.write_text(json.dumps(self.catalogue, indent=2))
            environment["INCENTIVES_CATALOGUE_PATH"] = str(self.catalogue_file.resolve())
        started = start_service(
            self.service,
            self.port,
            environment=environment,
            log_dir=self.state,
            options=(
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ),
        )
        self.process = started.process
        try:
            wait_until_up([started], path="/readyz", timeout=30)
        except ServiceStartError as error:
            raise RuntimeError(
                f"the {self.service} service did not start (see {started.log_path})"
            ) from error
        time.sleep(1.5)  # the stages' consumer group settles

    async def settle(self, idle: float = SETTLED_CPU, within: float = 30.0) -> str:
        """Wait until the service works through what the peak left it (its consumers'
        backlog, the relay, the checkpoints): until it uses less than ``idle`` of a core over
        half a second, at most ``within`` seconds. Says how long it took."""
        assert self.process is not None
        stat = Path(f"/proc/{self.process.pid}/stat")
        if _cpu_seconds(stat) is None:  # not Linux: a fixed pause instead
            await asyncio.sleep(5)
            return "after a 5 s pause"
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            before, at = _cpu_seconds(stat) or 0.0, time.perf_counter()
            await asyncio.sleep(0.5)
            used = ((_cpu_seconds(stat) or 0.0) - before) / (time.perf_counter() - at)
            if used < idle:
                return f"the service settled {time.perf_counter() - started:.1f} s after the peak"
        return f"the service still busy {within:.0f} s after the peak"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
        if self.catalogue_file is not None:
            self.catalogue_file.unlink(missing_ok=True)

    def headers(self, role: Role, sub: str, firm_id: str | None = None) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id)
        return {"Authorization": f"Bearer {token}"}


async def drive(
    pipeline: Pipeline, stack: Stack, count: int, rate: float | None, run: str, first: int = 0
) -> None:
    """Firms submit ``count`` applications, paced at ``rate``/s, or 32 at a time flat out.

    The scripted officer (``Officer``) runs beside, for the stack's whole life.
    Tokens and bodies are prepared before the clock starts: the firms' side is not measured.
    """
    requests = []
    for n in range(first, first + count):  # every application of the bench has a firm of its own
        body = pipeline.body(n, run)
        owner = body["firm"]["firm_id"]
        headers = {
            **stack.headers(Role.FIRM, f"ceo-{n}", firm_id=owner),
            "Idempotency-Key": f"{run}-{n}",
        }
        requests.append((json.dumps(body).encode(), headers))
    http = LeanClient("127.0.0.1", stack.port, connections=FIRMS_AT_ONCE)

    async def submit(i: int) -> None:
        await post(http, pipeline.submit_path, *requests[i])

    started = time.perf_counter()
    try:
        if rate is None:
            todo = iter(range(count))

            async def firms() -> None:
                for i in todo:
                    await submit(i)

            await asyncio.gather(*(firms() for _ in range(FIRMS_AT_ONCE)))
        else:
            tasks = []
            for i in range(count):
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(submit(i)))
            await asyncio.gather(*tasks)
    finally:
        await http.close()


async def post(http: LeanClient, path: str, body: Any, headers: dict[str, str]) -> bytes:
    for attempt in range(5):  # same Idempotency-Key: a retry cannot act twice
        try:
            status, answer = await http.post(path, body, headers)
        except (OSError, HTTPError, asyncio.IncompleteReadError) as error:
            print(f"  ({path}: retried after {error!r})", flush=True)
            await asyncio.sleep(0.05 * (attempt + 1))
            continue
        if status >= 400:
            raise RuntimeError(f"{path}: {status} {answer.decode()}")
        return answer
    raise RuntimeError(f"{path}: no answer after 5 tries")


class Officer:
    """Scripted officers who watch the service's topic and decide each verified application:
    each of the pipeline's decisions, all at once or one after another (``in_turn``)."""

    def __init__(self, pipeline: Pipeline, stack: Stack) -> None:
        self.pipeline, self.stack = pipeline, stack
        self.acts = [
            (
                n,
                decision.path,
                json.dumps(decision.body).encode(),
                stack.headers(Role.OFFICER, decision.officer),
            )
            for n, decision in enumerate(pipeline.officers)
        ]

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.stack.topic,
            bootstrap_servers=self.stack.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        # as many requests in flight for each of the decisions as the firms keep for their
        # submissions: with 16, the officers were what held the peak down (verified ->
        # approved queued for seconds while the service had CPU to spare)
        http = LeanClient("127.0.0.1", self.stack.port, connections=FIRMS_AT_ONCE * len(self.acts))
        pending: set[asyncio.Task[None]] = set()
        try:
            async for record in consumer:
                if record.key and dict(record.headers).get("type") == self.pipeline.verified:
                    task = asyncio.create_task(self.decide(http, record.key.decode()))
                    pending.add(task)
                    task.add_done_callback(self._settled(pending))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await consumer.stop()
            await http.close()

    async def decide(self, http: LeanClient, application_id: str) -> None:
        posts = (
            post(
                http,
                path.format(id=application_id),
                body,
                {
                    **headers,
                    "Idempotency-Key": f"decide{n or ''}-{application_id}",
                },
            )
            for n, path, body, headers in self.acts
        )
        if self.pipeline.in_turn:
            for one in posts:
                await one
        else:
            await asyncio.gather(*posts)

    def _settled(self, pending: set[asyncio.Task[None]]) -> Any:
        def settled(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                print(f"  (the officer could not decide: {task.exception()!r})", flush=True)

        return settled


async def stage_times(
    dsn: str, types: tuple[str, ...], run_since: float
) -> dict[str, dict[str, float]]:
    """``{application id: {event type: epoch seconds}}`` for the given types since ``run_since``."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT aggregate_id, type, extract(epoch from occurred_at) AS at FROM events"
            " WHERE type = ANY($1::text[]) AND occurred_at >= to_timestamp($2)",
            list(types),
            run_since,
        )
    finally:
        await connection.close()
    times: dict[str, dict[str, float]] = {}
    for row in rows:
        times.setdefault(row["aggregate_id"], {})[row["type"]] = float(row["at"])
    return times


async def wait_done(
    pipeline: Pipeline,
    dsn: str,
    count: int,
    since: float,
    officer: asyncio.Task[None],
    within: float = 120,
) -> dict[str, dict[str, float]]:
    """Until ``count`` applications submitted since ``since`` reached the last stage.

    Counted by applications with every stage in the window, so that a previous run's
    applications whose last stages fall into it are not taken for this run's.
    """
    deadline = time.monotonic() + within
    times: dict[str, dict[str, float]] = {}
    while time.monotonic() < deadline:
        if officer.done():
            officer.result()  # the officer gave up: say why
            raise RuntimeError("the scripted officer stopped")
        times = await stage_times(dsn, pipeline.types, since)
        if sum(1 for t in times.values() if len(t) == len(pipeline.types)) >= count:
            return times
        if refused := await rejections(dsn, pipeline.service, since):
            raise RuntimeError(f"{len(refused)} applications rejected, the first: {refused[0]}")
        await asyncio.sleep(0.2)
    reached = {
        label: sum(1 for t in times.values() if s in t) for s, label in pipeline.stages.items()
    }
    raise RuntimeError(f"not every application reached {pipeline.last[1]} in time: {reached}")


async def rejections(dsn: str, service: str, since: float) -> list[str]:
    """The payloads of the applications the service rejected since ``since``."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT payload::text FROM events WHERE type = $1 AND occurred_at >= to_timestamp($2)",
            f"{service}.application.rejected",
            since,
        )
    finally:
        await connection.close()
    return [row[0] for row in rows]


def summarise(pipeline: Pipeline, times: dict[str, dict[str, float]]) -> dict[str, Any]:
    types, labels = pipeline.types, pipeline.stages
    complete = [t for t in times.values() if all(s in t for s in types)]
    first = min(t[types[0]] for t in complete)
    last = max(t[types[-1]] for t in complete)
    per_stage = {}
    for a, b in itertools.pairwise(types):
        samples = [(t[b] - t[a]) * 1000 for t in complete]
        per_stage[f"{labels[a]}->{labels[b]}"] = (percentile(samples, 50), percentile(samples, 99))
    total = [(t[types[-1]] - t[types[0]]) * 1000 for t in complete]
    return {
        "count": len(complete),
        "per_s": len(complete) / (last - first),
        "stages": per_stage,
        "total_p50": percentile(total, 50),
        "total_p99": percentile(total, 99),
    }


async def raw_reference(count: int = 4000) -> float:
    """Raw asyncpg's 3-statement transactions per second, on a fresh database of the same schema."""
    dsn, url = await fresh_database("raw")
    try:
        engine = create_engine(url)
        try:
            # the log as production migrates it; oversight's schema has no applications table
            await upgrade(engine, migrations_of("oversight"))
            async with engine.begin() as connection:
                await connection.exec_driver_sql(PROJECTION_DDL)
        finally:
            await engine.dispose()
        await raw_rate(dsn, count // 10)  # warm, as the append section does
        raw = await raw_rate(dsn, count)
    finally:
        await drop_database(dsn)
    print(f"  (raw asyncpg measured: {raw:,.0f} tx/s)", flush=True)
    return raw


@contextlib.asynccontextmanager
async def serving(
    pipeline: Pipeline, bootstrap: str
) -> AsyncIterator[tuple[Stack, str, asyncio.Task[None]]]:
    """The service on a fresh database and topic prefix, with its scripted officers running:
    ``(stack, dsn, officer)``; stopped and dropped afterwards."""
    dsn, url = await fresh_database(pipeline.service)
    STATE.mkdir(parents=True, exist_ok=True)
    catalogue = pipeline.catalogue() if pipeline.catalogue is not None else None
    stack = Stack(pipeline.service, dsn, url, bootstrap, STATE, catalogue)
    officer: asyncio.Task[None] | None = None
    try:
        stack.start()
        officer = asyncio.create_task(Officer(pipeline, stack).run())
        yield stack, dsn, officer
    finally:
        if officer is not None:
            officer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await officer
        stack.stop()
        await drop_database(dsn)


@dataclass(frozen=True)
class Trial:
    """One service's run: its peak, then the latency at half of it."""

    peak: dict[str, Any]
    paced_rate: float
    paced: dict[str, Any]


async def trial(pipeline: Pipeline, bootstrap: str) -> Trial:
    """Firms submit ``pipeline.count`` applications flat out to a service just started, then
    ``pipeline.paced_seconds`` worth of applications paced at half the peak found."""
    async with serving(pipeline, bootstrap) as (stack, dsn, officer):
        since = time.time()
        await drive(pipeline, stack, pipeline.count, None, f"peak{int(since)}")
        print(f"  (peak run submitted; waiting until every one is {pipeline.last[1]})", flush=True)
        peak = summarise(pipeline, await wait_done(pipeline, dsn, pipeline.count, since, officer))
        settled = await stack.settle()
        rate = peak["per_s"] * PACED_FRACTION
        count = round(rate * pipeline.paced_seconds)
        print(f"  (paced run: {count:,} at {rate:,.0f}/s, {settled})", flush=True)
        since = time.time()
        await drive(pipeline, stack, count, rate, f"paced{int(since)}", first=pipeline.count)
        paced = summarise(pipeline, await wait_done(pipeline, dsn, count, since, officer))
    return Trial(peak, rate, paced)


def middle(values: list[float]) -> int:
    """The index of the median of an odd number of ``values``."""
    return sorted(range(len(values)), key=values.__getitem__)[len(values) // 2]


async def measure(pipeline: Pipeline) -> dict[str, Any]:
    """``TRIALS`` runs of a service just started on a fresh database, each its peak and then
    the latency paced at half that peak; the section's whole run, printed.

    The raw reference is measured before the first trial and after each (the service
    stopped): a trial's ratio has the mean of the two raw rates beside it as its
    denominator. On this shared machine one raw measurement moved by half within a minute,
    and one service's peak by a third between two runs a minute apart. The median ratio and
    the median p99 are reported, each with its own trial's figures, and all three of both."""
    raws = [await raw_reference()]
    trials: list[Trial] = []
    async with broker_for_bench() as bootstrap:
        for _ in range(TRIALS):
            trials.append(await trial(pipeline, bootstrap))
            raws.append(await raw_reference())
    raw_of = [(raws[i] + raws[i + 1]) / 2 for i in range(len(trials))]
    ratios = [t.peak["per_s"] / raw for t, raw in zip(trials, raw_of, strict=True)]
    p99s = [t.paced["total_p99"] for t in trials]
    by_ratio, by_p99 = trials[middle(ratios)], trials[middle(p99s)]
    raw, ratio, p99 = raw_of[middle(ratios)], ratios[middle(ratios)], p99s[middle(p99s)]
    report(pipeline, trials, raws, ratios, p99s)
    return {
        "raw_tx_per_s": raw,
        "raw_each": raws,
        "peak": by_ratio.peak,
        "ratio": ratio,
        "ratio_trials": ratios,
        "target_ratio": pipeline.target_ratio,
        "ratio_met": ratio >= pipeline.target_ratio,
        "paced_rate": by_p99.paced_rate,
        "paced": by_p99.paced,
        "p99_trials": p99s,
        "target_p99_ms": pipeline.target_p99_ms,
        "p99_met": p99 < pipeline.target_p99_ms,
    }


def report(
    pipeline: Pipeline,
    trials: list[Trial],
    raws: list[float],
    ratios: list[float],
    p99s: list[float],
) -> None:
    labels = list(pipeline.stages.values())
    steps = ["submit", labels[1], f"{labels[2]} ({pipeline.decided_by})", *labels[3:]]
    print(f"{pipeline.service}: {' -> '.join(steps)}, PostgreSQL + Tansu")
    at = middle(ratios)
    peak, before, after = trials[at].peak, raws[at], raws[at + 1]
    ratio, target = ratios[at], pipeline.target_ratio
    line(
        "raw asyncpg 3-statement transactions",
        f"{(before + after) / 2:,.0f} tx/s",
        f"mean of {before:,.0f} before and {after:,.0f} after the median trial",
    )
    line(
        f"applications fully processed ({peak['count']:,}, {FIRMS_AT_ONCE} firms at once)",
        f"{peak['per_s']:,.0f} apps/s",
        f"ratio {ratio:.3f} of raw (target >= {target:.2f}: {met(ratio >= target)})",
    )
    line(
        f"  ratio in each of {len(ratios)} trials (the median above)",
        "",
        ", ".join(f"{r:.3f}" for r in ratios),
    )
    stage_lines(peak, "at peak")
    paced = trials[middle(p99s)]
    p99, limit = paced.paced["total_p99"], pipeline.target_p99_ms
    line(
        f"submit -> {labels[-1]} at {paced.paced_rate:,.0f} apps/s = peak/2 "
        f"({paced.paced['count']:,})",
        f"p50 {paced.paced['total_p50']:,.0f} ms",
        f"p99 {p99:,.0f} ms (target < {limit:,.0f} ms: {met(p99 < limit)})",
    )
    line(
        f"  p99 in each of {len(p99s)} trials, at half its own peak",
        "",
        ", ".join(f"{p:,.0f} ms" for p in p99s),
    )
    stage_lines(paced.paced, f"at {paced.paced_rate:,.0f}/s")


def met(reached: bool) -> str:
    return "met" if reached else "NOT met"


def stage_lines(figures: dict[str, Any], where: str) -> None:
    for stage, (p50, p99) in figures["stages"].items():
        line(f"  {stage} {where}", f"p50 {p50:,.0f} ms", f"p99 {p99:,.0f} ms")
