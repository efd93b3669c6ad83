"""Event contracts: the envelope, canonical JSON, the hashing rule and chain verification.

Pure: no I/O library is imported here, so auditors can run it anywhere.
"""

from shared.contracts.canonical import CanonicalizationError, canonical_json
from shared.contracts.chain import BreakKind, ChainBreak, ChainReport, verify_chain
from shared.contracts.envelope import (
    GENESIS_HASH,
    Actor,
    Envelope,
    NewEvent,
    Role,
    format_timestamp,
    hash_fields,
)

__all__ = [
    "GENESIS_HASH",
    "Actor",
    "BreakKind",
    "CanonicalizationError",
    "ChainBreak",
    "ChainReport",
    "Envelope",
    "NewEvent",
    "Role",
    "canonical_json",
    "format_timestamp",
    "hash_fields",
    "verify_chain",
]
