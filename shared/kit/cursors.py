"""Opaque list cursors: where a page ended, as ``(created_at, id)``; garbage is refused cleanly."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from shared.problems import Problem

_MAX_LENGTH = 512


def encode_cursor(created_at: datetime, application_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), application_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor of ours names; a 422 naming ``cursor`` for anything else."""
    try:
        if len(cursor) > _MAX_LENGTH:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = json.loads(raw)
        if not (
            isinstance(decoded, list)
            and len(decoded) == 2
            and all(isinstance(part, str) for part in decoded)
        ):
            raise ValueError("not a cursor")
        created_at = datetime.fromisoformat(decoded[0])
        if created_at.tzinfo is None or not decoded[1] or "\x00" in decoded[1]:
            raise ValueError("not a cursor")
        created_at = created_at.astimezone(UTC)  # out of range at the ends of time: refused
    except (ValueError, TypeError, OverflowError, binascii.Error, RecursionError) as error:
        raise Problem(
            status=422,
            title="Invalid request",
            detail="cursor is not one this API gave out",
            type_="validation",
            errors=[{"field": "cursor", "message": "unknown cursor"}],
        ) from error
    return created_at, decoded[1]
