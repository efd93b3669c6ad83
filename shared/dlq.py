"""The dead-letter topic, for operators: list what the consumers gave up on, and re-drive it.

A dead letter carries the message as it arrived (key, value, its headers under
``source:``) and why it was given up (``reason``, ``error_kind``, ``consumer``, the source
topic, partition and offset). Re-driving sends it again to its source topic: the consumer
that gave up on it applies it (it is not in its inbox), every other consumer of the topic
passes over it (it is). A re-drive reads the dead-letter topic in a consumer group of its
own and commits after each batch is sent, so a letter is re-driven once however often the
command runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.consumer import SOURCE_HEADER
from shared.relay import key_partitioner

REDRIVE_GROUP = "incentives-dlq-redrive"


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter."""

    offset: int
    consumer: str
    kind: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None
    key: bytes | None
    value: bytes
    source_headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: object) -> Letter:
        headers = {k: v.decode("utf-8", "replace") for k, v in record.headers or ()}  # type: ignore[attr-defined]
        return cls(
            offset=record.offset,  # type: ignore[attr-defined]
            consumer=headers.get("consumer", ""),
            kind=headers.get("error_kind", ""),
            reason=headers.get("reason", ""),
            source_topic=headers.get("source_topic", ""),
            source_partition=int(headers.get("source_partition", "-1") or -1),
            source_offset=int(headers.get("source_offset", "-1") or -1),
            event_id=headers.get("event_id"),
            key=record.key,  # type: ignore[attr-defined]
            value=record.value or b"",  # type: ignore[attr-defined]
            source_headers=tuple(
                (name[len(SOURCE_HEADER) :], value.encode())
                for name, value in headers.items()
                if name.startswith(SOURCE_HEADER)
            ),
        )


async def list_letters(
    bootstrap_servers: str, topic: str, client_options: Mapping[str, Any] | None = None
) -> list[Letter]:
    """Every dead letter on ``topic``, oldest first (``client_options``: the connection's
    security, see ``shared.security``)."""
    consumer = AIOKafkaConsumer(
        **(client_options or {}),
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        letters: list[Letter] = []
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            batch = await consumer.getmany(*partitions, timeout_ms=500)
            for records in batch.values():
                letters.extend(Letter.of(record) for record in records)
        return sorted(letters, key=lambda letter: letter.offset)
    finally:
        await consumer.stop()


async def redrive(
    bootstrap_servers: str,
    topic: str,
    *,
    consumer: str | None = None,
    group: str = REDRIVE_GROUP,
    within: float = 60.0,
    client_options: Mapping[str, Any] | None = None,
) -> list[Letter]:
    """Send the dead letters not re-driven before back to their source topics (only those
    of ``consumer``, if given: a re-drive for one consumer keeps a cursor of its own).
    Returns the letters sent."""
    reader = AIOKafkaConsumer(
        topic,
        **(client_options or {}),
        bootstrap_servers=bootstrap_servers,
        group_id=group if consumer is None else f"{group}-{consumer}",
        client_id=f"dlq-redrive-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        session_timeout_ms=6000,
    )
    producer = AIOKafkaProducer(  # an application's events keep their partition
        **(client_options or {}),
        bootstrap_servers=bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        partitioner=key_partitioner,
    )
    await reader.start()
    await producer.start()
    sent: list[Letter] = []
    deadline = asyncio.get_running_loop().time() + within
    try:
        while True:
            batch = await reader.getmany(timeout_ms=500)
            if not batch and await _at_end(reader):
                return sent
            if not batch and asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the dead-letter topic {topic} was not read to its end")
            for records in batch.values():
                chosen = [Letter.of(r) for r in records]
                chosen = [x for x in chosen if consumer is None or x.consumer == consumer]
                await _send_all(producer, chosen)
                sent.extend(chosen)
            await reader.commit()  # after the broker acknowledged them: each goes once
    finally:
        await producer.stop()
        await reader.stop()


async def _send_all(producer: AIOKafkaProducer, letters: Sequence[Letter]) -> None:
    for letter in letters:
        if not letter.source_topic:
            continue  # not a letter of ours: nowhere to send it
        await producer.send_and_wait(
            letter.source_topic,
            letter.value,
            key=letter.key,
            headers=list(letter.source_headers),
        )


async def _at_end(reader: AIOKafkaConsumer) -> bool:
    assigned = list(reader.assignment())
    if not assigned:
        return False
    ends = await reader.end_offsets(assigned)
    behind = [p for p in assigned if await reader.position(p) < ends[p]]
    return not behind


__all__ = ["REDRIVE_GROUP", "Letter", "list_letters", "redrive"]
