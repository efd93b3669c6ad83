"""``incentives audit``: an auditor's commands, reading the services' topics (see :mod:`shared.audit`).

Every command reads a service's log from the Kafka topics (``--topic-prefix P`` reads a
copy under ``P<service>.events``), or with ``--source URL`` from the service's own
``/v1/events`` and checkpoint endpoints; it exits 0 with no finding, 1 with findings, 2
on a usage error, and ``--json`` prints ``{"ok", "checked", "findings"}``. The replaying
commands (``history``, ``replay``, ``diff``) are added by oversight, which holds the
programmes' folds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from shared.audit import Finding, Report, verify_log
from shared.auth import HS256Verifier
from shared.checkpoints import public_keys
from shared.contracts import Role
from shared.contracts.chain import ReadEnvelope
from shared.security import kafka_client_options
from shared.settings import ServiceSettings
from shared.topics import SERVICES, checkpoints_topic, events_topic

audit = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)

Progressed = Callable[[int], None]
"""Told how many more records were read."""

ServiceOption = Annotated[
    list[str] | None, typer.Option(help="voucher, taxcredit or fund (default: all three)")
]
PrefixOption = Annotated[
    str, typer.Option(help="read P<service>.events and P<service>.checkpoints")
]
BootstrapOption = Annotated[str | None, typer.Option(help="the Kafka bootstrap servers")]
SourceOption = Annotated[
    str | None,
    typer.Option(help="read a service's /v1/events and checkpoints at this URL, not the topics"),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        envvar="INCENTIVES_TOKEN",
        help="an auditor's bearer token for --source (development: minted from var/)",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the report as JSON")]


async def read_whole_topic(
    bootstrap: str,
    topic: str,
    progressed: Progressed | None = None,
    client_options: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Every record on ``topic`` now, from the beginning of each partition (no group);
    ``client_options``: the connection's security (see ``shared.security``)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        **(client_options or {}),
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while await _behind(consumer, ends):
            for batch in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                records.extend(batch)
                if progressed is not None:
                    progressed(len(batch))
        return records
    finally:
        await consumer.stop()


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for partition, end in ends.items():
        if await consumer.position(partition) < end:
            return True
    return False


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer.topics()
    return set(consumer.partitions_for_topic(topic) or ())


def _loads(value: bytes) -> Any:
    """JSON, fast; what orjson refuses (a lone surrogate, a huge number) the standard way."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return json.loads(value)


@dataclass
class ServiceLog:
    """A service's log as read: ``(position, envelope)`` in any order, its checkpoints,
    and findings about what could not be placed at all."""

    service: str
    events: list[tuple[int, Any]] = field(default_factory=list)
    checkpoints: list[Any] = field(default_factory=list)
    unplaced: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class LogReader:
    """Where the logs come from: the topics (under ``prefix``) or a service's API."""

    bootstrap: str
    prefix: str = ""
    source: str | None = None
    token: str | None = None
    progressed: Progressed | None = None
    slim: bool = False
    """Keep only what verify reads of each event (its content hashed as it is read):
    a fifth of the memory for a long log, and no payload to walk again."""
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    """The Kafka connection's security (see ``shared.security``)."""
    checkpoints: bool = True
    """Read the checkpoints topic too (from the topics only; ``restore-check`` needs the
    events alone, and the service's own Kafka user may not read its checkpoints)."""

    def read(self, service: str) -> ServiceLog:
        with collector_paused():
            if self.source is not None:
                return self._from_api(service)
            return asyncio.run(self._from_topics(service))

    async def _from_topics(self, service: str) -> ServiceLog:
        log = ServiceLog(service)
        events = self.prefix + events_topic(service)
        for record in await read_whole_topic(
            self.bootstrap, events, self.progressed, self.kafka_options
        ):
            try:
                position = int(next(v for k, v in record.headers if k == "position"))
                envelope = _loads(record.value)
                if self.slim and isinstance(envelope, dict):
                    envelope = ReadEnvelope.of(envelope)
            except (StopIteration, TypeError, ValueError):
                log.unplaced.append(
                    Finding(
                        "inserted",
                        service,
                        expected="a log event with its position header",
                        found=f"offset {record.offset} of partition {record.partition}",
                    )
                )
                continue
            log.events.append((position, envelope))
        sealed = self.prefix + checkpoints_topic(service)
        for record in (
            await read_whole_topic(self.bootstrap, sealed, self.progressed, self.kafka_options)
            if self.checkpoints
            else []
        ):
            try:
                log.checkpoints.append(json.loads(record.value))
            except ValueError:
                log.unplaced.append(
                    Finding("bad_signature", service, "a checkpoint", f"offset {record.offset}")
                )
        # a redelivered copy is the same object; a fork (two at one size) stays two
        log.checkpoints = list({json.dumps(c, sort_keys=True): c for c in log.checkpoints}.values())
        return log

    def _from_api(self, service: str) -> ServiceLog:
        log = ServiceLog(service)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.Client(base_url=str(self.source), timeout=30, headers=headers) as http:
            after = 0
            while True:
                page = http.get("/v1/events", params={"after": after, "limit": 10_000})
                page.raise_for_status()
                items = page.json()["items"]
                if not items:
                    break
                log.events += [
                    (
                        int(i["position"]),
                        ReadEnvelope.of(i["envelope"]) if self.slim else i["envelope"],
                    )
                    for i in items
                ]
                after = int(items[-1]["position"])
                if self.progressed is not None:
                    self.progressed(len(items))
            after = 0
            while True:
                page = http.get("/v1/checkpoints", params={"after": after, "limit": 1000})
                page.raise_for_status()
                items = page.json()["items"]
                if not items:
                    break
                log.checkpoints += items
                after = int(items[-1]["tree_size"])
        return log


@contextmanager
def collector_paused() -> Iterator[None]:
    """A log is a million objects kept alive and none of them in a cycle: the cycle
    collector would only walk them again and again while they pile up."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def verify_service(
    reader: LogReader,
    service: str,
    keys: dict[str, bytes],
    *,
    now: datetime,
    sealing_interval: timedelta,
) -> Report:
    """``verify`` for one service: its log read and checked."""
    with collector_paused():
        log = reader.read(service)
        report = verify_log(
            service, log.events, log.checkpoints, keys, now=now, sealing_interval=sealing_interval
        )
        report.findings[:0] = log.unplaced
        return report


def auditor_token(token: str | None, settings: ServiceSettings) -> str:
    """The token given, or in development one minted from the secret in ``var/``."""
    if token:
        return token
    if settings.environment == "production":
        raise typer.BadParameter("give --token or INCENTIVES_TOKEN", param_hint="--token")
    verifier = HS256Verifier(settings.resolved_jwt_secret())
    return verifier.issue(sub="audit-cli", role=Role.AUDITOR, ttl=timedelta(hours=1))


def services_of(service: Sequence[str] | None, source: str | None) -> list[str]:
    """The services asked for (all three by default); ``--source`` reads one service."""
    services = list(service or (SERVICES if source is None else ()))
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise typer.BadParameter(f"no service {', '.join(unknown)}", param_hint="--service")
    if source is not None and len(services) != 1:
        raise typer.BadParameter("--source reads one service: name it", param_hint="--service")
    return services


def reader_for(
    settings: ServiceSettings,
    *,
    bootstrap: str | None,
    prefix: str,
    source: str | None,
    token: str | None,
    progressed: Progressed | None = None,
    slim: bool = False,
) -> LogReader:
    return LogReader(
        bootstrap=bootstrap or settings.kafka_bootstrap_servers,
        prefix=prefix,
        source=source,
        token=auditor_token(token, settings) if source is not None else None,
        progressed=progressed,
        slim=slim,
        kafka_options=kafka_client_options(settings),
    )


@contextmanager
def reading(what: str, quiet: bool = False) -> Iterator[Progressed]:
    """A progress bar on standard error while records are read (none when ``quiet``)."""
    if quiet or not sys.stderr.isatty():
        yield lambda _: None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=None),
        TextColumn("{task.completed:,} records"),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task(what, total=None)
        yield lambda n: progress.advance(task, n)


@contextmanager
def log_reader(
    settings: ServiceSettings,
    *,
    bootstrap: str | None,
    prefix: str,
    source: str | None,
    token: str | None,
    quiet: bool,
    slim: bool = False,
) -> Iterator[LogReader]:
    """The reader the options name, with a progress bar while it reads (none when ``quiet``)."""
    with reading("reading the logs", quiet=quiet) as progressed:
        yield reader_for(
            settings,
            bootstrap=bootstrap,
            prefix=prefix,
            source=source,
            token=token,
            progressed=progressed,
            slim=slim,
        )


def parse_time(value: str, option: str) -> datetime:
    """An RFC 3339 time (``Z`` or an offset, fractional seconds allowed), in UTC."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as error:
        raise typer.BadParameter(f"not an RFC 3339 time: {value!r}", param_hint=option) from error
    if moment.tzinfo is None:
        raise typer.BadParameter("give a zone: Z or an offset such as +09:00", param_hint=option)
    return moment.astimezone(UTC)


def print_report(report: Report, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    for key, count in report.checked.items():
        typer.echo(f"{key:<28} {count:>10,}")
    for finding in report.findings:
        where = f" at position {finding.position}" if finding.position is not None else ""
        whose = f" ({finding.application_id})" if finding.application_id else ""
        typer.echo(
            f"{finding.kind.upper()}: {finding.service}{where}{whose}: "
            f"expected {finding.expected}, found {finding.found}"
        )
    typer.echo("OK: no finding" if report.ok else f"{len(report.findings)} finding(s)")


@audit.command()
def verify(
    service: ServiceOption = None,
    topic_prefix: PrefixOption = "",
    bootstrap: BootstrapOption = None,
    source: SourceOption = None,
    token: TokenOption = None,
    keys: Annotated[
        list[str] | None,
        typer.Option(
            help="a GET /v1/keys document, its URL or a file (repeat it); default: the "
            "--source's, else INCENTIVES_CHECKPOINT_KEYS, else the development key"
        ),
    ] = None,
    sealing_seconds: Annotated[float, typer.Option(help="the services' sealing interval")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Check every application's chain and every checkpoint (signature, chain, root, size),
    and that every event old enough is sealed. Exit 0: no finding; 1: findings."""
    settings = ServiceSettings()
    services = services_of(service, source)
    key_sources = keys or (
        [f"{source.rstrip('/')}/v1/keys"] if source else list(settings.checkpoint_keys)
    )
    public = public_keys(key_sources, settings)
    total = Report()
    with log_reader(
        settings,
        bootstrap=bootstrap,
        prefix=topic_prefix,
        source=source,
        token=token,
        quiet=as_json,
        slim=True,
    ) as reader:
        for name in services:
            report = verify_service(
                reader,
                name,
                public,
                now=datetime.now(UTC),
                sealing_interval=timedelta(seconds=sealing_seconds),
            )
            for kind, count in report.checked.items():
                total.checked[f"{name}.{kind}"] = count
            total.findings += report.findings
    print_report(total, as_json)
    sys.exit(0 if total.ok else 1)


__all__ = [
    "LogReader",
    "ServiceLog",
    "audit",
    "auditor_token",
    "log_reader",
    "parse_time",
    "print_report",
    "read_whole_topic",
    "reader_for",
    "reading",
    "services_of",
    "verify_service",
]
