"""The shape of a programme's decider: ``decide(command, state) -> events`` and
``evolve(state, event) -> state``, with the fold the service, the tests and the auditors share."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import singledispatch
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from shared.contracts import Envelope, NewEvent

if TYPE_CHECKING:
    from functools import _SingleDispatchCallable

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
    def last_hash(self) -> str: ...
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
        return fold_events(self.evolve, events)


def fold_events(evolve: Callable[[S | None, Envelope], S], events: Iterable[Envelope]) -> S | None:
    """The state ``events`` leave behind, folded with ``evolve`` from nothing."""
    state: S | None = None
    for event in events:
        state = evolve(state, event)
    return state


def decide_by_command() -> _SingleDispatchCallable[list[NewEvent]]:
    """A new ``decide(command, state)`` dispatching on the command's type: register one
    function per command with ``@decide.register``; an unknown command is a ``TypeError``."""

    @singledispatch
    def decide(command: Any, state: Any) -> list[NewEvent]:
        raise TypeError(f"no decider for {type(command).__name__}")

    return decide
