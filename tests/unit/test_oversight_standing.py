"""What oversight makes of an application's log, folded with its programme's own evolve:
status, time in it, and the money it holds or moved; and a replay as of a moment."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from services.oversight.adapters.stream import sse_event
from services.oversight.domain.replay import replay
from services.oversight.domain.standing import Money, is_application, standing
from tests.unit.voucher_builders import expire, issued, pay, redeem


def test_a_voucher_holds_its_amount_until_it_is_paid_or_given_back() -> None:
    stream = issued(8_000_000)
    now = standing("voucher", stream.envelopes)
    assert (now.status, now.is_open, now.version) == ("issued", True, len(stream.envelopes))
    assert now.money == Money(committed=8_000_000)
    assert [t.to_status for t in now.transitions] == ["verified", "approved", "issued"]
    assert now.status_since == stream.envelopes[-1].occurred_at

    stream.given(redeem(3_000_000), pay("rdm-prov-hanbit-law-INV-1"))
    paid = standing("voucher", stream.envelopes)
    assert paid.money == Money(committed=5_000_000, paid=3_000_000)
    assert paid.status_since == now.status_since  # a redemption is no change of status

    stream.given(expire(date(2028, 1, 1)))
    expired = standing("voucher", stream.envelopes)
    assert (expired.status, expired.is_open) == ("expired", False)
    assert expired.money == Money(committed=0, paid=3_000_000)


def test_a_stream_with_a_gap_does_not_fold() -> None:
    envelopes = issued().envelopes
    with pytest.raises(ValueError, match="where 3 belongs"):
        standing("voucher", [envelopes[0], envelopes[1], envelopes[3]])


def test_replay_as_of_a_moment_folds_only_what_had_occurred() -> None:
    events = issued(8_000_000).envelopes
    moment = events[1].occurred_at  # submitted and verified, not yet approved
    found, unreadable = replay("voucher", list(reversed(events)) * 2, moment)  # any order, twice
    assert unreadable == {}
    assert [(s.application_id, s.status, s.version) for s in found] == [("app-1", "verified", 2)]
    later, _ = replay("voucher", events, moment + timedelta(days=365))
    assert [(s.status, s.version) for s in later] == [("issued", len(events))]
    assert replay("voucher", events, events[0].occurred_at - timedelta(seconds=1)) == ([], {})
    assert is_application("voucher", events[0]) and not is_application("voucher", events[1])


def test_an_sse_event_cannot_grow_fields_of_its_own() -> None:
    """JSON may carry CR or LF between tokens, a type may carry anything: neither may
    start a line that an SSE client would read as an ``id:`` or an ``event:``."""
    text = sse_event(7, "x\nid: 99999\revent: y", '{"a":\r1,\r\n"b":\n2}')
    lines = text.split("\n")
    assert lines[0] == "id: 7"
    assert lines[1] == "event: x id: 99999 event: y"
    assert lines[2:] == ['data: {"a":', "data: 1,", 'data: "b":', "data: 2}", "", ""]
    assert "\r" not in text
