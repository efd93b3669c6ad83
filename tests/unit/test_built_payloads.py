"""A fold right after a decision takes the payload models the decider built instead of
validating their dumps back: this holds only if validating a dump gives the same model,
which is checked here for every event of each programme's longest lifecycles."""

from __future__ import annotations

from typing import Any

import pytest

from services.fund.domain import events as fund_events
from services.taxcredit.domain import events as taxcredit_events
from services.voucher.domain import events as voucher_events
from shared.contracts import Envelope
from shared.domain import EventRegistry
from tests.unit import fund_builders as fund
from tests.unit import taxcredit_builders as taxcredit
from tests.unit import voucher_builders as voucher
from tests.unit.streams import DecidedStream, sealed


def fund_lifecycle() -> DecidedStream[Any]:
    return fund.committed().given(fund.release(1), fund.pay(1), fund.release(2), fund.pay(2))


def fund_cancelled() -> DecidedStream[Any]:
    return fund.committed().given(fund.release(1), fund.pay(1), fund.cancel())


def fund_rejected() -> DecidedStream[Any]:
    return fund.verified().given(
        fund.vote_against(fund.OFFICER_KIM), fund.conflicted(fund.OFFICER_LEE)
    )


def voucher_lifecycle() -> DecidedStream[Any]:
    return voucher.issued().given(voucher.redeem(1_000_000, redemption_id="r-1"))


def taxcredit_lifecycle() -> DecidedStream[Any]:
    return taxcredit.certified().given(taxcredit.claw_back())


@pytest.mark.parametrize(
    ("lifecycle", "registry"),
    [
        (fund_lifecycle, fund_events.EVENTS),
        (fund_cancelled, fund_events.EVENTS),
        (fund_rejected, fund_events.EVENTS),
        (voucher_lifecycle, voucher_events.EVENTS),
        (taxcredit_lifecycle, taxcredit_events.EVENTS),
    ],
)
def test_a_built_payload_is_what_its_event_read_back_gives(
    lifecycle: Any, registry: EventRegistry
) -> None:
    stream = lifecycle()
    nothing_cached = EventRegistry(registry.service, registry.types.values())
    assert len(stream.envelopes) >= 5
    for envelope in stream.envelopes:
        as_built = registry.parse(envelope)  # folded already: the decider's own model
        read_back = Envelope.model_validate_json(envelope.model_dump_json())
        assert nothing_cached.parse(read_back) == as_built, envelope.type
    assert (
        stream.decider.fold(
            [Envelope.model_validate_json(e.model_dump_json()) for e in stream.envelopes]
        )
        == stream.state
    )


def test_the_fold_of_a_new_event_takes_the_model_it_was_built_from() -> None:
    built = fund_events.ApplicationWithdrawn(reason="we closed a private round")
    envelope = sealed(built.event(), fund.FIRM_USER)
    copy = Envelope.model_validate_json(envelope.model_dump_json())

    assert fund_events.EVENTS.parse(envelope) is built
    other = EventRegistry("fund", fund_events.EVENTS.types.values())
    parsed = other.parse(copy)  # another dict, though equal: validated
    assert parsed == built and parsed is not built
