"""The event envelope: the exact JSON object that is hashed, published and served."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from shared.contracts.canonical import canonical_json

_HASH = re.compile(r"[0-9a-f]{64}")
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,36}")

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of an application's first event."""


class Role(StrEnum):
    FIRM = "firm"
    PROVIDER = "provider"
    OFFICER = "officer"
    MINISTRY = "ministry"
    AUDITOR = "auditor"
    SYSTEM = "system"
    """A service acting on its own (automatic verification, payout)."""


class Actor(BaseModel):
    """Who caused an event: the token's subject and role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sub: str = Field(min_length=1)
    role: Role


def format_timestamp(moment: datetime) -> str:
    """The one textual form of a time in the log: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("timestamps in the log must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NewEvent(BaseModel):
    """What a decider returns: an event type and its payload, before it has a place in the log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    payload: dict[str, Any]
    schema_version: int = Field(default=1, ge=1)


class Envelope(BaseModel):
    """One event as it stands in the hash chain of its application.

    ``hash = sha256(JCS(envelope without "hash")).hexdigest()``; ``prev_hash`` is
    the hash of the previous event of the same application (64 zeros for the first).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,36}$")
    aggregate_id: str = Field(min_length=1)
    aggregate_seq: int = Field(ge=1)
    type: str
    schema_version: int = Field(ge=1)
    occurred_at: datetime
    actor: Actor
    firm_id: str | None
    correlation_id: str
    causation_id: str | None
    payload: dict[str, Any]
    prev_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("occurred_at")
    @classmethod
    def _aware_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        return value.astimezone(UTC)

    @field_serializer("occurred_at")
    def _format_occurred_at(self, value: datetime) -> str:
        return format_timestamp(value)

    def to_json_dict(self) -> dict[str, Any]:
        """The envelope as the JSON object that is published and served."""
        return self.model_dump(mode="json")

    def compute_hash(self) -> str:
        """Recompute this envelope's hash from its other fields."""
        return hash_fields(self.to_json_dict())

    @classmethod
    def seal(
        cls,
        *,
        aggregate_id: str,
        aggregate_seq: int,
        event: NewEvent,
        occurred_at: datetime,
        actor: Actor,
        firm_id: str | None,
        correlation_id: str,
        causation_id: str | None,
        prev_hash: str,
        event_id: str | None = None,
    ) -> Envelope:
        """Build the next link of a chain, computing its hash."""
        if not aggregate_id or aggregate_seq < 1 or not _HASH.fullmatch(prev_hash):
            raise ValueError("a link needs an aggregate id, a seq from 1 and a 64-hex prev_hash")
        if event_id is not None and not _EVENT_ID.fullmatch(event_id):
            raise ValueError("an event id is 1 to 36 letters, digits, '.', '_', ':' or '-'")
        fields: dict[str, Any] = {
            "event_id": event_id or str(uuid.uuid4()),
            "aggregate_id": aggregate_id,
            "aggregate_seq": aggregate_seq,
            "type": event.type,
            "schema_version": event.schema_version,
            "occurred_at": format_timestamp(occurred_at),
            "actor": actor.model_dump(mode="json"),
            "firm_id": firm_id,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
            "payload": event.payload,
            "prev_hash": prev_hash,
        }
        fields["hash"] = hash_fields(fields)
        # every part was validated on its way in; only the two typed members need rebuilding
        fields["occurred_at"] = occurred_at.astimezone(UTC)
        fields["actor"] = actor
        return cls.model_construct(**fields)


def hash_fields(envelope: Mapping[str, Any]) -> str:
    """The public hashing rule over a JSON envelope (its ``hash`` member, if any, is left out)."""
    body = dict(envelope)
    body.pop("hash", None)
    return hashlib.sha256(canonical_json(body)).hexdigest()
