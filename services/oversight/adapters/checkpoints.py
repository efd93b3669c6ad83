"""Oversight's check of every checkpoint it receives, against the events it received.

A checkpoint of size N sealing up to position P is checked once oversight holds N events
of that service at or below P: the Merkle root of their leaves, the Ed25519 signature,
and the link to the checkpoint before. Until then it waits (the events are on their
way); after ``grace`` it is a finding. The same rules as ``incentives audit verify``,
kept incrementally: the tree of each service's log grows as checkpoints are checked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from services.oversight.adapters.tables import checkpoints, received
from shared.checkpoints import CHECKPOINT_MEMBERS, ZERO_HASH, checkpoint_hash, signed_bytes
from shared.clock import Clock
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash

log = logging.getLogger(__name__)


@dataclass
class _Log:
    """One service's log as far as checkpoints have sealed it."""

    tree: MerkleTree = field(default_factory=MerkleTree)
    last_position: int = 0


class CheckpointWatch:
    KEYS_REFRESH_SECONDS = 30.0
    """At most this often the keys are read again for a checkpoint naming an unknown one."""

    def __init__(
        self,
        engine: AsyncEngine,
        keys: Mapping[str, bytes],
        clock: Clock,
        grace: timedelta = timedelta(seconds=60),
        refresh_keys: Callable[[], Mapping[str, bytes]] | None = None,
        keys_unreadable: str | None = None,
    ) -> None:
        """``refresh_keys`` reads the services' keys again (``GET /v1/keys``, blocking: run
        in a thread): a service that rotated its key signs with one oversight has not seen
        yet, and its checkpoints are checked with it rather than found unsigned.
        ``keys_unreadable``: why the keys could not be read at start (a service not up
        yet): until they can, a checkpoint naming a key not known waits, unjudged."""
        self.engine = engine
        self.keys = dict(keys)
        self.clock = clock
        self.grace = grace
        self._refresh_keys = refresh_keys
        self._refreshed_at = float("-inf")
        self._unreadable = keys_unreadable
        self._logs: dict[str, _Log] = {}

    async def record(self, received: Sequence[tuple[str, bytes]]) -> int:
        """Keep each checkpoint received, ``(service of its topic, message value)``, once;
        returns how many were new. A message that is not a well-formed checkpoint of that
        service is kept too, as a finding of the service (it stays on the summary)."""
        fresh = 0
        now = self.clock.now()
        async with self.engine.begin() as connection:
            for service, value in received:
                row = row_of(service, value, now)
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
        await self._learn_new_keys()
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

    async def _learn_new_keys(self) -> None:
        """Read the keys again, outside any transaction, when a pending checkpoint names a
        key not known yet (at most every ``KEYS_REFRESH_SECONDS``: a forger naming made-up
        keys costs the services one request per interval)."""
        if self._refresh_keys is None:
            return
        if time.monotonic() - self._refreshed_at < self.KEYS_REFRESH_SECONDS:
            return
        async with self.engine.connect() as connection:
            documents = (
                await connection.scalars(
                    sa.select(checkpoints.c.document)
                    .where(checkpoints.c.verified.is_(None))
                    .where(checkpoints.c.tree_size >= 0)
                )
            ).all()
        named = {json.loads(d).get("key_id") for d in documents}
        if not named - set(self.keys):
            return
        self._refreshed_at = time.monotonic()
        try:
            self.keys.update(await asyncio.to_thread(self._refresh_keys))
            self._unreadable = None
        except Exception as error:  # the services' keys are unreachable: try next interval
            log.warning("could not read the services' checkpoint keys again: %r", error)
            self._unreadable = repr(error)[:300]

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
                if verified is None:  # waited long: say so, and look again next round
                    await connection.execute(
                        sa.update(checkpoints)
                        .where(checkpoints.c.service == service)
                        .where(checkpoints.c.tree_size == row.tree_size)
                        .where(checkpoints.c.checkpoint_hash == row.checkpoint_hash)
                        .values(finding=finding)
                    )
                    break
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
    ) -> tuple[bool | None, str | None] | None:
        """``(verified, finding)``; ``None``: wait for the events; ``(None, why)``: waited
        longer than ``grace``, still re-checked as they come."""
        document = json.loads(row.document)
        held = await self._held(connection, service, row.last_position)
        if held < row.tree_size:
            if self.clock.now() - row.received_at < self.grace:
                return None
            return None, (
                f"missing: {row.tree_size - held} of the {row.tree_size} events sealed up to "
                f"position {row.last_position} have not arrived"
            )
        if held > row.tree_size:
            return False, (
                f"inserted: {held} events at or below position {row.last_position}, "
                f"the checkpoint seals {row.tree_size}"
            )
        if document["key_id"] not in self.keys and self._unreadable is not None:
            return None, (
                f"waiting: signed by key {document['key_id']!r}, not known yet, and the "
                f"services' keys cannot be read now ({self._unreadable})"
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

    async def _held(self, connection: Any, service: str, last_position: int) -> int:
        """How many events of ``service`` oversight holds at or below ``last_position``:
        counted from the last verified checkpoint below it, not from the log's start."""
        base = (
            await connection.execute(
                sa.select(checkpoints.c.tree_size, checkpoints.c.last_position)
                .where(checkpoints.c.service == service)
                .where(checkpoints.c.verified.is_(True))
                .where(checkpoints.c.last_position <= last_position)
                .order_by(checkpoints.c.last_position.desc())
                .limit(1)
            )
        ).first()
        size, after = (int(base.tree_size), int(base.last_position)) if base else (0, 0)
        more = await connection.scalar(
            sa.select(sa.func.count())
            .select_from(received)
            .where(received.c.service == service)
            .where(received.c.position > after)
            .where(received.c.position <= last_position)
        )
        return size + int(more or 0)

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
                .where(checkpoints.c.verified.is_(True))  # not a forgery or a stray message
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
        """Per service: the last verified checkpoint; the latest finding of a checkpoint
        that failed (it stays), else of one still waiting for its events."""
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    sa.select(
                        checkpoints.c.service,
                        checkpoints.c.tree_size,
                        checkpoints.c.verified,
                        checkpoints.c.finding,
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
                    "waiting": None,
                    "pending": 0,
                },
            )
            if r.verified:
                entry.update(tree_size=int(r.tree_size), verified=True)
            elif r.verified is None:
                entry["pending"] += 1
                entry["waiting"] = r.finding or entry["waiting"]
            else:
                entry["finding"] = r.finding
        for entry in found.values():
            entry["finding"] = entry["finding"] or entry.pop("waiting")
            entry.pop("waiting", None)
        return list(found.values())


HEX64 = re.compile(r"[0-9a-f]{64}")
LARGEST = 2**53


def row_of(service: str, value: bytes, now: datetime) -> dict[str, Any]:
    """The row of a message on ``service``'s checkpoints topic: the checkpoint, or a
    finding naming what is wrong with it (stored under tree size -1, once per content)."""
    digest = hashlib.sha256(value).hexdigest()
    document, problem = _read(service, value)
    if problem is None:
        return {
            "service": service,
            "tree_size": int(document["tree_size"]),
            "checkpoint_hash": checkpoint_hash(document),
            "last_position": int(document["last_position"]),
            "sealed_at": document["sealed_at"],
            "document": json.dumps(document),
            "received_at": now,
            "verified": None,
            "finding": None,
        }
    return {
        "service": service,
        "tree_size": -1,
        "checkpoint_hash": digest,
        "last_position": 0,
        "sealed_at": "",
        # text as PostgreSQL keeps it: no NUL (refused, it would stop the consumer for good)
        "document": value[:2000].decode("utf-8", "replace").replace("\x00", "\ufffd"),
        "received_at": now,
        "verified": False,
        "finding": f"bad_signature: a message on the checkpoints topic is not a checkpoint: {problem}",
    }


def not_a_checkpoint(service: str, value: bytes) -> str | None:
    """Why a message on ``service``'s checkpoints topic is not a checkpoint of it; None if it is."""
    return _read(service, value)[1]


def _read(service: str, value: bytes) -> tuple[Any, str | None]:
    try:
        document = json.loads(value)
        return document, _malformed(service, document)
    except Exception as error:  # not JSON, nested too deep, not UTF-8...
        return None, f"not JSON ({type(error).__name__})"


def _malformed(service: str, document: Any) -> str | None:
    if not isinstance(document, dict) or set(document) != CHECKPOINT_MEMBERS:
        return "not the checkpoint object"
    if document["service"] != service:
        return f"it names the service {str(document['service'])[:40]!r}"
    for name in ("tree_size", "last_position"):
        value = document[name]
        if type(value) is not int or not 0 <= value <= LARGEST:
            return f"{name} is not a count"
    for name in ("root_hash", "previous_checkpoint_hash"):
        if not isinstance(document[name], str) or HEX64.fullmatch(document[name]) is None:
            return f"{name} is not 64 lowercase hex"
    for name, most in (("sealed_at", 40), ("key_id", 100), ("signature", 200)):
        if not isinstance(document[name], str) or not 0 < len(document[name]) <= most:
            return f"{name} is not a string of at most {most} characters"
        if "\x00" in document[name]:  # no text column takes it
            return f"{name} holds a NUL character"
    return None
