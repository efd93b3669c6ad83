"""The auditor's ``verify`` over a long log, beside a bare consume of the same messages.

A voucher-shaped log of ``BENCH_AUDIT_EVENTS`` events (1,000,000 by default; ten per
application, hash-chained) and a signed checkpoint every 1,000 events are produced to
fresh topics of the embedded broker. Reference: a bare aiokafka consumer reads every
message of the events topic and validates each with pydantic (``Envelope``). Measured:
what ``incentives audit verify`` does for one service (read the events and checkpoints
topics, check every chain, every signature, every root, every seal). Both in events per
second, in the same run; target: the audit at 0.5 of the reference or better.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.common import line
from bench.relay import broker_for_bench
from shared.audit_cli import LogReader, verify_service
from shared.checkpoints import ZERO_HASH, SigningKey, checkpoint_hash, signed_bytes
from shared.contracts import Actor, Envelope, NewEvent, Role
from shared.contracts.envelope import format_timestamp
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash
from shared.topics import TopicSpec, ensure_topics

EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))
PER_APPLICATION = 10
SEAL_EVERY = 1000
PAYLOAD = {
    "programme_id": "cluster-startup-support-2026",
    "requested_amount": 15_000_000,
    "purpose": "patent filing for a cell-culture purification process",
    "service_category": "intellectual_property",
}
ACTOR = Actor(sub="officer-kim", role=Role.OFFICER)


async def produce_log(bootstrap: str, events: str, checkpoints: str, key: SigningKey) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    tree = MerkleTree()
    chains: dict[str, str] = {}
    previous = ZERO_HASH
    start = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        pending = []
        applications = EVENTS // PER_APPLICATION
        for round_ in range(PER_APPLICATION):
            for n in range(applications):
                position = round_ * applications + n + 1
                aggregate = f"app_{n:032x}"
                link = Envelope.seal(
                    aggregate_id=aggregate,
                    aggregate_seq=round_ + 1,
                    event=NewEvent(type="voucher.application.noted", payload=PAYLOAD),
                    occurred_at=start + timedelta(milliseconds=position),
                    actor=ACTOR,
                    firm_id="123-45-67890",
                    correlation_id="bench",
                    causation_id=None,
                    prev_hash=chains.get(aggregate, ZERO_HASH),
                )
                chains[aggregate] = link.hash
                value = json.dumps(link.to_json_dict(), separators=(",", ":")).encode()
                pending.append(
                    await producer.send(
                        events,
                        value,
                        key=aggregate.encode(),
                        headers=[("position", str(position).encode())],
                    )
                )
                tree.append(leaf_hash(leaf_bytes(position, link.hash)))
                if position % SEAL_EVERY == 0:
                    body = {
                        "service": "voucher",
                        "tree_size": tree.size,
                        "last_position": position,
                        "root_hash": tree.root().hex(),
                        "previous_checkpoint_hash": previous,
                        "sealed_at": format_timestamp(start + timedelta(milliseconds=position)),
                        "key_id": key.key_id,
                    }
                    body["signature"] = base64.b64encode(key.sign(signed_bytes(body))).decode()
                    previous = checkpoint_hash(body)
                    pending.append(
                        await producer.send(checkpoints, json.dumps(body).encode(), key=b"voucher")
                    )
                if len(pending) >= 5000:
                    for future in pending:
                        await future
                    pending.clear()
        for future in pending:
            await future
    finally:
        await producer.stop()


async def bare_consume(bootstrap: str, topic: str) -> float:
    """Every message of ``topic`` read and validated as an envelope; events per second."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 << 20
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        read = 0
        started = time.perf_counter()
        while read < EVENTS:
            for batch in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in batch:
                    Envelope.model_validate_json(record.value)
                read += len(batch)
        return read / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def audit_verify(bootstrap: str, prefix: str, key: SigningKey) -> tuple[float, int]:
    """What ``incentives audit verify --service voucher`` does; events per second, findings."""
    started = time.perf_counter()
    report = verify_service(
        LogReader(bootstrap=bootstrap, prefix=prefix, slim=True),
        "voucher",
        {key.key_id: key.public_key},
        now=datetime(2026, 11, 2, tzinfo=UTC),
        sealing_interval=timedelta(days=365),
    )
    elapsed = time.perf_counter() - started
    return report.checked["events"] / elapsed, len(report.findings)


async def run() -> dict[str, float]:
    async with broker_for_bench() as bootstrap:
        prefix = f"bench-audit-{uuid.uuid4().hex[:8]}."
        events, sealed = prefix + "voucher.events", prefix + "voucher.checkpoints"
        await ensure_topics(bootstrap, [TopicSpec(events, 8), TopicSpec(sealed, 1)])
        key = SigningKey.from_seed(b"b" * 32, datetime(2026, 1, 1, tzinfo=UTC))
        print(f"audit verify over {EVENTS:,} events ({EVENTS // SEAL_EVERY:,} checkpoints)")
        started = time.perf_counter()
        await produce_log(bootstrap, events, sealed, key)
        line("log produced", f"{time.perf_counter() - started:.1f} s")
        reference = await bare_consume(bootstrap, events)
        line("bare aiokafka consume + pydantic", f"{reference:,.0f} ev/s")
        # the audit reads with its own (blocking) loop, as the command does
        rate, findings = await asyncio.to_thread(audit_verify, bootstrap, prefix, key)
        line("incentives audit verify", f"{rate:,.0f} ev/s", f"{findings} finding(s)")
        ratio = rate / reference
        line(
            "audit / reference",
            f"{ratio:.2f}",
            "target >= 0.5: " + ("met" if ratio >= 0.5 else "NOT met"),
        )
        return {"reference": reference, "audit": rate, "ratio": ratio, "findings": findings}
