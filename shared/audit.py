"""What an auditor who trusts nothing checks in a service's published log: every application's
chain, every checkpoint's signature, chain and root, and that every event old enough is
sealed. Works on what was read (from the topics, or a service's API): no database.

Findings name what was found, where (the log position), and what was expected:

- ``modified``: an event's content no longer matches its hash, or a sealed leaf changed;
- ``missing``: a leaf absent anywhere but the log's tail (a middle event, an application's
  last event, a whole application);
- ``reordered``: an application's events out of their order;
- ``inserted``: an event that no checkpoint or chain allows (a second event at a position,
  a link pointing at the wrong predecessor, more leaves than a checkpoint sealed);
- ``truncated``: the log's last positions up to the latest checkpoint are gone;
- ``unsigned``: events older than twice the sealing interval covered by no checkpoint;
- ``bad_signature``: a checkpoint not signed by a published key;
- ``inconsistent_checkpoint``: a checkpoint that does not name the one before it (a fork).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.contracts import canonical_json
from shared.contracts.chain import BreakKind, verify_chain
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash

ZERO_HASH = "0" * 64

_CHAIN_KINDS = {
    BreakKind.MODIFIED: "modified",
    BreakKind.MISSING: "missing",
    BreakKind.OUT_OF_ORDER: "reordered",
    BreakKind.WRONG_PREV_HASH: "inserted",
}


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    service: str
    expected: Any
    found: Any
    application_id: str | None = None
    position: int | None = None

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"kind": self.kind, "service": self.service}
        if self.application_id is not None:
            document["application_id"] = self.application_id
        if self.position is not None:
            document["position"] = self.position
        return {**document, "expected": self.expected, "found": self.found}


@dataclass
class Report:
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "findings": [f.to_json() for f in self.findings],
        }


def verify_log(
    service: str,
    events: Sequence[tuple[int, Mapping[str, Any]]],
    checkpoints: Sequence[Mapping[str, Any]],
    keys: Mapping[str, bytes],
    *,
    now: datetime,
    sealing_interval: timedelta = timedelta(seconds=5),
) -> Report:
    """Check ``events`` (``(position, envelope)``, as read: in any order, redelivered copies
    allowed) and ``checkpoints`` against ``keys`` (key id → 32 raw public-key bytes)."""
    report = Report()
    log = _one_per_position(service, events, report)
    positions = sorted(log)
    ordered = [log[p] for p in positions]
    chains = verify_chain(ordered)
    position_of = {id(e): p for p, e in log.items()}
    for broken in chains.breaks:
        report.findings.append(
            Finding(
                _CHAIN_KINDS[broken.kind],
                service,
                expected=broken.detail,
                found=broken.event_id,
                application_id=broken.aggregate_id,
                position=position_of.get(id(ordered[broken.index])),
            )
        )
    sealed_up_to = _check_checkpoints(service, log, positions, checkpoints, keys, report)
    unsigned = [
        p for p in positions if p > sealed_up_to and _occurred(log[p]) < now - 2 * sealing_interval
    ]
    if unsigned:
        report.findings.append(
            Finding(
                "unsigned",
                service,
                expected=f"sealed within {2 * sealing_interval.total_seconds():g} s",
                found=f"{len(unsigned)} event(s) after the last checkpoint",
                position=unsigned[0],
            )
        )
    report.checked = {
        "events": len(log),
        "applications": chains.applications,
        "checkpoints": len(checkpoints),
    }
    return report


def _one_per_position(
    service: str, events: Sequence[tuple[int, Mapping[str, Any]]], report: Report
) -> dict[int, Mapping[str, Any]]:
    """The log by position: a redelivered copy is dropped; another event at a taken
    position, or one event at two positions, is ``inserted``."""
    log: dict[int, Mapping[str, Any]] = {}
    where: dict[str, int] = {}
    for position, envelope in sorted(events, key=itemgetter(0)):
        event_id = str(envelope.get("event_id"))
        held = log.get(position)
        if held is not None:
            if held.get("hash") != envelope.get("hash") or held.get("event_id") != event_id:
                report.findings.append(
                    Finding(
                        "inserted",
                        service,
                        expected=held.get("event_id"),
                        found=event_id,
                        application_id=str(envelope.get("aggregate_id")),
                        position=position,
                    )
                )
            continue
        if event_id in where:
            report.findings.append(
                Finding(
                    "inserted",
                    service,
                    expected=f"event {event_id} at position {where[event_id]} only",
                    found=f"again at position {position}",
                    application_id=str(envelope.get("aggregate_id")),
                    position=position,
                )
            )
            continue
        where[event_id] = position
        log[position] = envelope
    return log


def _check_checkpoints(
    service: str,
    log: Mapping[int, Mapping[str, Any]],
    positions: Sequence[int],
    checkpoints: Sequence[Mapping[str, Any]],
    keys: Mapping[str, bytes],
    report: Report,
) -> int:
    """Signatures, the chain of checkpoints, and each root rebuilt from the leaves read;
    returns the last position sealed by a signed checkpoint (0 for none)."""
    tree = MerkleTree(leaf_hash(leaf_bytes(p, str(log[p].get("hash")))) for p in positions)
    previous = ZERO_HASH
    sealed_up_to = 0
    for checkpoint in sorted(checkpoints, key=lambda c: int(c["tree_size"])):
        size, last = int(checkpoint["tree_size"]), int(checkpoint["last_position"])
        signed = canonical_json({k: v for k, v in checkpoint.items() if k != "signature"})
        if not _signed_by(keys.get(str(checkpoint.get("key_id"))), signed, checkpoint):
            report.findings.append(
                Finding(
                    "bad_signature",
                    service,
                    expected=f"signed by key {checkpoint.get('key_id')}",
                    found=f"checkpoint of tree size {size}",
                    position=last,
                )
            )
            continue
        if checkpoint.get("previous_checkpoint_hash") != previous:
            report.findings.append(
                Finding(
                    "inconsistent_checkpoint",
                    service,
                    expected=previous,
                    found=checkpoint.get("previous_checkpoint_hash"),
                    position=last,
                )
            )
        previous = hashlib.sha256(signed).hexdigest()
        sealed_up_to = max(sealed_up_to, last)  # signed: what it sealed is found or named
        covered = bisect.bisect_right(positions, last)  # positions are sorted
        if covered < size:
            tail = not positions or positions[-1] < last
            report.findings.append(
                Finding(
                    "truncated" if tail and covered == len(positions) else "missing",
                    service,
                    expected=f"{size} events up to position {last}",
                    found=f"{covered} events",
                    position=last if tail else _first_gap(positions, last),
                )
            )
        elif covered > size:
            report.findings.append(
                Finding(
                    "inserted",
                    service,
                    expected=f"{size} events up to position {last}",
                    found=f"{covered} events",
                    position=last,
                )
            )
        elif tree.root(size).hex() != checkpoint.get("root_hash"):
            report.findings.append(
                Finding(
                    "modified",
                    service,
                    expected=checkpoint.get("root_hash"),
                    found=tree.root(size).hex(),
                    position=last,
                )
            )
    return sealed_up_to


def _signed_by(public: bytes | None, signed: bytes, checkpoint: Mapping[str, Any]) -> bool:
    if public is None:
        return False
    try:
        signature = base64.b64decode(str(checkpoint.get("signature")), validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        return False
    return True


def _first_gap(positions: Sequence[int], last: int) -> int | None:
    """Where the leaves read first skip a position (positions are dense unless a
    transaction rolled back, so this names the first place to look)."""
    expected = 1
    for p in positions:
        if p > last:
            break
        if p != expected:
            return expected
        expected = p + 1
    return None


def _occurred(envelope: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(envelope.get("occurred_at")).replace("Z", "+00:00"))


__all__ = ["Finding", "Report", "verify_log"]
