"""The auditor's check of a published log: each way of tampering is found, and named."""

from __future__ import annotations

import base64
import copy
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.audit import verify_log
from shared.checkpoints import SigningKey, signed_bytes
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.contracts.chain import ReadEnvelope
from shared.contracts.envelope import format_timestamp
from shared.contracts.merkle import MerkleTree, leaf_bytes, leaf_hash

T0 = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
KEY = SigningKey.from_seed(b"s" * 32, T0, "test-key")
OTHER_KEY = SigningKey.from_seed(b"o" * 32, T0, "test-key")
KEYS = {KEY.key_id: KEY.public_key}
ACTOR = Actor(sub="stage", role=Role.SYSTEM)

Log = list[tuple[int, dict[str, Any]]]


def log_of(applications: dict[str, int]) -> Log:
    """Events of the applications interleaved, positions 1, 2, 3..., each chain linked."""
    heads: dict[str, tuple[int, str]] = {a: (0, GENESIS_HASH) for a in applications}
    log: Log = []
    remaining = dict(applications)
    while any(remaining.values()):
        for app in applications:
            if not remaining[app]:
                continue
            seq, prev = heads[app]
            envelope = Envelope.seal(
                aggregate_id=app,
                aggregate_seq=seq + 1,
                event=NewEvent(type="voucher.application.noted", payload={"n": seq + 1}),
                occurred_at=T0 + timedelta(seconds=len(log)),
                actor=ACTOR,
                firm_id="123-45-67890",
                correlation_id=f"c-{app}",
                causation_id=None,
                prev_hash=prev,
            )
            log.append((len(log) + 1, envelope.to_json_dict()))
            heads[app] = (seq + 1, envelope.hash)
            remaining[app] -= 1
    return log


def checkpoints_of(log: Log, sizes: list[int], key: SigningKey = KEY) -> list[dict[str, Any]]:
    tree = MerkleTree(leaf_hash(leaf_bytes(p, e["hash"])) for p, e in log)
    made: list[dict[str, Any]] = []
    previous = "0" * 64
    for size in sizes:
        body: dict[str, Any] = {
            "service": "voucher",
            "tree_size": size,
            "last_position": log[size - 1][0],
            "root_hash": tree.root(size).hex(),
            "previous_checkpoint_hash": previous,
            "sealed_at": format_timestamp(T0 + timedelta(minutes=5)),
            "key_id": key.key_id,
        }
        body["signature"] = base64.b64encode(key.sign(signed_bytes(body))).decode()
        previous = hashlib.sha256(signed_bytes(body)).hexdigest()
        made.append(body)
    return made


def kinds(log: Log, checkpoints: list[dict[str, Any]]) -> list[str]:
    report = verify_log("voucher", log, checkpoints, KEYS, now=NOW)
    return sorted({f.kind for f in report.findings})


@pytest.fixture
def log() -> Log:
    return log_of({"app-a": 4, "app-b": 3, "app-c": 3})  # 10 events


def test_an_untouched_log_with_its_checkpoints_has_no_finding(log: Log) -> None:
    report = verify_log("voucher", log, checkpoints_of(log, [4, 10]), KEYS, now=NOW)

    assert report.ok, report.to_json()
    assert report.checked == {"events": 10, "applications": 3, "checkpoints": 2}


def test_redelivered_copies_are_not_findings(log: Log) -> None:
    assert kinds(log + log[:3], checkpoints_of(log, [10])) == []


def test_a_changed_payload_is_modified(log: Log) -> None:
    sealed = checkpoints_of(log, [10])
    log[4][1]["payload"]["n"] = 99

    report = verify_log("voucher", log, sealed, KEYS, now=NOW)

    assert {f.kind for f in report.findings} == {"modified"}
    [finding] = [f for f in report.findings if f.application_id]
    assert finding.position == 5


def test_a_removed_middle_event_is_missing(log: Log) -> None:
    sealed = checkpoints_of(log, [10])
    del log[3]  # app-a's second event, position 4

    assert "missing" in kinds(log, sealed)


def test_a_removed_whole_application_is_missing_though_every_chain_left_verifies() -> None:
    log = log_of({"app-a": 3, "app-b": 1, "app-c": 3})
    sealed = checkpoints_of(log, [len(log)])
    gone = [(p, e) for p, e in log if e["aggregate_id"] != "app-b"]

    report = verify_log("voucher", gone, sealed, KEYS, now=NOW)

    assert [f.kind for f in report.findings] == ["missing"]
    assert report.findings[0].position == 2  # app-b's only event stood there


def test_removed_last_positions_are_truncated(log: Log) -> None:
    sealed = checkpoints_of(log, [10])

    assert kinds(log[:8], sealed) == ["truncated"]


def test_swapped_events_of_an_application_are_reordered(log: Log) -> None:
    sealed = checkpoints_of(log, [10])
    first, second = 0, 3  # app-a seq 1 and seq 2
    (p1, e1), (p2, e2) = log[first], log[second]
    log[first], log[second] = (p1, e2), (p2, e1)

    assert "reordered" in kinds(log, sealed)


def test_an_event_slipped_in_is_inserted(log: Log) -> None:
    sealed = checkpoints_of(log, [10])
    forged = copy.deepcopy(log[1][1])
    forged["event_id"] = "forged"
    log.append((2, forged))

    assert "inserted" in kinds(log, sealed)


def test_a_checkpoint_signed_with_another_key_is_a_bad_signature(log: Log) -> None:
    # and what it claims to seal is sealed by nothing
    assert kinds(log, checkpoints_of(log, [10], key=OTHER_KEY)) == ["bad_signature", "unsigned"]


def test_a_checkpoint_that_does_not_name_the_one_before_is_inconsistent(log: Log) -> None:
    first, second = checkpoints_of(log, [4, 10])
    forked = {**second, "previous_checkpoint_hash": "f" * 64}
    forked["signature"] = base64.b64encode(KEY.sign(signed_bytes(forked))).decode()

    assert kinds(log, [first, forked]) == ["inconsistent_checkpoint"]


def test_old_events_no_checkpoint_covers_are_unsigned(log: Log) -> None:
    report = verify_log("voucher", log, checkpoints_of(log, [4]), KEYS, now=NOW)

    [finding] = report.findings
    assert finding.kind == "unsigned" and finding.position == 5


def test_recent_events_not_yet_sealed_are_no_finding(log: Log) -> None:
    report = verify_log(
        "voucher", log, checkpoints_of(log, [4]), KEYS, now=T0 + timedelta(seconds=12)
    )

    assert [f.position for f in report.findings] == []


def test_an_unknown_service_is_a_usage_error() -> None:
    from typer.testing import CliRunner

    from shared.cli import app

    result = CliRunner().invoke(app, ["audit", "verify", "--service", "lottery"])

    assert result.exit_code == 2


def test_what_a_long_log_reader_keeps_of_each_event_finds_the_same(log: Log) -> None:
    """``verify`` keeps only the checked members and the content hash of each event read:
    every tampering still shows, as the same findings."""
    sealed = checkpoints_of(log, [10])
    log[4][1]["payload"]["n"] = 99  # modified
    (p1, e1), (p2, e2) = log[0], log[3]  # reordered
    log[0], log[3] = (p1, e2), (p2, e1)
    forged = copy.deepcopy(log[1][1])
    forged["event_id"] = "forged"
    log.append((2, forged))  # inserted
    del log[7]  # missing

    whole = verify_log("voucher", log, sealed, KEYS, now=NOW)
    kept = verify_log("voucher", [(p, ReadEnvelope.of(e)) for p, e in log], sealed, KEYS, now=NOW)

    assert kept.findings == whole.findings
    assert {f.kind for f in whole.findings} >= {"modified", "reordered", "inserted", "missing"}
    assert "payload" not in ReadEnvelope.of(log[0][1])
