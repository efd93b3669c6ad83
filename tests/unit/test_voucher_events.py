"""Voucher events written before cross-programme support limits stay readable, as written.

``voucher.voucher.issued`` version 1 carried the voucher only; version 2 carries the grant
the other programmes read (firm, year, programme, cost). Submissions and verifications
gained optional members, so their old payloads read as they are.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.voucher.domain.events import EVENTS, ApplicationSubmitted, E, VoucherIssued
from services.voucher.domain.model import Status, fold
from shared.asyncapi import asyncapi_document
from shared.contracts import Actor, Envelope, NewEvent, Role, verify_chain
from shared.domain.support import SupportConflictDetected, grant_of
from tests.unit.voucher_builders import (
    FIRM_ID,
    LAW_FIRM,
    TODAY,
    VoucherStream,
    approved,
    redeem,
    submitted,
    verified,
)

ISSUER = Actor(sub="voucher-issue", role=Role.SYSTEM)
NEW_YEAR_IN_SEOUL = datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
"""1 January 2027, 01:00 in Korea."""

V1_ISSUED = NewEvent(
    type=E.ISSUED,
    payload={"voucher_id": "vch-old", "amount": 8_000_000, "expires_on": "2027-12-31"},
    schema_version=1,
)


def appended(
    stream: VoucherStream, event: NewEvent, *, at: datetime, actor: Actor = ISSUER
) -> list[Envelope]:
    """``stream``'s log with ``event`` sealed onto its end, as an older service wrote it."""
    last = stream.envelopes[-1]
    envelope = Envelope.seal(
        aggregate_id=last.aggregate_id,
        aggregate_seq=last.aggregate_seq + 1,
        event=event,
        occurred_at=at,
        actor=actor,
        firm_id=FIRM_ID,
        correlation_id=last.correlation_id,
        causation_id=last.event_id,
        prev_hash=last.hash,
    )
    return [*stream.envelopes, envelope]


def test_a_version_1_voucher_issued_event_is_read_through_its_upcaster() -> None:
    log = appended(approved(8_000_000), V1_ISSUED, at=NEW_YEAR_IN_SEOUL)
    assert verify_chain([e.to_json_dict() for e in log]).ok  # the old event stays as written
    assert "firm_id" not in log[-1].payload

    parsed = EVENTS.parse(log[-1])

    assert isinstance(parsed, VoucherIssued)
    assert (parsed.voucher_id, parsed.amount, str(parsed.expires_on)) == (
        "vch-old",
        8_000_000,
        "2027-12-31",
    )
    assert parsed.programme == "voucher"
    assert (parsed.firm_id, parsed.year, parsed.cost_reference) == (None, None, None)
    state = fold(log)
    assert state is not None and state.status is Status.ISSUED
    assert state.voucher is not None and state.voucher.balance == 8_000_000


def test_a_version_1_voucher_still_counts_as_a_grant_of_its_firm_in_its_korean_year() -> None:
    log = appended(approved(8_000_000), V1_ISSUED, at=NEW_YEAR_IN_SEOUL)

    grant = grant_of(log[-1])

    assert grant is not None
    assert (grant.programme, grant.firm_id, grant.amount) == ("voucher", FIRM_ID, 8_000_000)
    assert grant.year == 2027  # 31 December in UTC, but already 1 January in Korea
    assert grant.cost_reference is None


def test_a_version_1_voucher_can_still_be_redeemed() -> None:
    stream = approved(8_000_000)
    log = appended(stream, V1_ISSUED, at=NEW_YEAR_IN_SEOUL)
    stream.envelopes = log
    stream.state = fold(log)

    stream.when(redeem(3_000_000, provider=LAW_FIRM, today=TODAY))

    assert stream.app.voucher is not None and stream.app.voucher.balance == 5_000_000


def test_a_version_2_voucher_issued_event_without_its_grant_members_is_a_corrupt_log() -> None:
    v2_without = NewEvent(type=E.ISSUED, payload=V1_ISSUED.payload, schema_version=2)
    log = appended(approved(8_000_000), v2_without, at=NEW_YEAR_IN_SEOUL)

    with pytest.raises(ValueError, match="firm_id"):
        fold(log)


def test_a_submission_written_before_cost_references_reads_as_naming_no_cost() -> None:
    stream = submitted()
    [old] = stream.envelopes
    payload = {k: v for k, v in old.payload.items() if k != "cost_reference"}
    rewritten = NewEvent(type=old.type, payload=payload, schema_version=old.schema_version)
    envelope = Envelope.seal(
        aggregate_id=old.aggregate_id,
        aggregate_seq=1,
        event=rewritten,
        occurred_at=old.occurred_at,
        actor=old.actor,
        firm_id=old.firm_id,
        correlation_id=old.correlation_id,
        causation_id=None,
        prev_hash=old.prev_hash,
    )

    parsed = EVENTS.parse(envelope)

    assert isinstance(parsed, ApplicationSubmitted) and parsed.cost_reference is None
    state = fold([envelope])
    assert state is not None and state.cost_reference is None


def test_a_verification_written_before_support_limits_reads_as_comparing_no_support() -> None:
    stream = verified()
    verified_event = stream.envelopes[-1]
    facts = {k: v for k, v in verified_event.payload["facts"].items() if k != "support"}
    old = NewEvent(
        type=E.VERIFIED,
        payload={**verified_event.payload, "facts": facts},
        schema_version=2,
    )
    stream.envelopes = stream.envelopes[:-1]
    log = appended(stream, old, at=verified_event.occurred_at, actor=verified_event.actor)

    state = fold(log)

    assert state is not None and state.status is Status.VERIFIED
    assert state.verification is not None and state.verification.support is None


def test_the_support_conflict_event_is_a_voucher_event_listed_in_the_asyncapi_document() -> None:
    assert EVENTS.types[E.SUPPORT_CONFLICT] is SupportConflictDetected
    document = asyncapi_document(
        EVENTS,
        service="voucher",
        topic="voucher.events",
        title="Voucher events",
        description="The events of the voucher programme.",
        servers={"local": "localhost:9092"},
    )
    messages = document["components"]["messages"]
    assert "support_conflict_detected" in messages
    assert "payload schema version 2" in messages["voucher_voucher_issued"]["summary"]
