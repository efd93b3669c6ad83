"""Where an application stands, as oversight sees it: the fold of its events with its
programme's own ``evolve``, reduced to what a ministry watches (status, how long in it,
the money it holds or moved). Pure: the read model and the audit tools share it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.fund.domain import events as fund_events
from services.fund.domain import model as fund
from services.taxcredit.domain import events as taxcredit_events
from services.taxcredit.domain import model as taxcredit
from services.voucher.domain import events as voucher_events
from services.voucher.domain import model as voucher
from shared.contracts import Envelope
from shared.domain import EventRegistry
from shared.domain.pools import PoolEvents, total_after
from shared.domain.support import SupportConflictDetected


@dataclass(frozen=True, slots=True)
class Money:
    """What one application holds or moved, in won.

    ``committed``: held on a budget or fund and not yet paid out (voucher: approved or
    issued and not yet redeemed and paid; fund: committed and not yet disbursed);
    ``paid``: paid redemptions, disbursed tranches; ``certified`` and ``clawed_back``:
    tax credits on certificates and taken back from them."""

    committed: int = 0
    paid: int = 0
    certified: int = 0
    clawed_back: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    """An application left ``from_status`` for ``to_status`` after ``seconds`` in it."""

    event_id: str
    from_status: str
    to_status: str
    at: datetime
    seconds: float


@dataclass(frozen=True, slots=True)
class Standing:
    service: str
    application_id: str
    programme_id: str
    firm_id: str
    cluster: str
    status: str
    is_open: bool
    version: int
    status_since: datetime
    updated_at: datetime
    money: Money
    transitions: tuple[Transition, ...]


@dataclass(frozen=True, slots=True)
class Programme:
    """One programme service as oversight folds it."""

    service: str
    evolve: Callable[[Any, Envelope], Any]
    programme_of: Callable[[Any], str]
    money_of: Callable[[Any], Money]


def _voucher_money(state: voucher.Application) -> Money:
    paid = sum(r.amount for r in state.redemptions if r.status == "paid")
    if state.voucher is not None:
        return Money(committed=state.voucher.amount - paid - state.returned_amount, paid=paid)
    if state.status == voucher.Status.APPROVED:
        return Money(committed=state.approved_amount or 0)
    return Money()


def _fund_money(state: fund.Application) -> Money:
    if state.committed_on is None:
        return Money()
    paid = state.paid_amount
    return Money(committed=state.amount - paid - state.returned_amount, paid=paid)


def _taxcredit_money(state: taxcredit.Application) -> Money:
    certificate = state.certificate
    return Money(
        certified=certificate.original_amount if certificate is not None else 0,
        clawed_back=sum(c.amount for c in state.clawbacks),
    )


PROGRAMMES: dict[str, Programme] = {
    "voucher": Programme("voucher", voucher.evolve, lambda s: s.programme_id, _voucher_money),
    "taxcredit": Programme(
        "taxcredit", taxcredit.evolve, lambda s: str(s.programme), _taxcredit_money
    ),
    "fund": Programme("fund", fund.evolve, lambda s: s.fund_id, _fund_money),
}
"""The programme services whose applications oversight folds, by service name."""

EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        {
            *fund_events.EVENTS.types,
            *taxcredit_events.EVENTS.types,
            *voucher_events.EVENTS.types,
            SupportConflictDetected.event_type,
        }
    )
)
"""Every event type the programmes publish (each is an SSE event name on the stream)."""


POOLS: dict[str, tuple[EventRegistry, PoolEvents]] = {
    "voucher": (voucher_events.EVENTS, voucher_events.BUDGET_EVENTS),
    "fund": (fund_events.EVENTS, fund_events.CAPACITY_EVENTS),
}
"""The programme services whose budgets or capacities are pools the catalogue sets."""

POOL_EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        kind.event_type
        for _, kinds in POOLS.values()
        for kind in (kinds.opened, kinds.topped_up, kinds.cut)
    )
)
"""The events that set a budget's or a fund capacity's total."""


def pool_totals(events: Iterable[tuple[str, Envelope]]) -> dict[tuple[str, str], int]:
    """Each budget's and fund capacity's total as its last event set it, by ``(service,
    pool id)``, from ``(service, envelope)`` pairs of :data:`POOL_EVENT_TYPES` in any order
    (copies allowed): what the service's pool holds as its total, folded from the log."""
    last: dict[tuple[str, str], Envelope] = {}
    for service, envelope in events:
        key = (service, envelope.aggregate_id)
        if key not in last or last[key].aggregate_seq < envelope.aggregate_seq:
            last[key] = envelope
    totals: dict[tuple[str, str], int] = {}
    for (service, _), envelope in sorted(last.items()):
        registry, kinds = POOLS[service]
        payload = registry.parse(envelope)
        total = total_after(payload)
        if total is not None:
            totals[(service, str(getattr(payload, kinds.id_field)))] = total
    return totals


def is_application(service: str, first: Envelope) -> bool:
    """An aggregate is an application when its first event is its programme's submission
    (others: providers, rate tables, support conflicts)."""
    return first.aggregate_seq == 1 and first.type == f"{service}.application.submitted"


def standing(service: str, events: Sequence[Envelope]) -> Standing:
    """The standing the application's ``events`` (its whole stream, in order) leave.

    Raises ``ValueError`` when the stream does not fold (a gap, a corrupt event)."""
    programme = PROGRAMMES[service]
    state: Any = None
    since: datetime | None = None
    transitions: list[Transition] = []
    for number, event in enumerate(events, start=1):
        if event.aggregate_seq != number:
            raise ValueError(
                f"{event.aggregate_id}: event {event.aggregate_seq} where {number} belongs"
            )
        before = None if state is None else str(state.status)
        state = programme.evolve(state, event)
        after = str(state.status)
        if after != before:
            if before is not None and since is not None:
                seconds = max((event.occurred_at - since).total_seconds(), 0.0)
                transitions.append(
                    Transition(event.event_id, before, after, event.occurred_at, seconds)
                )
            since = event.occurred_at
    if state is None or since is None:
        raise ValueError("no events to fold")
    return Standing(
        service=service,
        application_id=state.id,
        programme_id=programme.programme_of(state),
        firm_id=state.firm_id,
        cluster=state.firm.cluster,
        status=str(state.status),
        is_open=bool(state.is_open),
        version=state.version,
        status_since=since,
        updated_at=state.updated_at,
        money=programme.money_of(state),
        transitions=tuple(transitions),
    )


__all__ = [
    "POOLS",
    "POOL_EVENT_TYPES",
    "PROGRAMMES",
    "Money",
    "Programme",
    "Standing",
    "Transition",
    "is_application",
    "pool_totals",
    "standing",
]
