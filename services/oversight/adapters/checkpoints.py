"""Oversight's check of every checkpoint it receives, against the events it received.

A checkpoint of size N sealing up to position P is checked once oversight holds N events
of that service at or below P: the Merkle root of their leaves, the Ed25519 signature,
and the link to the checkpoint before. Until then it waits (the events are on their
way); after ``grace`` it is a finding. The same rules as ``incentives audit verify``,
kept incrementally: the tree of each service's log grows as checkpoints are checked.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oversight.adapters.tables import checkpoints, received
from shared.checkpoints import ZERO_HASH, checkpoint_hash, signed_bytes
from shared.clock import Clock
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash

log = logging.getLogger(__name__)

CHECKPOINT_FIELDS = frozenset(
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


@dataclass
class _Log:
    """One service's log as far as checkpoints have sealed it."""

    tree: MerkleTree = field(default_factory=MerkleTree)
    last_position: int = 0


class CheckpointWatch:
    def __init__(
        self,
        engine: AsyncEngine,
        keys: Mapping[str, bytes],
        clock: Clock,
        grace: timedelta = timedelta(seconds=60),
    ) -> None:
        self.engine = engine
        self.keys = dict(keys)
        self.clock = clock
        self.grace = grace
        self._logs: dict[str, _Log] = {}

    async def record(self, documents: list[Any]) -> int:
        """Keep each checkpoint received (a redelivered one once); returns how many were new.
        One that is not a checkpoint object is kept as a finding of its own service."""
        fresh = 0
        now = self.clock.now()
        async with self.engine.begin() as connection:
            for document in documents:
                row = _row_of(document, now)
                if row is None:
                    log.warning("oversight: not a checkpoint: %.200r", document)
                    continue
                exists = await connection.scalar(
                    sa.select(sa.func.count())
                    .select_from(checkpoints)
                    .where(checkpoints.c.service == row["service"])
                    .where(checkpoints.c.tree_size == row["tree_size"])
                    .where(checkpoints.c.checkpoint_hash == row["checkpoint_hash"])
                )
                if not exists:
                    await connection.execute(sa.insert(checkpoints), row)
                    fresh += 1
        return fresh

    async def check_pending(self) -> int:
        """Check every checkpoint whose events have all arrived, oldest first; returns how
        many were settled."""
        settled = 0
        async with self.engine.begin() as connection:
            services = (
                await connection.scalars(
                    sa.select(checkpoints.c.service)
                    .where(checkpoints.c.verified.is_(None))
                    .distinct()
                )
            ).all()
        for service in services:
            settled += await self._check_service(service)
        return settled

    async def _check_service(self, service: str) -> int:
        settled = 0
        async with self.engine.begin() as connection:
            pending = (
                await connection.execute(
                    sa.select(checkpoints)
                    .where(checkpoints.c.service == service)
                    .where(checkpoints.c.verified.is_(None))
                    .order_by(checkpoints.c.tree_size, checkpoints.c.received_at)
                )
            ).all()
            for row in pending:
                verdict = await self._verdict(connection, service, row)
                if verdict is None:
                    break  # its events are still on their way; so are the later ones'
                verified, finding = verdict
                await connection.execute(
                    sa.update(checkpoints)
                    .where(checkpoints.c.service == service)
                    .where(checkpoints.c.tree_size == row.tree_size)
                    .where(checkpoints.c.checkpoint_hash == row.checkpoint_hash)
                    .values(verified=verified, finding=finding)
                )
                settled += 1
        return settled

    async def _verdict(
        self, connection: Any, service: str, row: Any
    ) -> tuple[bool, str | None] | None:
        document = json.loads(row.document)
        held = int(
            await connection.scalar(
                sa.select(sa.func.count())
                .select_from(received)
                .where(received.c.service == service)
                .where(received.c.position <= row.last_position)
            )
            or 0
        )
        if held < row.tree_size:
            if self.clock.now() - row.received_at < self.grace:
                return None
            return False, (
                f"missing: {row.tree_size - held} of the {row.tree_size} events sealed up to "
                f"position {row.last_position} never arrived"
            )
        if held > row.tree_size:
            return False, (
                f"inserted: {held} events at or below position {row.last_position}, "
                f"the checkpoint seals {row.tree_size}"
            )
        findings = []
        root = await self._root(connection, service, row.last_position, row.tree_size)
        if root is None or root.hex() != document["root_hash"]:
            findings.append(
                f"modified: the events received hash to root {root.hex() if root else '-'}, "
                f"the checkpoint says {document['root_hash']}"
            )
        if not self._signed(document):
            findings.append(f"bad_signature: not signed by key {document['key_id']!r}")
        link = await self._link_finding(connection, service, row, document)
        if link:
            findings.append(link)
        return (not findings, "; ".join(findings) or None)

    async def _root(
        self, connection: Any, service: str, last_position: int, tree_size: int
    ) -> bytes | None:
        known = self._logs.setdefault(service, _Log())
        if known.last_position > last_position:  # an older checkpoint after a newer one
            return known.tree.root(tree_size) if tree_size <= known.tree.size else None
        rows = await connection.execute(
            sa.select(received.c.position, received.c.hash)
            .where(received.c.service == service)
            .where(received.c.position > known.last_position)
            .where(received.c.position <= last_position)
            .order_by(received.c.position)
        )
        for position, event_hash in rows:
            known.tree.append(leaf_hash(leaf_bytes(int(position), event_hash)))
        known.last_position = last_position
        if known.tree.size != tree_size:
            return None
        return known.tree.root(tree_size)

    def _signed(self, document: Mapping[str, Any]) -> bool:
        public = self.keys.get(document["key_id"])
        if public is None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(
                base64.b64decode(document["signature"], validate=True),
                signed_bytes(dict(document)),
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    async def _link_finding(
        self, connection: Any, service: str, row: Any, document: Mapping[str, Any]
    ) -> str | None:
        rivals = (
            await connection.execute(
                sa.select(checkpoints.c.checkpoint_hash)
                .where(checkpoints.c.service == service)
                .where(checkpoints.c.tree_size == row.tree_size)
                .where(checkpoints.c.checkpoint_hash != row.checkpoint_hash)
            )
        ).all()
        if rivals:
            return f"inconsistent_checkpoint: a fork, another checkpoint of size {row.tree_size}"
        before = (
            await connection.execute(
                sa.select(checkpoints.c.document)
                .where(checkpoints.c.service == service)
                .where(checkpoints.c.tree_size < row.tree_size)
                .order_by(checkpoints.c.tree_size.desc())
                .limit(1)
            )
        ).first()
        expected = checkpoint_hash(json.loads(before.document)) if before else ZERO_HASH
        if document["previous_checkpoint_hash"] != expected and before is not None:
            return (
                "inconsistent_checkpoint: names previous checkpoint "
                f"{document['previous_checkpoint_hash'][:16]}…, the one before is {expected[:16]}…"
            )
        return None

    async def latest(self) -> list[dict[str, Any]]:
        """Per service: the last verified checkpoint, and the latest finding if any."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(
                        checkpoints.c.service,
                        checkpoints.c.tree_size,
                        checkpoints.c.verified,
                        checkpoints.c.finding,
                        checkpoints.c.sealed_at,
                    ).order_by(checkpoints.c.service, checkpoints.c.tree_size)
                )
            ).all()
        found: dict[str, dict[str, Any]] = {}
        for r in rows:
            entry = found.setdefault(
                r.service,
                {
                    "service": r.service,
                    "tree_size": 0,
                    "verified": False,
                    "finding": None,
                    "sealed_at": None,
                    "pending": 0,
                },
            )
            if r.verified:
                entry.update(tree_size=int(r.tree_size), verified=True, sealed_at=r.sealed_at)
            elif r.verified is None:
                entry["pending"] += 1
            else:
                entry["finding"] = r.finding
        return list(found.values())


def _row_of(document: Any, now: datetime) -> dict[str, Any] | None:
    if not isinstance(document, dict) or set(document) != CHECKPOINT_FIELDS:
        return None
    try:
        return {
            "service": str(document["service"])[:32],
            "tree_size": int(document["tree_size"]),
            "checkpoint_hash": checkpoint_hash(document),
            "last_position": int(document["last_position"]),
            "sealed_at": str(document["sealed_at"])[:40],
            "document": json.dumps(document),
            "received_at": now,
            "verified": None,
            "finding": None,
        }
    except (TypeError, ValueError):
        return None
