"""Given events / when command / then events, for any programme's decider.

A :class:`DecidedStream` decides each command against the current state, seals the new
events onto the application's chain (prev_hash linked, aggregate_seq counting from 1)
and folds them in with the programme's ``evolve``: the same path the service takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Generic, Self, TypeVar

from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent
from shared.domain import Decider

FIRM_ID = "123-45-67890"
T0 = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
S = TypeVar("S")


def sealed(event: NewEvent, actor: Actor, *, seq: int = 1, at: datetime = T0) -> Envelope:
    """``event`` sealed alone as link ``seq`` of application ``app-x`` (for corrupt logs)."""
    return Envelope.seal(
        aggregate_id="app-x",
        aggregate_seq=seq,
        event=event,
        occurred_at=at,
        actor=actor,
        firm_id=FIRM_ID,
        correlation_id="corr-x",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


@dataclass
class DecidedStream(Generic[S]):
    """One application's log, built by deciding commands against its own fold."""

    decider: ClassVar[Decider[Any]]
    actor_for: ClassVar[Callable[[Any], Actor]]
    """Who sends each kind of command in the running service."""

    application_id: str = "app-1"
    token_firm_id: str = FIRM_ID
    """The ``firm_id`` of the submitter's token, carried by every event of the application."""
    envelopes: list[Envelope] = field(default_factory=list)
    state: S | None = None
    clock: datetime = T0

    def when(self, command: Any, *, by: Actor | None = None) -> list[NewEvent]:
        """Decide ``command`` against the current state, append what it decides, return it."""
        new_events = list(self.decider.decide(command, self.state))
        actor = by or type(self).actor_for(command)
        for event in new_events:
            self.clock += timedelta(minutes=1)
            envelope = Envelope.seal(
                aggregate_id=self.application_id,
                aggregate_seq=len(self.envelopes) + 1,
                event=event,
                occurred_at=self.clock,
                actor=actor,
                firm_id=self.token_firm_id,
                correlation_id=f"corr-{self.application_id}",
                causation_id=self.envelopes[-1].event_id if self.envelopes else None,
                prev_hash=self.envelopes[-1].hash if self.envelopes else GENESIS_HASH,
            )
            self.envelopes.append(envelope)
            self.state = self.decider.evolve(self.state, envelope)
        return new_events

    def given(self, *commands: Any) -> Self:
        for command in commands:
            self.when(command)
        return self

    def later(self, delta: timedelta) -> Self:
        """Let time pass before the next command (a lagging consumer, a slow officer)."""
        self.clock += delta
        return self

    @property
    def app(self) -> S:
        assert self.state is not None, "nothing was submitted"
        return self.state

    def replayed(self) -> S | None:
        return self.decider.fold(self.envelopes)


def types(events: list[NewEvent]) -> list[str]:
    return [e.type for e in events]
