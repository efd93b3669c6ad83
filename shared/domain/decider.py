"""The shape of a programme's decider: ``decide(command, state) -> events`` and
``evolve(state, event) -> state``, with the fold the service, the tests and the auditors share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from shared.contracts import Envelope, NewEvent

S = TypeVar("S", bound="ProcessedState")


class ProcessedState(Protocol):
    """What the service kit reads from any programme's application state."""

    @property
    def id(self) -> str: ...
    @property
    def firm_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Decider(Generic[S]):
    """One programme's pure functions, as the kit and the auditors use them."""

    decide: Callable[[Any, S | None], Sequence[NewEvent]]
    evolve: Callable[[S | None, Envelope], S]

    def fold(self, events: Iterable[Envelope]) -> S | None:
        state: S | None = None
        for event in events:
            state = self.evolve(state, event)
        return state
