"""A budget or capacity pool's total, as the catalogue sets it: opened, topped up, cut.

A programme's budget (voucher) and a fund's capacity (fund) are pools: ``total`` is what
the catalogue grants, ``available`` what approvals can still hold from it (the rest is
held for approved applications or already paid out). The catalogue file is where a
ministry changes a total; the service applies the change at startup, as an event on the
pool's own stream, and moves ``total`` and ``available`` by the same amount.

The event types are the programme's own (each service names them and the pool's id
field), built on the three payload shapes here:

- **opened**: the pool's first event: the total (and what was available) it starts the
  log with. For a pool created by this start it is the catalogue's total, all available;
  for one that existed before its totals were recorded as events, its total and
  available as found (a change the file makes then follows as a second event).
- **topped up** / **cut**: the catalogue's total differs from the recorded one. Two types
  rather than one signed change: ``change`` is always a positive amount of won, as every
  other amount in the log is, and an analyst filtering the stream for cuts names the type.

**A cut larger than what is available is refused, whole.** Money held for approved
applications or paid out cannot be taken back by editing a file: the ministry asked for a
total below what it has already committed. Cutting only down to what is available would
leave the recorded total differing from the file's with no one having decided that
figure, and each later start would cut again by whatever had been given back meanwhile.
So the service refuses to start, naming every pool it cannot cut, the total asked, what
is committed and the lowest total it could cut to; nothing of that start is written (the
other pools' changes neither). The file is corrected (or the cut waits until enough is
given back), and the next start applies it.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar

from pydantic import Field, model_validator

from shared.domain.events import EventPayload

Won = Annotated[int, Field(ge=0, le=2**53 - 1)]
"""An amount of integer won, at most what a JSON number carries exactly."""
Digest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class CatalogueFacts(EventPayload):
    """The catalogue the change was read from (a base: not an event type of its own)."""

    catalogue_version: str
    """The ``version`` the catalogue document declares."""
    catalogue_digest: Digest
    """SHA-256 (hex) of the document's RFC 8785 canonical JSON: which file it was, exactly,
    whatever its whitespace."""


class PoolOpened(CatalogueFacts):
    """The pool's first recorded total (a base: each programme names its type and id)."""

    total: Won
    available: Won
    """All of ``total`` for a pool opened now; for a pool older than its events, what was
    available when its total was first recorded."""

    @model_validator(mode="after")
    def _within_total(self) -> PoolOpened:
        if self.available > self.total:
            raise ValueError(f"available {self.available} exceeds the total {self.total}")
        return self


class PoolChanged(CatalogueFacts):
    """The catalogue moved the pool's total; ``available`` moved with it (a base)."""

    direction: ClassVar[int]
    """+1 for a top-up, -1 for a cut."""

    previous_total: Won
    new_total: Won
    change: Annotated[int, Field(gt=0, le=2**53 - 1)]
    """How much the total (and what is available) moved, in won: always positive, the
    event type says which way."""
    previous_available: Won
    new_available: Won

    @model_validator(mode="after")
    def _figures_add_up(self) -> PoolChanged:
        moved = self.direction * self.change
        if self.new_total - self.previous_total != moved:
            raise ValueError("the totals do not differ by the change")
        if self.new_available - self.previous_available != moved:
            raise ValueError("what is available did not move by the change")
        if self.new_available > self.new_total:
            raise ValueError("more would be available than the total")
        return self


class PoolToppedUp(PoolChanged):
    direction: ClassVar[int] = 1


class PoolCut(PoolChanged):
    direction: ClassVar[int] = -1


@dataclass(frozen=True, slots=True)
class PoolEvents:
    """One programme's pool event types, and how they name the pool."""

    opened: type[PoolOpened]
    topped_up: type[PoolChanged]
    cut: type[PoolChanged]
    id_field: str
    """The payload field that names the pool (``programme_id``, ``fund_id``)."""
    noun: str
    """What the pool is called in messages (``budget``, ``capacity``)."""


@dataclass(frozen=True, slots=True)
class Catalogue:
    version: str
    digest: str


@dataclass(frozen=True, slots=True)
class Recorded:
    """Where a pool stands in the database: its row (None: no row yet) and whether its
    stream holds its opening event."""

    total: int | None
    available: int | None
    opened: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cut the pool cannot take: ``wanted`` is below what is committed."""

    pool_id: str
    noun: str
    wanted: int
    total: int
    available: int

    def __str__(self) -> str:
        committed = self.total - self.available
        return (
            f"{self.noun} {self.pool_id}: the catalogue cuts it from {self.total:,} to "
            f"{self.wanted:,} won, but {committed:,} won is held for approved applications "
            f"or paid out and only {self.available:,} won is available; the lowest total it "
            f"can be cut to now is {committed:,} won"
        )


class CutRefused(ValueError):
    """The catalogue cuts one or more pools below what they have committed: the service
    does not start, and nothing of the catalogue's changes is recorded."""

    def __init__(self, refusals: Sequence[Refusal]) -> None:
        self.refusals = tuple(refusals)
        super().__init__(
            "the catalogue cannot be applied, nothing was changed: "
            + "; ".join(str(r) for r in self.refusals)
        )


def reconcile(
    kinds: PoolEvents, pool_id: str, recorded: Recorded, wanted: int, catalogue: Catalogue
) -> tuple[list[EventPayload], tuple[int, int]] | Refusal:
    """The events that bring the pool to the catalogue's ``wanted`` total, and the
    ``(total, available)`` it has after them; or the refusal of a cut below what it has
    committed. No events when the recorded total is the catalogue's already."""
    facts = {
        kinds.id_field: pool_id,
        "catalogue_version": catalogue.version,
        "catalogue_digest": catalogue.digest,
    }
    found: list[EventPayload] = []
    if recorded.total is None or recorded.available is None:
        total = available = wanted
        found.append(kinds.opened(**facts, total=wanted, available=wanted))
        return found, (total, available)
    total, available = recorded.total, recorded.available
    if not recorded.opened:
        found.append(kinds.opened(**facts, total=total, available=available))
    if wanted == total:
        return found, (total, available)
    change = abs(wanted - total)
    if wanted < total and change > available:
        return Refusal(pool_id, kinds.noun, wanted, total, available)
    make = kinds.topped_up if wanted > total else kinds.cut
    new_available = available + (wanted - total)
    found.append(
        make(
            **facts,
            previous_total=total,
            new_total=wanted,
            change=change,
            previous_available=available,
            new_available=new_available,
        )
    )
    return found, (wanted, new_available)


def total_after(payload: EventPayload) -> int | None:
    """The pool's total once ``payload`` is applied (None for another kind of event)."""
    if isinstance(payload, PoolChanged):
        return payload.new_total
    if isinstance(payload, PoolOpened):
        return payload.total
    return None


__all__ = [
    "Catalogue",
    "CatalogueFacts",
    "CutRefused",
    "PoolChanged",
    "PoolCut",
    "PoolEvents",
    "PoolOpened",
    "PoolToppedUp",
    "Recorded",
    "Refusal",
    "reconcile",
    "total_after",
]
