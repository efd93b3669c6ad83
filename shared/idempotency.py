"""``Idempotency-Key`` for POST requests: same key and body, same response; another body, 409.

The key's row is written in the same transaction as the command's events, so a
request either happened once with its recorded response or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from shared import jsontext
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


KEY_REQUIRED: dict[str, Any] = {"x-idempotency-key": "required"}
"""``openapi_extra`` of a route that answers 400 to a request without an Idempotency-Key.
Its header parameter is optional to FastAPI, so that a missing key is that 400 (as the
IETF draft on the header asks), not a validation 422; :func:`document_required_keys`
makes the route's document say the header is required all the same."""


def document_required_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """Mark the Idempotency-Key header required on the operations :data:`KEY_REQUIRED` names."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or operation.pop("x-idempotency-key", None) is None:
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
                    parameter["required"] = True
    return schema


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


_LOOKUP_MANY = sa.text(
    "SELECT principal, key, request_hash, status_code, body FROM idempotency_keys"
    " WHERE key = ANY(CAST(:keys AS TEXT[])) AND principal = ANY(CAST(:principals AS TEXT[]))"
)


async def replay(
    uow: UnitOfWork, principal: str, key: str, fingerprint: str
) -> StoredResponse | None:
    """The recorded response for this key, or ``None`` if the key is new; 409 if reused."""
    row = await uow.fetch_one(_LOOKUP, {"principal": principal, "key": key})
    return _replayed(row, fingerprint)


async def replay_many(
    uow: UnitOfWork, requests: Sequence[tuple[str, str, str]]
) -> list[StoredResponse | Problem | None]:
    """:func:`replay` for several ``(principal, key, fingerprint)`` at once, in one query
    on PostgreSQL; a reused key gets its 409 as a value instead of raised."""
    if uow.connection.dialect.name != "postgresql":
        found: list[StoredResponse | Problem | None] = []
        for principal, key, fingerprint in requests:
            try:
                found.append(await replay(uow, principal, key, fingerprint))
            except Problem as problem:
                found.append(problem)
        return found
    rows = await uow.fetch_all(
        _LOOKUP_MANY,
        {
            "keys": sorted({key for _, key, _ in requests}),
            "principals": sorted({principal for principal, _, _ in requests}),
        },
    )
    recorded = {(row["principal"], row["key"]): row for row in rows}
    answers: list[StoredResponse | Problem | None] = []
    for principal, key, fingerprint in requests:
        try:
            answers.append(_replayed(recorded.get((principal, key)), fingerprint))
        except Problem as problem:
            answers.append(problem)
    return answers


def _replayed(row: Mapping[str, Any] | None, fingerprint: str) -> StoredResponse | None:
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
    await remember_many(uow, [(principal, key, fingerprint, response)])


async def remember_many(
    uow: UnitOfWork, responses: Sequence[tuple[str, str, str, StoredResponse]]
) -> None:
    """Record several ``(principal, key, fingerprint, response)`` in one round trip."""
    now = uow.now
    await uow.write_many(
        _REMEMBER,
        [
            {
                "principal": principal,
                "key": key,
                "request_hash": fingerprint,
                "status_code": response.status_code,
                "body": jsontext.dumps(response.body),
                "created_at": now,
            }
            for principal, key, fingerprint, response in responses
        ],
    )
