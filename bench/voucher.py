"""Voucher applications fully processed per second: submit, verified, approved, issued.

The voucher service runs as its own process on PostgreSQL and the embedded
broker. Firms submit over HTTP; a scripted officer approves each application
as soon as it is verified; the payout stage issues the voucher. Stage times
come from the events' own ``occurred_at``. Printed beside the raw asyncpg
3-statement transaction rate measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from bench.append import raw_rate
from bench.common import drop_database, fresh_database, line, percentile
from bench.lean_http import HTTPError, LeanClient
from bench.relay import broker_for_bench
from shared.auth import HS256Verifier
from shared.broker import die_with_parent
from shared.contracts import Role

SECRET = "bench-secret-" + "z" * 32
VERIFIED = b"voucher.application.verified"
STAGES = (
    "voucher.application.submitted",
    "voucher.application.verified",
    "voucher.application.approved",
    "voucher.voucher.issued",
)


def firm_id(n: int) -> str:
    return f"{100 + n // 100000 % 900:03d}-{10 + n // 10000 % 90:02d}-{10000 + n % 10000 * 7 % 90000:05d}"


def body(n: int, run: str) -> dict[str, Any]:
    return {
        "programme_id": "cluster-startup-support-2026",
        "firm": {
            "firm_id": firm_id(n),
            "name": f"Bench Startup {run}-{n}",
            "founded_on": "2024-01-15",
            "size": "sme",
            "cluster": "pangyo-techno-valley",
            "industry": "artificial_intelligence",
        },
        "service_category": "consulting",
        "requested_amount": 1_000_000,
        "purpose": "go-to-market consulting",
    }


class Stack:
    def __init__(self, dsn: str, url: str, bootstrap: str, state: Path) -> None:
        self.dsn, self.url, self.bootstrap, self.state = dsn, url, bootstrap, state
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.tokens = HS256Verifier(SECRET)

    def start(self) -> None:
        env = {
            **os.environ,
            "INCENTIVES_DATABASE_URL": self.url,
            "INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "INCENTIVES_TOPIC_PREFIX": self.prefix,
            "INCENTIVES_JWT_SECRET": SECRET,
            "INCENTIVES_STATE_DIR": str(self.state),
            "INCENTIVES_KAFKA_SESSION_TIMEOUT_MS": "1000",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.voucher.main:create_app",
                "--factory",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "5",
            ],
            env=env,
            stdout=open(self.state / "voucher.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    time.sleep(1.5)  # the stages' consumer group settles
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("voucher service did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)

    def headers(self, role: Role, sub: str, firm_id: str | None = None) -> dict[str, str]:
        token = self.tokens.issue(sub=sub, role=role, firm_id=firm_id)
        return {"Authorization": f"Bearer {token}"}


async def drive(stack: Stack, count: int, rate: float | None, run: str, first: int = 0) -> None:
    """Firms submit ``count`` applications, paced at ``rate``/s, or 32 at a time flat out.

    The scripted officer (``Officer``) runs beside, for the stack's whole life.
    Tokens and bodies are prepared before the clock starts: the firms' side is not measured.
    """
    numbers = range(first, first + count)  # every application of the bench has a firm of its own
    requests = [
        (
            json.dumps(body(n, run)).encode(),
            {
                **stack.headers(Role.FIRM, f"ceo-{n}", firm_id=firm_id(n)),
                "Idempotency-Key": f"{run}-{n}",
            },
        )
        for n in numbers
    ]
    http = LeanClient("127.0.0.1", stack.port, connections=32)

    async def submit(i: int) -> None:
        await post(http, "/v1/applications", *requests[i])

    started = time.perf_counter()
    try:
        if rate is None:
            todo = iter(range(count))

            async def firms() -> None:
                for i in todo:
                    await submit(i)

            await asyncio.gather(*(firms() for _ in range(32)))
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
    """A scripted officer who watches ``voucher.events`` and approves each verified application."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.headers = stack.headers(Role.OFFICER, "officer-bench")

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.stack.prefix + "voucher.events",
            bootstrap_servers=self.stack.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        http = LeanClient("127.0.0.1", self.stack.port, connections=16)
        pending: set[asyncio.Task[bytes]] = set()
        decision = json.dumps({"decision": "approve", "reason": "scripted"}).encode()
        try:
            async for record in consumer:
                if record.key and dict(record.headers).get("type") == VERIFIED:
                    application_id = record.key.decode()
                    headers = {**self.headers, "Idempotency-Key": f"approve-{application_id}"}
                    path = f"/v1/applications/{application_id}/decisions"
                    task = asyncio.create_task(post(http, path, decision, headers))
                    pending.add(task)
                    task.add_done_callback(self._settled(pending))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await consumer.stop()
            await http.close()

    def _settled(self, pending: set[asyncio.Task[bytes]]) -> Any:
        def settled(task: asyncio.Task[bytes]) -> None:
            pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                print(f"  (the officer could not approve: {task.exception()!r})", flush=True)

        return settled


async def stage_times(dsn: str, run_since: float) -> dict[str, dict[str, float]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT aggregate_id, type, extract(epoch from occurred_at) AS at FROM events"
            " WHERE type = ANY($1::text[]) AND occurred_at >= to_timestamp($2)",
            list(STAGES),
            run_since,
        )
    finally:
        await connection.close()
    times: dict[str, dict[str, float]] = {}
    for row in rows:
        times.setdefault(row["aggregate_id"], {})[row["type"]] = float(row["at"])
    return times


async def wait_issued(
    dsn: str, count: int, since: float, officer: asyncio.Task[None], within: float = 120
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if officer.done():
            officer.result()  # the officer gave up: say why
            raise RuntimeError("the scripted officer stopped")
        times = await stage_times(dsn, since)
        if sum(1 for t in times.values() if STAGES[3] in t) >= count:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("not every application was issued in time")


def summarise(times: dict[str, dict[str, float]]) -> dict[str, Any]:
    complete = [t for t in times.values() if all(s in t for s in STAGES)]
    first = min(t[STAGES[0]] for t in complete)
    last = max(t[STAGES[3]] for t in complete)
    per_stage = {}
    for a, b in itertools.pairwise(STAGES):
        samples = [(t[b] - t[a]) * 1000 for t in complete]
        per_stage[f"{a.rsplit('.', 1)[1]}->{b.rsplit('.', 1)[1]}"] = (
            percentile(samples, 50),
            percentile(samples, 99),
        )
    total = [(t[STAGES[3]] - t[STAGES[0]]) * 1000 for t in complete]
    return {
        "count": len(complete),
        "per_s": len(complete) / (last - first),
        "stages": per_stage,
        "total_p50": percentile(total, 50),
        "total_p99": percentile(total, 99),
    }


async def run(
    count: int = 1500, paced_rate: float = 100.0, paced_seconds: float = 15.0
) -> dict[str, Any]:
    raw_dsn, _ = await fresh_database("raw")
    try:
        connection = await asyncpg.connect(raw_dsn)
        from bench.append import PROJECTION_DDL
        from shared.clock import SystemClock
        from shared.eventstore import EventStore, create_engine

        await connection.close()
        engine = create_engine(raw_dsn.replace("postgresql://", "postgresql+asyncpg://", 1))
        await EventStore(engine, SystemClock()).create_schema()
        async with engine.begin() as c:
            await c.exec_driver_sql(PROJECTION_DDL)
        await engine.dispose()
        raw = await raw_rate(raw_dsn, 4000)
        print(f"  (raw asyncpg measured: {raw:,.0f} tx/s)", flush=True)
    finally:
        await drop_database(raw_dsn)

    results: dict[str, Any] = {"raw_tx_per_s": raw}
    async with broker_for_bench() as bootstrap:
        dsn, url = await fresh_database("voucher")
        state = Path("var") / "bench"
        state.mkdir(parents=True, exist_ok=True)
        stack = Stack(dsn, url, bootstrap, state)
        stack.start()
        officer = asyncio.create_task(Officer(stack).run())
        try:
            since = time.time() - 1
            await drive(stack, count, None, f"peak{int(since)}")
            print("  (peak run submitted; waiting until every voucher is issued)", flush=True)
            await wait_issued(dsn, count, since, officer)
            peak = summarise(await stage_times(dsn, since))
            since = time.time() - 0.5
            paced_count = int(paced_rate * paced_seconds)
            await drive(stack, paced_count, paced_rate, f"paced{int(since)}", first=count)
            await wait_issued(dsn, paced_count, since, officer)
            paced = summarise(await stage_times(dsn, since))
        finally:
            officer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await officer
            stack.stop()
            await drop_database(dsn)
    print(
        "voucher: submit -> verified -> approved (scripted officer) -> issued, PostgreSQL + Tansu"
    )
    line("raw asyncpg 3-statement transactions", f"{raw:,.0f} tx/s")
    line(
        f"applications fully processed ({peak['count']:,}, 32 firms at once)",
        f"{peak['per_s']:,.0f} apps/s",
        f"ratio {peak['per_s'] / raw:.3f} of raw (target >= 0.08)",
    )
    for stage, (p50, p99) in peak["stages"].items():
        line(f"  {stage} at peak", f"p50 {p50:,.0f} ms", f"p99 {p99:,.0f} ms")
    line(
        f"submit -> issued at {paced_rate:.0f} apps/s ({paced['count']:,})",
        f"p50 {paced['total_p50']:,.0f} ms",
        f"p99 {paced['total_p99']:,.0f} ms (target < 500 ms)",
    )
    for stage, (p50, p99) in paced["stages"].items():
        line(f"  {stage} at {paced_rate:.0f}/s", f"p50 {p50:,.0f} ms", f"p99 {p99:,.0f} ms")
    results.update(peak=peak, paced=paced)
    return results
