"""``incentives audit``: an auditor's commands, reading the services' topics (see :mod:`shared.audit`)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.audit import Finding, Report, verify_log
from shared.checkpoints import public_keys
from shared.settings import ServiceSettings
from shared.topics import SERVICES, checkpoints_topic, events_topic

audit = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


async def read_whole_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record on ``topic`` now, from the beginning of each partition (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
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


def _events_of(service: str, records: Sequence[Any], report: Report) -> list[tuple[int, Any]]:
    """``(position, envelope)`` of each record; one without a readable position header or
    body cannot be placed in the log: ``inserted``."""
    found = []
    for record in records:
        headers = dict(record.headers or ())
        try:
            position = int(headers["position"].decode())
            envelope = json.loads(record.value)
        except (KeyError, ValueError, UnicodeDecodeError):
            report.findings.append(
                Finding(
                    "inserted",
                    service,
                    expected="a log event with its position header",
                    found=f"offset {record.offset} of partition {record.partition}",
                )
            )
            continue
        found.append((position, envelope))
    return found


def _keys(source: str | None, settings: ServiceSettings) -> dict[str, bytes]:
    """Public keys by id: from a ``GET /v1/keys`` document (URL or file), or in development
    the key ``make run`` created."""
    return public_keys([source] if source else [], settings)


@audit.command()
def verify(
    service: Annotated[
        list[str] | None, typer.Option(help="voucher, taxcredit or fund (default: all three)")
    ] = None,
    topic_prefix: Annotated[
        str, typer.Option(help="read P<service>.events and P<service>.checkpoints")
    ] = "",
    bootstrap: Annotated[str | None, typer.Option(help="the Kafka bootstrap servers")] = None,
    keys: Annotated[
        str | None, typer.Option(help="a GET /v1/keys document: its URL or a file")
    ] = None,
    sealing_seconds: Annotated[float, typer.Option(help="the services' sealing interval")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
) -> None:
    """Check every application's chain and every checkpoint (signature, chain, root, size),
    and that every event old enough is sealed. Exit 0: no finding; 1: findings."""
    settings = ServiceSettings()
    services = service or list(SERVICES)
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise typer.BadParameter(f"no service {', '.join(unknown)}", param_hint="--service")
    public = _keys(keys, settings)
    servers = bootstrap or settings.kafka_bootstrap_servers
    total = Report()
    for name in services:
        typer.echo(f"reading {topic_prefix}{events_topic(name)} ...", err=True)
        report = asyncio.run(_verify_service(name, servers, topic_prefix, public, sealing_seconds))
        for kind, count in report.checked.items():
            total.checked[f"{name}.{kind}"] = count
        total.findings.extend(report.findings)
    if as_json:
        typer.echo(json.dumps(total.to_json(), indent=2))
    else:
        for key, count in total.checked.items():
            typer.echo(f"{key:<28} {count:>10,}")
        for finding in total.findings:
            where = f" at position {finding.position}" if finding.position is not None else ""
            whose = f" ({finding.application_id})" if finding.application_id else ""
            typer.echo(
                f"{finding.kind.upper()}: {finding.service}{where}{whose}: "
                f"expected {finding.expected}, found {finding.found}"
            )
        typer.echo("OK: no finding" if total.ok else f"{len(total.findings)} finding(s)")
    sys.exit(0 if total.ok else 1)


async def _verify_service(
    service: str, bootstrap: str, prefix: str, keys: dict[str, bytes], sealing_seconds: float
) -> Report:
    events = await read_whole_topic(bootstrap, prefix + events_topic(service))
    sealed = await read_whole_topic(bootstrap, prefix + checkpoints_topic(service))
    unplaced = Report()
    placed = _events_of(service, events, unplaced)
    checkpoints = []
    for record in sealed:
        try:
            checkpoints.append(json.loads(record.value))
        except ValueError:
            unplaced.findings.append(
                Finding("bad_signature", service, "a checkpoint", f"offset {record.offset}")
            )
    report = verify_log(
        service,
        placed,
        # a redelivered copy is the same object; a fork (two at one size) stays two
        list({json.dumps(c, sort_keys=True): c for c in checkpoints}.values()),
        keys,
        now=datetime.now(UTC),
        sealing_interval=timedelta(seconds=sealing_seconds),
    )
    report.findings[:0] = unplaced.findings
    return report


__all__ = ["audit", "read_whole_topic"]
