"""Signed checkpoints: a service's whole log sealed, now and then, under an Ed25519 signature.

The per-application hash chain shows an application's events were not changed,
reordered or removed from its middle; it cannot show that its last event, or a whole
application, is missing. A checkpoint closes that: it seals every event of the service
up to a committed position as the root of an RFC 6962 Merkle tree, and names the
checkpoint before it. Anyone holding the public key can check it, rebuild the tree from
the events (``GET /v1/events``, or the topic's ``position`` headers), and ask for
inclusion and consistency proofs (RFC 9162 §2.1.3, §2.1.4).

The encodings are fixed (and published in the README):

- leaf ``i`` (from 0) is the ``i``-th event in position order; its bytes are the event's
  ``position`` as 8-byte big-endian unsigned followed by the 32 raw bytes of its ``hash``;
- a checkpoint is ``{"service", "tree_size", "last_position", "root_hash",
  "previous_checkpoint_hash", "sealed_at", "key_id", "signature"}``; the signed bytes are
  the RFC 8785 JCS of the object without ``signature``, its hash the SHA-256 of those
  bytes, the signature standard base64 of Ed25519 over them; the first checkpoint's
  ``previous_checkpoint_hash`` is 64 zeros.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.contracts import canonical_json
from shared.contracts.envelope import format_timestamp
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash
from shared.eventstore import EventStore, events
from shared.eventstore.schema import UTCDateTime

if TYPE_CHECKING:
    from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

ZERO_HASH = "0" * 64
"""The ``previous_checkpoint_hash`` of a service's first checkpoint."""

metadata = sa.MetaData()
checkpoints = sa.Table(
    "checkpoints",
    metadata,
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("root_hash", sa.String(64), nullable=False),
    sa.Column("previous_checkpoint_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("checkpoint_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("sealed_at", UTCDateTime, nullable=False),
    sa.Column("key_id", sa.String(100), nullable=False),
    sa.Column("signature", sa.String(100), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, server_default=sa.false()),
)
"""One row per checkpoint; each names the one before, so two sealers cannot fork the
chain (the second's ``previous_checkpoint_hash`` is taken)."""


# --- the signing key -------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    """The service's checkpoint-signing key (Ed25519) and how it is published."""

    key_id: str
    private: Ed25519PrivateKey
    valid_from: datetime

    @classmethod
    def from_seed(cls, seed: bytes, valid_from: datetime, key_id: str | None = None) -> SigningKey:
        """A key from its 32-byte seed; ``key_id`` defaults to a digest of the public key."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 private key is a 32-byte seed")
        private = Ed25519PrivateKey.from_private_bytes(seed)
        public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(
            key_id or "ed25519-" + hashlib.sha256(public).hexdigest()[:16], private, valid_from
        )

    @property
    def public_key(self) -> bytes:
        """The 32 raw bytes of the public key."""
        return self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    def published(self) -> dict[str, str]:
        """The key as ``GET /v1/keys`` lists it."""
        return {
            "key_id": self.key_id,
            "algorithm": "Ed25519",
            "public_key": base64.b64encode(self.public_key).decode(),
            "valid_from": format_timestamp(self.valid_from),
        }


def public_keys(sources: Sequence[str], settings: ServiceSettings) -> dict[str, bytes]:
    """Public checkpoint keys by id, from ``GET /v1/keys`` documents (each a URL or a file);
    with none given, the development key ``make run`` created in the state directory."""
    if not sources:
        key = SigningKey.from_seed(
            settings.signing_seed(), settings.checkpoint_key_valid_from, settings.checkpoint_key_id
        )
        return {key.key_id: key.public_key}
    found: dict[str, bytes] = {}
    for source in sources:
        if source.startswith(("http://", "https://")):
            document = httpx.get(source, timeout=10).raise_for_status().json()
        else:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        for key in document["keys"]:
            found[key["key_id"]] = base64.b64decode(key["public_key"])
    return found


# --- the checkpoint object -----------------------------------------------------------------


CHECKPOINT_MEMBERS = frozenset(
    {
        "service",
        "tree_size",
        "last_position",
        "root_hash",
        "previous_checkpoint_hash",
        "sealed_at",
        "key_id",
        "signature",
    }
)
"""The members of a checkpoint object, all of them and no other (the published encoding)."""


def signed_bytes(checkpoint: dict[str, Any]) -> bytes:
    """What the signature covers: RFC 8785 JCS of the checkpoint without ``signature``."""
    return canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})


def checkpoint_hash(checkpoint: dict[str, Any]) -> str:
    """The checkpoint's hash, which the next one names: SHA-256 of its signed bytes."""
    return hashlib.sha256(signed_bytes(checkpoint)).hexdigest()


def document_of(row: Any, service: str) -> dict[str, Any]:
    """A checkpoint row as the object the API and the topic carry."""
    return {
        "service": service,
        "tree_size": int(row.tree_size),
        "last_position": int(row.last_position),
        "root_hash": row.root_hash,
        "previous_checkpoint_hash": row.previous_checkpoint_hash,
        "sealed_at": format_timestamp(row.sealed_at),
        "key_id": row.key_id,
        "signature": row.signature,
    }


# --- the tree of the log -------------------------------------------------------------------


class LogTree:
    """The Merkle tree of the store's events in position order, kept in memory and read
    forward on demand: only ever up to a sealed (or sealable) position, below which no
    event can still commit."""

    PAGE = 10_000

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.tree = MerkleTree()
        self.last_position = 0
        self._lock = asyncio.Lock()

    async def catch_up(self, upto: int) -> int:
        """Append the leaves of every event after the last one read, up to position ``upto``;
        returns the tree's size."""
        async with self._lock:
            while self.last_position < upto:
                async with self.store.engine.connect() as connection:
                    rows = (
                        await connection.execute(
                            sa.select(events.c.position, events.c.hash)
                            .where(events.c.position > self.last_position)
                            .where(events.c.position <= upto)
                            .order_by(events.c.position)
                            .limit(self.PAGE)
                        )
                    ).all()
                if not rows:
                    self.last_position = upto
                    break
                for position, event_hash in rows:
                    self.tree.append(leaf_hash(leaf_bytes(int(position), event_hash)))
                self.last_position = int(rows[-1][0])
            return self.tree.size


class Checkpointer:
    """Seals the service's log into signed checkpoints and publishes them on its topic."""

    def __init__(
        self,
        store: EventStore,
        service: str,
        key: SigningKey,
        *,
        every_events: int = 1000,
        every_seconds: float = 5.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.service = service
        self.key = key
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.poll_interval = poll_interval
        self.log = LogTree(store)
        self.sealed_total = 0

    async def latest(self, connection: AsyncConnection) -> Any:
        return (
            await connection.execute(
                sa.select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)
            )
        ).first()

    async def seal(self) -> dict[str, Any] | None:
        """Seal every event up to the position below which nothing can still commit, if any
        is new since the last checkpoint; returns the checkpoint (None: nothing new)."""
        safe = await self.store.sealable_position()
        if safe is None:
            return None  # a long transaction may still commit below: next time
        size = await self.log.catch_up(safe)
        try:
            return await self._seal(size)
        except sa.exc.IntegrityError:
            # another replica sealed this size, or after the same checkpoint, first: the
            # keys (tree size; one successor per checkpoint) keep the chain one line
            log.debug("checkpoints of %s: a replica sealed first", self.service)
            return None

    async def _seal(self, size: int) -> dict[str, Any] | None:
        async with self.store.transaction() as uow:
            previous = await self.latest(uow.connection)
            if previous is not None and int(previous.tree_size) >= size:
                return None
            sealed_at = uow.now  # once: the row must say what was signed
            body: dict[str, Any] = {
                "service": self.service,
                "tree_size": size,
                "last_position": self.log.last_position,
                "root_hash": self.log.tree.root(size).hex(),
                "previous_checkpoint_hash": (
                    previous.checkpoint_hash if previous is not None else ZERO_HASH
                ),
                "sealed_at": format_timestamp(sealed_at),
                "key_id": self.key.key_id,
            }
            signed = signed_bytes(body)
            body["signature"] = base64.b64encode(self.key.sign(signed)).decode()
            await uow.connection.execute(
                checkpoints.insert().values(
                    tree_size=size,
                    last_position=body["last_position"],
                    root_hash=body["root_hash"],
                    previous_checkpoint_hash=body["previous_checkpoint_hash"],
                    checkpoint_hash=hashlib.sha256(signed).hexdigest(),
                    sealed_at=sealed_at,
                    key_id=self.key.key_id,
                    signature=body["signature"],
                    published=False,
                )
            )
        self.sealed_total += 1
        return body

    async def due(self) -> bool:
        """Whether there are ``every_events`` new events, or any once ``every_seconds`` passed."""
        async with self.store.engine.connect() as connection:
            latest = await self.latest(connection)
            after = int(latest.last_position) if latest is not None else 0
            waiting = (
                await connection.execute(
                    sa.select(sa.func.count()).select_from(events).where(events.c.position > after)
                )
            ).scalar_one()
        if not waiting:
            return False
        if waiting >= self.every_events or latest is None:
            return True
        return bool(time.time() - latest.sealed_at.timestamp() >= self.every_seconds)

    async def run(self, publish: Any, stop: asyncio.Event | None = None) -> None:
        """Seal when due and publish what is unpublished, until cancelled; never dies of a
        lost database or broker (it tries again)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                if await self.due():
                    await self.seal()
                await self.publish_pending(publish)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the database or the broker is away
                log.warning("checkpoints of %s: %r", self.service, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)

    async def publish_pending(self, publish: Any) -> int:
        """Send the checkpoints not yet on the topic, oldest first (``publish(document)``)."""
        async with self.store.engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(checkpoints)
                    .where(checkpoints.c.published.is_(False))
                    .order_by(checkpoints.c.tree_size)
                )
            ).all()
        for row in rows:
            await publish(document_of(row, self.service))
            async with self.store.transaction() as uow:
                await uow.connection.execute(
                    checkpoints.update()
                    .where(checkpoints.c.tree_size == row.tree_size)
                    .values(published=True)
                )
        return len(rows)


__all__ = [
    "ZERO_HASH",
    "Checkpointer",
    "LogTree",
    "SigningKey",
    "checkpoint_hash",
    "checkpoints",
    "document_of",
    "metadata",
    "signed_bytes",
]
