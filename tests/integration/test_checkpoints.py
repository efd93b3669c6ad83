"""Signed checkpoints, checked as an outsider would: with the public key, the published rules
and a verifier written from the RFC text (tests.unit.test_merkle), never the service's code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr
from typer.testing import CliRunner

from services.voucher.main import create_app
from shared.audit_cli import read_whole_topic
from shared.checkpoints import Checkpointer, SigningKey, checkpoints, document_of
from shared.cli import app
from shared.clock import SystemClock
from shared.contracts import Actor, NewEvent, Role
from shared.eventstore import NEW_STREAM, EventContext, EventStore, create_engine
from shared.settings import RetiredKey
from shared.topics import TopicSpec, ensure_topics
from tests.integration.harness import ServiceHarness, running, service_settings
from tests.integration.voucher.conftest import application_body
from tests.schema import migrated
from tests.unit.test_merkle import mth, ref_leaf, ref_verify_consistency, ref_verify_inclusion

APPLICATIONS = 6


@pytest.fixture
async def voucher(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    ).model_copy(update={"checkpoint_every_events": 4, "checkpoint_every_seconds": 0.2})
    async with running(create_app, settings) as harness:
        yield harness


def application(n: int) -> dict[str, Any]:
    return application_body(requested_amount=1_000_000 + n)


def leaf(position: int, event_hash: str) -> bytes:
    """The published leaf bytes: position (8 bytes, big endian) ‖ the event hash's raw bytes."""
    return position.to_bytes(8, "big") + bytes.fromhex(event_hash)


def signed_bytes(checkpoint: dict[str, Any]) -> bytes:
    return rfc8785.dumps({k: v for k, v in checkpoint.items() if k != "signature"})


async def sealed(harness: ServiceHarness, events: int, within: float = 20) -> dict[str, Any]:
    """The latest checkpoint once it seals at least ``events`` events."""
    deadline = asyncio.get_running_loop().time() + within
    latest: dict[str, Any] = {}
    while asyncio.get_running_loop().time() < deadline:
        response = await harness.client.get("/v1/checkpoints/latest")
        if response.status_code == 200:
            latest = response.json()
            if latest["tree_size"] >= events:
                return latest
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing sealed {events} events in time: {latest}")


async def all_events(harness: ServiceHarness) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await harness.client.get(
            "/v1/events",
            params={"after": after, "limit": 3},
            headers=harness.auth_auditor(),
        )
        assert page.status_code == 200, page.text
        found = page.json()["items"]
        if not found:
            return items
        items.extend(found)
        after = found[-1]["position"]


async def settled_log_size(harness: ServiceHarness, applications_events: int) -> int:
    """The size of the service's log once each application has its second event (verified or
    rejected by the stage): nothing more is appended after that in these tests."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        events = await all_events(harness)
        applications = [e for e in events if e["envelope"]["aggregate_id"].startswith("app_")]
        if len(applications) >= applications_events:
            return len(events)
        assert asyncio.get_running_loop().time() < deadline, f"the log stopped at {len(events)}"
        await asyncio.sleep(0.05)


async def test_checkpoints_verify_with_the_public_key_and_the_rfc_alone(
    voucher: ServiceHarness,
) -> None:
    for n in range(APPLICATIONS):
        response = await voucher.client.post(
            "/v1/applications",
            json=application(n),
            headers={**voucher.firm(), "Idempotency-Key": f"k-{n}"},
        )
        assert response.status_code == 201, response.text
    latest = await sealed(voucher, APPLICATIONS * 2)  # submitted and verified (or rejected)

    keys = (await voucher.client.get("/v1/keys")).json()["keys"]
    [key] = keys
    assert key["algorithm"] == "Ed25519"
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    history = (await voucher.client.get("/v1/checkpoints", params={"after": 0})).json()["items"]
    assert history[-1]["tree_size"] >= latest["tree_size"]
    events = await all_events(voucher)
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and positions[0] >= 1
    leaves = [leaf(e["position"], e["envelope"]["hash"]) for e in events]

    previous = "0" * 64
    for checkpoint in history:
        assert set(checkpoint) == {
            "service",
            "tree_size",
            "last_position",
            "root_hash",
            "previous_checkpoint_hash",
            "sealed_at",
            "key_id",
            "signature",
        }
        assert checkpoint["service"] == "voucher" and checkpoint["key_id"] == key["key_id"]
        assert checkpoint["sealed_at"].endswith("Z")
        public.verify(base64.b64decode(checkpoint["signature"]), signed_bytes(checkpoint))
        assert checkpoint["previous_checkpoint_hash"] == previous
        previous = hashlib.sha256(signed_bytes(checkpoint)).hexdigest()
        size = checkpoint["tree_size"]
        assert positions[size - 1] == checkpoint["last_position"]
        assert mth(leaves[:size]).hex() == checkpoint["root_hash"]
        one = await voucher.client.get(f"/v1/checkpoints/{size}")
        assert one.json() == checkpoint

    size = latest["tree_size"]
    root = bytes.fromhex(latest["root_hash"])
    for index in {0, size // 2, size - 1}:
        proof = (
            await voucher.client.get(
                "/v1/proofs/inclusion", params={"index": index, "tree_size": size}
            )
        ).json()
        assert proof["leaf_hash"] == ref_leaf(leaves[index]).hex()
        nodes = [bytes.fromhex(h) for h in proof["proof"]]
        assert ref_verify_inclusion(ref_leaf(leaves[index]), index, size, nodes, root)
    for older in history[:-1]:
        answer = (
            await voucher.client.get(
                "/v1/proofs/consistency",
                params={"first": older["tree_size"], "second": size},
            )
        ).json()
        nodes = [bytes.fromhex(h) for h in answer["proof"]]
        assert ref_verify_consistency(
            older["tree_size"], size, bytes.fromhex(older["root_hash"]), root, nodes
        )


async def test_a_forged_checkpoint_fails_the_signature(voucher: ServiceHarness) -> None:
    await voucher.client.post(
        "/v1/applications",
        json=application(1),
        headers={**voucher.firm(), "Idempotency-Key": "k"},
    )
    latest = await sealed(voucher, 1)
    [key] = (await voucher.client.get("/v1/keys")).json()["keys"]
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key["public_key"]))
    forged = {**latest, "tree_size": latest["tree_size"] - 1}

    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(forged["signature"]), signed_bytes(forged))


async def test_who_may_read_what_and_sizes_out_of_range(voucher: ServiceHarness) -> None:
    await voucher.client.post(
        "/v1/applications",
        json=application(1),
        headers={**voucher.firm(), "Idempotency-Key": "k"},
    )
    latest = await sealed(voucher, 1)
    size = latest["tree_size"]

    assert (await voucher.client.get("/v1/events")).status_code == 401
    assert (await voucher.client.get("/v1/events", headers=voucher.firm())).status_code == 403
    ministry = voucher.auth(Role.MINISTRY, "mois-analyst")
    assert (await voucher.client.get("/v1/events", headers=ministry)).status_code == 200
    too_many = await voucher.client.get("/v1/events", params={"limit": 10_001}, headers=ministry)
    assert too_many.status_code == 422
    for path, params, field in [
        ("/v1/proofs/inclusion", {"index": 0, "tree_size": size + 1_000}, "tree_size"),
        ("/v1/proofs/inclusion", {"index": size, "tree_size": size}, "index"),
        ("/v1/proofs/consistency", {"first": size, "second": size + 1_000}, "second"),
        ("/v1/proofs/consistency", {"first": size, "second": 1}, "first"),
    ]:
        if field == "first" and size == 1:
            continue
        response = await voucher.client.get(path, params=params)
        assert response.status_code == 422, (path, params, response.text)
        assert field in response.text
    assert (await voucher.client.get(f"/v1/checkpoints/{size + 1_000}")).status_code == 404


async def test_the_topics_carry_positions_and_checkpoints(
    voucher: ServiceHarness, kafka_bootstrap: str
) -> None:
    await voucher.client.post(
        "/v1/applications",
        json=application(1),
        headers={**voucher.firm(), "Idempotency-Key": "k"},
    )
    latest = await sealed(voucher, 2)
    runtime = voucher.app.state.runtime
    events = await read(kafka_bootstrap, runtime.events_topic, 2)
    positions = sorted(int(dict(r.headers)["position"].decode()) for r in events)
    assert positions[:2] == [1, 2]
    checkpoints = await read(kafka_bootstrap, runtime.topic("voucher.checkpoints"), 1)
    published = [json.loads(r.value) for r in checkpoints]
    assert all(r.key == b"voucher" for r in checkpoints)
    assert published[0]["tree_size"] <= latest["tree_size"]
    assert published[0]["previous_checkpoint_hash"] == "0" * 64


async def read(bootstrap: str, topic: str, count: int, within: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while len(records) < count and asyncio.get_running_loop().time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


CONTEXT = EventContext(actor=Actor(sub="s", role=Role.SYSTEM), correlation_id="c")
NOTED = NewEvent(type="voucher.application.noted", payload={"n": 1})


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[EventStore]:
    engine = create_engine(postgres_url)
    store = EventStore(engine, SystemClock())
    await migrated(store.engine)
    try:
        yield store
    finally:
        await engine.dispose()


async def test_a_checkpoint_never_seals_past_a_position_that_may_still_commit(
    pg_store: EventStore,
) -> None:
    """On PostgreSQL a transaction may take position 1 and commit after position 2 is
    visible: the sealable position waits for it rather than sealing 2 without 1, and
    holds up no writer meanwhile."""
    store, context, event = pg_store, CONTEXT, NOTED
    async with store.transaction() as slow:
        await slow.append("app-slow", NEW_STREAM, [event], context)  # position 1, open
        await store.append("app-fast", NEW_STREAM, [event], context)  # 2, committed
        sealing = asyncio.create_task(store.sealable_position())
        await asyncio.sleep(0.5)
        assert not sealing.done()  # waits for the transaction that holds position 1
        # and writers go on meanwhile: a third event commits while the sealer waits
        await asyncio.wait_for(store.append("app-next", NEW_STREAM, [event], context), 5)
        assert not sealing.done()
    assert await sealing == 2  # the highest visible when it looked; 1 has committed since
    positions = [e.position for e in await store.read_all()]
    assert positions == [1, 2, 3]


async def test_a_transaction_that_never_ends_defers_sealing(pg_store: EventStore) -> None:
    async with pg_store.transaction() as slow:
        await slow.append("app-slow", NEW_STREAM, [NOTED], CONTEXT)
        await pg_store.append("app-fast", NEW_STREAM, [NOTED], CONTEXT)
        assert await pg_store.sealable_position(within=0.3) is None


async def test_the_checkpoint_served_is_the_one_signed_on_a_running_clock(
    pg_store: EventStore,
) -> None:
    """The row the API and the topic serve says exactly what was signed, even on a clock
    that moves between two readings (a fixed test clock hid that it once did not)."""
    await pg_store.append("app-1", NEW_STREAM, [NOTED], CONTEXT)
    key = SigningKey.from_seed(b"k" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    sealer = Checkpointer(pg_store, "voucher", key, every_events=1, every_seconds=0)
    signed = await sealer.seal()
    assert signed is not None
    async with pg_store.engine.connect() as connection:
        served = document_of(await sealer.latest(connection), "voucher")
    assert served == signed
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    public.verify(base64.b64decode(served["signature"]), signed_bytes(served))


async def test_two_replicas_sealing_at_once_make_one_chain_and_no_error(
    pg_store: EventStore,
) -> None:
    """Both replicas of a service seal: for each size one checkpoint, one line of
    checkpoints, and the one that lost the race says nothing and seals the next one."""
    key = SigningKey.from_seed(b"k" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    replicas = [
        Checkpointer(pg_store, "voucher", key, every_events=1, every_seconds=0) for _ in range(2)
    ]
    for n in range(5):
        await pg_store.append(f"app-{n}", NEW_STREAM, [NOTED], CONTEXT)
        sealed = await asyncio.gather(*(replica.seal() for replica in replicas))
        assert sum(1 for s in sealed if s is not None) == 1, sealed
    async with pg_store.engine.connect() as connection:
        rows = (
            await connection.execute(
                sa.select(
                    checkpoints.c.tree_size,
                    checkpoints.c.previous_checkpoint_hash,
                    checkpoints.c.checkpoint_hash,
                ).order_by(checkpoints.c.tree_size)
            )
        ).all()
    assert [r.tree_size for r in rows] == [1, 2, 3, 4, 5]
    for before, after in itertools.pairwise(rows):
        assert after.previous_checkpoint_hash == before.checkpoint_hash


async def all_sealed_on_the_topics(bootstrap: str, prefix: str, within: float = 20) -> None:
    """Wait until the checkpoints topic holds one that seals every event on the events topic."""
    deadline = asyncio.get_running_loop().time() + within
    for _ in range(10_000):
        events = await read_whole_topic(bootstrap, prefix + "voucher.events")
        sealed = [
            json.loads(r.value)
            for r in await read_whole_topic(bootstrap, prefix + "voucher.checkpoints")
        ]
        positions = {int(dict(r.headers)["position"]) for r in events}
        if sealed and max(c["tree_size"] for c in sealed) == len(positions):
            return
        assert asyncio.get_running_loop().time() < deadline, "the topics never caught up"
        await asyncio.sleep(0.1)


async def copy_topic(bootstrap: str, source: str, target: str, change: Any) -> None:
    """``source``'s records into a new ``target``, each passed through ``change`` (None drops it)."""
    records = await read_whole_topic(bootstrap, source)
    await ensure_topics(bootstrap, [TopicSpec(target, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for record in records:
            changed = change(record)
            if changed is not None:
                await producer.send_and_wait(
                    target, changed, key=record.key, headers=list(record.headers)
                )
    finally:
        await producer.stop()


def run_audit(*arguments: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["audit", "verify", "--json", *arguments], env=env)
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{") :])


async def test_the_audit_command_finds_nothing_in_the_log_and_what_was_done_to_a_copy(
    voucher: ServiceHarness, kafka_bootstrap: str, tmp_path: Path
) -> None:
    for n in range(APPLICATIONS):
        await voucher.client.post(
            "/v1/applications",
            json=application(n),
            headers={**voucher.firm(), "Idempotency-Key": f"k-{n}"},
        )
    # the test clock stands still, so to the audit every event is long past its sealing time:
    # wait for the whole log (the catalogue's events too, and each application's verification
    # stage), not for a count that an early checkpoint already reaches
    log_size = await settled_log_size(voucher, APPLICATIONS * 2)
    latest = await sealed(voucher, log_size)
    prefix = voucher.app.state.runtime.settings.topic_prefix
    await all_sealed_on_the_topics(kafka_bootstrap, prefix)
    keys = tmp_path / "keys.json"
    keys.write_text((await voucher.client.get("/v1/keys")).text)
    common = ["--service", "voucher", "--bootstrap", kafka_bootstrap, "--keys", str(keys)]

    code, report = await asyncio.to_thread(run_audit, "--topic-prefix", prefix, *common)
    assert code == 0, report
    assert report["ok"] and report["checked"]["voucher.events"] >= latest["tree_size"]

    # where oversight runs in production: no --keys, no signing key of its own; the keys
    # come from INCENTIVES_CHECKPOINT_KEYS, as oversight's own do
    production = {
        "INCENTIVES_ENVIRONMENT": "production",
        "INCENTIVES_CHECKPOINT_KEYS": json.dumps([str(keys)]),
        "INCENTIVES_STATE_DIR": str(tmp_path / "elsewhere"),
    }
    code, report = await asyncio.to_thread(
        run_audit, "--topic-prefix", prefix, *common[:4], env=production
    )
    assert code == 0 and report["ok"], report

    def tamper(record: Any) -> bytes | None:
        position = int(dict(record.headers)["position"])
        if position == 2:
            return None  # removed
        envelope = json.loads(record.value)
        if position == 3:
            envelope["payload"]["requested_amount"] = 999_999_999  # changed
        return json.dumps(envelope).encode()

    copy = prefix + "copy."
    await copy_topic(kafka_bootstrap, prefix + "voucher.events", copy + "voucher.events", tamper)
    await copy_topic(
        kafka_bootstrap,
        prefix + "voucher.checkpoints",
        copy + "voucher.checkpoints",
        lambda record: record.value,
    )
    code, report = await asyncio.to_thread(run_audit, "--topic-prefix", copy, *common)
    assert code == 1
    found = {(f["kind"], f.get("position")) for f in report["findings"]}
    assert ("modified", 3) in found
    assert any(kind == "missing" for kind, _ in found)


async def test_after_a_key_rotation_every_checkpoint_still_verifies(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    """A service restarted with a new key keeps publishing the old one (retired): the
    checkpoints sealed before verify with it, those after with the new one."""
    old = SigningKey.from_seed(b"o" * 32, datetime(2026, 1, 1, tzinfo=UTC), "key-2026-a")
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    ).model_copy(update={"checkpoint_every_events": 2, "checkpoint_every_seconds": 0.2})
    first = settings.model_copy(
        update={
            "checkpoint_signing_key": SecretStr(base64.b64encode(b"o" * 32).decode()),
            "checkpoint_key_id": old.key_id,
        }
    )
    async with running(create_app, first) as voucher:
        await voucher.client.post(
            "/v1/applications",
            json=application(1),
            headers={**voucher.firm(), "Idempotency-Key": "a"},
        )
        before = await sealed(voucher, 2)
    assert before["key_id"] == "key-2026-a"
    second = settings.model_copy(
        update={
            "checkpoint_signing_key": SecretStr(base64.b64encode(b"n" * 32).decode()),
            "checkpoint_key_id": "key-2026-b",
            "checkpoint_retired_keys": [RetiredKey.model_validate(old.published())],
        }
    )
    async with running(create_app, second) as voucher:
        await voucher.client.post(
            "/v1/applications",
            json=application(2),
            headers={**voucher.firm(), "Idempotency-Key": "b"},
        )
        after = await sealed(voucher, before["tree_size"] + 2)
        keys = {k["key_id"]: k for k in (await voucher.client.get("/v1/keys")).json()["keys"]}
        history = (await voucher.client.get("/v1/checkpoints")).json()["items"]
    assert after["key_id"] == "key-2026-b"
    assert list(keys) == ["key-2026-b", "key-2026-a"]  # the current key first
    assert {c["key_id"] for c in history} == {"key-2026-a", "key-2026-b"}
    for checkpoint in history:
        public = base64.b64decode(keys[checkpoint["key_id"]]["public_key"])
        Ed25519PublicKey.from_public_bytes(public).verify(
            base64.b64decode(checkpoint["signature"]), signed_bytes(checkpoint)
        )
