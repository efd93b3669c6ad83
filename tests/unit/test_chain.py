"""The public hashing rule and the verifier an auditor runs."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts import (
    GENESIS_HASH,
    Actor,
    BreakKind,
    Envelope,
    NewEvent,
    Role,
    canonical_json,
    verify_chain,
)

OFFICER = Actor(sub="officer-kim", role=Role.OFFICER)


def chain(aggregate_id: str, length: int) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq in range(1, length + 1):
        envelope = Envelope.seal(
            aggregate_id=aggregate_id,
            aggregate_seq=seq,
            event=NewEvent(type="voucher.application.noted", payload={"n": seq, "note": "가나다"}),
            occurred_at=datetime(2026, 11, 25, 9, 0, seq, tzinfo=UTC),
            actor=OFFICER,
            firm_id="123-45-67890",
            correlation_id="corr-1",
            causation_id=None,
            prev_hash=prev,
        )
        prev = envelope.hash
        links.append(envelope.to_json_dict())
    return links


def test_hash_follows_the_public_rule_with_an_independent_jcs() -> None:
    for link in chain("app-1", 3):
        body = {k: v for k, v in link.items() if k != "hash"}
        assert link["hash"] == hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def test_first_event_points_at_sixty_four_zeros() -> None:
    assert chain("app-1", 1)[0]["prev_hash"] == "0" * 64


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_agrees_with_rfc8785_package(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=6), children)
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(plain_values)
def test_the_fast_path_writes_what_rfc8785_writes(value: Any) -> None:
    """No floats, ASCII keys: the values the C encoder writes; every escape included."""
    assert canonical_json(value) == rfc8785.dumps(value)


def test_where_the_fast_path_would_differ_the_careful_way_is_taken() -> None:
    # UTF-16 puts U+1F600 (a surrogate pair, 0xD83D...) before U+E000; code points do not
    ordered = {"\ue000": 1, "\U0001f600": 2}
    assert canonical_json(ordered) == rfc8785.dumps(ordered)
    assert canonical_json({"n": 1.0, "m": 1e21}) == rfc8785.dumps({"n": 1.0, "m": 1e21})
    with pytest.raises(ValueError):
        canonical_json({"n": 2**53})
    with pytest.raises(ValueError):
        canonical_json({"text": "\ud800"})  # a lone surrogate has no UTF-8 form


def test_untampered_interleaved_log_verifies() -> None:
    a, b = chain("app-a", 5), chain("app-b", 4)
    log = [x for pair in zip(a, b, strict=False) for x in pair] + a[4:]
    report = verify_chain(log)
    assert report.ok
    assert (report.events, report.applications) == (9, 2)


def test_modified_payload_is_named() -> None:
    log = chain("app-1", 5)
    log[2] = {**log[2], "payload": {**log[2]["payload"], "n": 999}}
    (found,) = verify_chain(log).breaks
    assert (found.kind, found.aggregate_seq, found.index) == (BreakKind.MODIFIED, 3, 2)


def test_deleted_middle_event_is_named() -> None:
    log = chain("app-1", 5)
    del log[2]
    (found,) = verify_chain(log).breaks
    assert found.kind is BreakKind.MISSING
    assert found.aggregate_seq == 4
    assert "3" in found.detail


def test_two_swapped_events_are_named() -> None:
    log = chain("app-1", 5)
    log[1], log[2] = log[2], log[1]
    (found,) = verify_chain(log).breaks
    assert (found.kind, found.index, found.aggregate_seq) == (BreakKind.OUT_OF_ORDER, 1, 3)


def test_forged_prev_hash_is_named_even_when_rehashed() -> None:
    log = chain("app-1", 4)
    forged = {**log[2], "prev_hash": "f" * 64}
    forged["hash"] = hashlib.sha256(
        rfc8785.dumps({k: v for k, v in forged.items() if k != "hash"})
    ).hexdigest()
    log[2] = forged
    (found,) = verify_chain(log).breaks
    assert (found.kind, found.aggregate_seq) == (BreakKind.WRONG_PREV_HASH, 3)


def test_only_the_broken_application_is_reported() -> None:
    a, b = chain("app-a", 3), chain("app-b", 3)
    b[1] = {**b[1], "actor": {"sub": "someone-else", "role": "officer"}}
    log = a + b
    (found,) = verify_chain(log).breaks
    assert found.aggregate_id == "app-b"


def test_envelope_refuses_naive_time() -> None:
    link = chain("app-1", 1)[0]
    link["occurred_at"] = "2026-11-25T09:00:01"
    try:
        Envelope.model_validate(link)
    except ValueError as error:
        assert "timezone" in str(error)
    else:
        raise AssertionError("a naive timestamp was accepted")
