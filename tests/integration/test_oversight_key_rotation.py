"""A programme service rotates its checkpoint key: oversight reads the keys again when a
checkpoint names one it does not know, so the first checkpoints under the new key verify
instead of standing as forgeries; a made-up key id still does not verify."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oversight.adapters.checkpoints import CheckpointWatch
from services.oversight.adapters.tables import checkpoints, received
from shared.checkpoints import ZERO_HASH, SigningKey, signed_bytes
from shared.clock import FixedClock
from shared.contracts.merkle import leaf_bytes, leaf_hash
from shared.eventstore import create_engine
from tests.schema import migrated

NOW = datetime(2027, 1, 2, 3, 0, tzinfo=UTC)
OLD = SigningKey.from_seed(b"o" * 32, datetime(2026, 1, 1, tzinfo=UTC), "voucher-2026")
NEW = SigningKey.from_seed(b"n" * 32, datetime(2027, 1, 1, tzinfo=UTC), "voucher-2027")
EVENT_HASH = "ab" * 32
RECEIVED = {
    "service": "voucher",
    "position": 1,
    "event_id": "e-1",
    "aggregate_id": "app-1",
    "aggregate_seq": 1,
    "type": "voucher.application.submitted",
    "occurred_at": NOW,
    "hash": EVENT_HASH,
    "envelope": "{}",
}


def checkpoint(key: SigningKey, key_id: str | None = None) -> bytes:
    """The checkpoint of a one-event log, signed with ``key`` (naming ``key_id``)."""
    document = {
        "service": "voucher",
        "tree_size": 1,
        "last_position": 1,
        "root_hash": leaf_hash(leaf_bytes(1, EVENT_HASH)).hex(),
        "previous_checkpoint_hash": ZERO_HASH,
        "sealed_at": "2027-01-02T03:00:00Z",
        "key_id": key_id or key.key_id,
        "signature": "",
    }
    document["signature"] = base64.b64encode(key.sign(signed_bytes(document))).decode()
    return json.dumps(document).encode()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Oversight's database, holding the one event the checkpoints seal."""
    engine = create_engine(database_url)
    await migrated(engine, "oversight")
    async with engine.begin() as connection:
        await connection.execute(sa.insert(received).values(**RECEIVED))
    yield engine
    await engine.dispose()


async def standing(engine: AsyncEngine) -> tuple[bool | None, str | None]:
    """``(verified, finding)`` of the one checkpoint received."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(sa.select(checkpoints.c.verified, checkpoints.c.finding))
        ).one()
    return row.verified, row.finding


async def verdict(
    engine: AsyncEngine, value: bytes, refresh: Mapping[str, bytes] | None
) -> tuple[tuple[bool | None, str | None], int]:
    """What oversight, knowing only the old key, makes of ``value``: ``(verified,
    finding)``, and how often it read the keys again (``refresh``: what it would find)."""
    calls = 0

    def read_keys() -> Mapping[str, bytes]:
        nonlocal calls
        calls += 1
        assert refresh is not None
        return refresh

    watch = CheckpointWatch(
        engine,
        {OLD.key_id: OLD.public_key},
        FixedClock(NOW),
        refresh_keys=read_keys if refresh is not None else None,
    )
    assert await watch.record([("voucher", value)]) == 1
    await watch.check_pending()
    await watch.check_pending()  # a second round reads nothing again within the interval
    return await standing(engine), calls


async def test_a_checkpoint_under_a_rotated_key_verifies_once_the_keys_are_read_again(
    engine: AsyncEngine,
) -> None:
    both = {OLD.key_id: OLD.public_key, NEW.key_id: NEW.public_key}
    assert await verdict(engine, checkpoint(NEW), both) == ((True, None), 1)


async def test_without_reading_the_keys_again_it_would_stand_as_unsigned(
    engine: AsyncEngine,
) -> None:
    (verified, finding), _ = await verdict(engine, checkpoint(NEW), None)
    assert verified is False and "bad_signature" in str(finding)


async def test_a_made_up_key_id_is_still_unsigned_and_costs_one_read(engine: AsyncEngine) -> None:
    both = {OLD.key_id: OLD.public_key, NEW.key_id: NEW.public_key}
    forged = checkpoint(SigningKey.from_seed(b"f" * 32, NOW, "voucher-2099"))
    (verified, finding), calls = await verdict(engine, forged, both)
    assert verified is False and "not signed by key 'voucher-2099'" in str(finding)
    assert calls == 1


async def test_a_known_key_reads_nothing_again(engine: AsyncEngine) -> None:
    both = {OLD.key_id: OLD.public_key, NEW.key_id: NEW.public_key}
    assert await verdict(engine, checkpoint(OLD), both) == ((True, None), 0)


async def test_keys_that_cannot_be_read_yet_leave_the_checkpoint_waiting_not_unsigned(
    engine: AsyncEngine,
) -> None:
    """Oversight started before the services served their keys (a first deployment): the
    checkpoint waits, saying why, and verifies once the keys can be read."""
    answers: list[Exception | Mapping[str, bytes]] = [
        ConnectionError("voucher is not up"),
        {OLD.key_id: OLD.public_key},
    ]

    def read_keys() -> Mapping[str, bytes]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch = CheckpointWatch(
        engine, {}, FixedClock(NOW), refresh_keys=read_keys, keys_unreadable="not up yet"
    )
    watch.KEYS_REFRESH_SECONDS = 0
    await watch.record([("voucher", checkpoint(OLD))])
    await watch.check_pending()
    verified, finding = await standing(engine)
    assert verified is None and "voucher is not up" in str(finding)
    await watch.check_pending()
    assert await standing(engine) == (True, None) and answers == []
