"""Verification of hash chains: what an auditor runs on a history they were handed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.contracts.envelope import GENESIS_HASH, hash_fields


class BreakKind(StrEnum):
    MODIFIED = "modified"
    """The event's content no longer matches its own hash."""
    MISSING = "missing"
    """A sequence number is skipped: an event was removed."""
    OUT_OF_ORDER = "out_of_order"
    """Sequence numbers go backwards or repeat: events were swapped or duplicated."""
    WRONG_PREV_HASH = "wrong_prev_hash"
    """The event does not point at the hash of the event before it."""


class ReadEnvelope(dict[str, Any]):
    """An envelope as a reader of a long log keeps it: only the members the checks read
    (``CHECKED_MEMBERS``), and the hash its whole content had when it was read, so that
    the payload need not stay in memory. Only code makes one: no JSON parses into it."""

    __slots__ = ("content_hash",)

    content_hash: str | None

    @classmethod
    def of(cls, envelope: Mapping[str, Any]) -> ReadEnvelope:
        kept = cls((k, envelope[k]) for k in CHECKED_MEMBERS if k in envelope)
        kept.content_hash = _safe_hash(envelope)
        return kept


CHECKED_MEMBERS = (
    "event_id",
    "aggregate_id",
    "aggregate_seq",
    "type",
    "occurred_at",
    "prev_hash",
    "hash",
)
"""What the chain and checkpoint checks read of an envelope, besides its content hash."""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first broken link of one application's chain."""

    aggregate_id: str
    index: int
    """Position of the offending envelope in the sequence that was verified (0-based)."""
    aggregate_seq: int | None
    event_id: str | None
    kind: BreakKind
    detail: str


@dataclass(frozen=True, slots=True)
class ChainReport:
    events: int
    applications: int
    breaks: tuple[ChainBreak, ...]

    @property
    def ok(self) -> bool:
        return not self.breaks


def verify_chain(envelopes: Iterable[Mapping[str, Any]]) -> ChainReport:
    """Check every application's chain in ``envelopes`` (JSON objects, in log order).

    Events of different applications may interleave; within one application they
    must run 1, 2, 3... each pointing at its predecessor's hash. The first broken
    link of each application is reported: later links of a chain already known to
    be broken prove nothing more.
    """
    by_application: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    count = 0
    for index, envelope in enumerate(envelopes):
        count += 1
        key = str(envelope.get("aggregate_id"))
        by_application.setdefault(key, []).append((index, envelope))
    breaks = [
        found
        for aggregate_id, links in by_application.items()
        if (found := _first_break(aggregate_id, links)) is not None
    ]
    breaks.sort(key=lambda b: b.index)
    return ChainReport(events=count, applications=len(by_application), breaks=tuple(breaks))


def _first_break(
    aggregate_id: str, links: list[tuple[int, Mapping[str, Any]]]
) -> ChainBreak | None:
    expected_seq, expected_prev = 1, GENESIS_HASH
    for position, (index, envelope) in enumerate(links):
        seq = envelope.get("aggregate_seq")
        found: tuple[BreakKind, str] | None = None
        if envelope.get("hash") != _safe_hash(envelope):
            found = BreakKind.MODIFIED, "content does not match its hash"
        elif not isinstance(seq, int) or isinstance(seq, bool):
            found = BreakKind.MODIFIED, "aggregate_seq is not an integer"
        elif seq != expected_seq:
            later = {e.get("aggregate_seq") for _, e in links[position + 1 :]}
            if seq < expected_seq or expected_seq in later:
                found = BreakKind.OUT_OF_ORDER, f"seq {seq} stands where seq {expected_seq} belongs"
            else:
                found = BreakKind.MISSING, f"seq {expected_seq}..{seq - 1} missing before seq {seq}"
        elif envelope.get("prev_hash") != expected_prev:
            found = (
                BreakKind.WRONG_PREV_HASH,
                f"prev_hash does not match the hash of seq {expected_seq - 1}",
            )
        if found is not None:
            event_id = envelope.get("event_id")
            return ChainBreak(
                aggregate_id=aggregate_id,
                index=index,
                aggregate_seq=seq if isinstance(seq, int) else None,
                event_id=str(event_id) if event_id is not None else None,
                kind=found[0],
                detail=found[1],
            )
        assert isinstance(seq, int)  # the checks above returned otherwise
        expected_seq, expected_prev = seq + 1, str(envelope["hash"])
    return None


def _safe_hash(envelope: Mapping[str, Any]) -> str | None:
    if type(envelope) is ReadEnvelope:
        return envelope.content_hash
    try:
        return hash_fields(envelope)
    except ValueError:
        return None
