"""Replaying a programme's log as it stood at a moment: each application folded with its
programme's own ``evolve`` from the events that had occurred by then. Pure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from services.oversight.domain.standing import PROGRAMMES, Standing, is_application, standing
from shared.contracts import Envelope


def replay(
    service: str, events: Iterable[Envelope], as_of: datetime | None = None
) -> tuple[list[Standing], dict[str, str]]:
    """The standing of every application of ``service`` at ``as_of`` (None: all events),
    by application id; and, by application id, why a stream did not fold (a finding).

    ``events`` in any order, redelivered copies allowed: one per ``event_id``."""
    if service not in PROGRAMMES:
        raise ValueError(f"no programme service {service!r}")
    streams: dict[str, dict[int, Envelope]] = defaultdict(dict)
    for event in events:
        if as_of is not None and event.occurred_at > as_of:
            continue
        streams[event.aggregate_id].setdefault(event.aggregate_seq, event)
    found: list[Standing] = []
    unreadable: dict[str, str] = {}
    for aggregate_id, by_seq in sorted(streams.items()):
        ordered = [by_seq[n] for n in sorted(by_seq)]
        if not is_application(service, ordered[0]):
            continue
        try:
            found.append(standing(service, ordered))
        except ValueError as error:
            unreadable[aggregate_id] = str(error)
    return found, unreadable


__all__ = ["replay"]
