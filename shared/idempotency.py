"""``Idempotency-Key`` for POST requests: same key and body, same response; another body, 409.

The key's row is written in the same transaction as the command's events, so a
request either happened once with its recorded response or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shared.contracts import canonical_json
from shared.eventstore.schema import UTCDateTime, metadata
from shared.eventstore.store import UnitOfWork
from shared.problems import Problem

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("principal", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the response as sent: JSON text
    sa.Column("created_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: Any


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """What makes two requests "the same": method, path and the canonical JSON body."""
    return hashlib.sha256(canonical_json([method.upper(), path, body])).hexdigest()


def require_key(key: str | None) -> str:
    if not key:
        raise Problem(
            status=400,
            title="Idempotency-Key required",
            detail="send an Idempotency-Key header (a unique string per intended request)",
            type_="idempotency-key-required",
        )
    if len(key) > 200:
        raise Problem(status=400, title="Idempotency-Key too long", detail="at most 200 characters")
    return key


_LOOKUP = sa.text(
    "SELECT request_hash, status_code, body FROM idempotency_keys"
    " WHERE principal = :principal AND key = :key"
)
_REMEMBER = sa.text(
    "INSERT INTO idempotency_keys (principal, key, request_hash, status_code, body, created_at)"
    " VALUES (:principal, :key, :request_hash, :status_code, :body, :created_at)"
).bindparams(sa.bindparam("created_at", type_=UTCDateTime))


async def replay(
    uow: UnitOfWork, principal: str, key: str, fingerprint: str
) -> StoredResponse | None:
    """The recorded response for this key, or ``None`` if the key is new; 409 if reused."""
    row = await uow.fetch_one(_LOOKUP, {"principal": principal, "key": key})
    if row is None:
        return None
    if row["request_hash"] != fingerprint:
        raise Problem(
            status=409,
            title="Idempotency-Key reused",
            detail="this Idempotency-Key was used for a different request",
            type_="idempotency-key-reused",
        )
    return StoredResponse(row["status_code"], json.loads(row["body"]))


async def remember(
    uow: UnitOfWork, principal: str, key: str, fingerprint: str, response: StoredResponse
) -> None:
    """Record the response in the command's own transaction."""
    await uow.write(
        _REMEMBER,
        {
            "principal": principal,
            "key": key,
            "request_hash": fingerprint,
            "status_code": response.status_code,
            "body": json.dumps(response.body, separators=(",", ":"), ensure_ascii=False),
            "created_at": uow.now,
        },
    )
