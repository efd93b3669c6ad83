"""Typed event payloads: old versions are read through upcasters, never rewritten."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.voucher.domain.events import EVENTS, ApplicationVerified, E
from services.voucher.domain.model import Status, fold
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role, verify_chain
from tests.unit.voucher_builders import submit

T0 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)


def chain(*events: NewEvent) -> list[Envelope]:
    envelopes: list[Envelope] = []
    for n, event in enumerate(events, start=1):
        envelopes.append(
            Envelope.seal(
                aggregate_id="app-1",
                aggregate_seq=n,
                event=event,
                occurred_at=T0,
                actor=Actor(sub="voucher-verifier", role=Role.SYSTEM),
                firm_id="123-45-67890",
                correlation_id="c",
                causation_id=None,
                prev_hash=envelopes[-1].hash if envelopes else GENESIS_HASH,
            )
        )
    return envelopes


def submitted_event() -> NewEvent:
    from services.voucher.domain.decider import decide

    [event] = decide(submit(), None)
    return event


def test_a_version_1_verified_event_is_read_through_its_upcaster() -> None:
    v1 = NewEvent(type=E.VERIFIED, payload={"checks": ["startup_age"]}, schema_version=1)
    log = chain(submitted_event(), v1)
    assert verify_chain([e.to_json_dict() for e in log]).ok  # the old event stays as written
    parsed = EVENTS.parse(log[1])
    assert isinstance(parsed, ApplicationVerified)
    assert parsed.checks == ["startup_age"] and parsed.facts is None
    state = fold(log)
    assert state is not None and state.status is Status.VERIFIED
    assert state.verification is None


def test_an_event_newer_than_the_code_is_refused_not_misread() -> None:
    v9 = NewEvent(type=E.VERIFIED, payload={"checks": []}, schema_version=9)
    with pytest.raises(ValueError, match="newer"):
        fold(chain(submitted_event(), v9))


def test_a_payload_that_breaks_its_model_is_a_corrupt_log() -> None:
    bad = NewEvent(type=E.VERIFIED, payload={"facts": None}, schema_version=2)
    with pytest.raises(ValueError):
        fold(chain(submitted_event(), bad))


def test_every_event_type_the_decider_writes_is_registered() -> None:
    registered = set(EVENTS.types)
    declared = {v for k, v in vars(E).items() if not k.startswith("_")}
    assert registered == declared
