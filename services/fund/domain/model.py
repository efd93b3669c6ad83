"""The state of a fund application: the fold of its events (auditors run the same fold)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum, auto
from typing import Literal, NamedTuple

from services.fund.domain import events as ev
from services.fund.domain.funds import Committee
from shared.contracts import Envelope
from shared.domain import Firm, Reason, ReasonPayload, advanced, fold_events, opening


class Status(StrEnum):
    """Where an application stands (each member's value is its name in lower case)."""

    SUBMITTED = auto()
    VERIFIED = auto()
    REJECTED = auto()
    APPROVED = auto()
    COMMITTED = auto()
    COMPLETED = auto()
    CANCELLED = auto()
    WITHDRAWN = auto()


OPEN_STATUSES = frozenset({Status.SUBMITTED, Status.VERIFIED, Status.APPROVED, Status.COMMITTED})
"""Not yet settled: still to be decided, committed, or paid out."""

TrancheStatus = Literal["planned", "released", "paid", "cancelled"]


@dataclass(frozen=True, slots=True)
class Tranche:
    number: int
    """Counted from 1, in the order the tranches are released."""
    amount: int
    milestone: str
    status: TrancheStatus = "planned"
    milestone_evidence: str | None = None
    """What the releasing officer accepted as proof of the milestone."""
    released_by: str | None = None
    payout_id: str | None = None
    """The payout that paid it, once paid."""


class Ballot(NamedTuple):
    """One committee member's vote."""

    member: str
    vote: ev.VoteChoice
    reason: str
    conflict_of_interest: bool
    """Declared by the member: the ballot is recorded, and not counted."""
    at: datetime

    @property
    def counted(self) -> bool:
        return not self.conflict_of_interest


def tally_of(committee: Committee, ballots: Sequence[Ballot]) -> ev.Tally:
    """Who voted how, and who has still to vote (conflicted members have voted: they are out)."""
    counted = [b for b in ballots if b.counted]
    voted = {b.member for b in ballots}
    return ev.Tally(
        quorum=committee.quorum,
        in_favour=tuple(b.member for b in counted if b.vote is ev.VoteChoice.FOR),
        against=tuple(b.member for b in counted if b.vote is ev.VoteChoice.AGAINST),
        conflicted=tuple(b.member for b in ballots if not b.counted),
        not_voted=tuple(m for m in committee.members if m not in voted),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Application:
    """One firm's application to one fund, and the investment it becomes."""

    id: str
    status: Status
    firm_id: str
    """The owner: the ``firm_id`` of the token that submitted it."""
    terms: ev.ApplicationSubmitted
    """What the firm applied for, exactly as it was submitted."""
    tranches: tuple[Tranche, ...]
    ballots: tuple[Ballot, ...] = ()
    """The committee's votes, in the order they were cast."""
    facts: ev.VerificationFacts | None = None
    """What verification compared (also on a verification rejection)."""
    approved_amount: int | None = None
    rejection_reasons: tuple[Reason, ...] = ()
    committed_on: date | None = None
    """The commitment date (the grant counts against the support of its year)."""
    co_investment_ids: tuple[str, ...] = ()
    returned_amount: int = 0
    """Money given back to the fund when the investment was cancelled."""
    submitted_by: str
    created_at: datetime
    """The submission moment: verification applies the rules as of its date in Korea."""
    updated_at: datetime
    version: int
    last_hash: str

    @property
    def fund_id(self) -> str:
        return self.terms.fund_id

    @property
    def firm(self) -> Firm:
        """The firm as the application declares it."""
        return self.terms.firm

    @property
    def amount(self) -> int:
        return self.terms.amount

    @property
    def cost_reference(self) -> str:
        return self.terms.cost_reference

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def committee(self) -> Committee | None:
        """The committee pinned at verification, whose members vote."""
        return self.facts.committee if self.facts is not None else None

    @property
    def tally(self) -> ev.Tally | None:
        committee = self.committee
        return tally_of(committee, self.ballots) if committee is not None else None

    @property
    def votes_for(self) -> int:
        """The ``for`` votes that count (``len(tally.in_favour)``, without building the tally)."""
        return sum(1 for b in self.ballots if b.counted and b.vote is ev.VoteChoice.FOR)

    @property
    def paid_amount(self) -> int:
        return sum(t.amount for t in self.tranches if t.status == "paid")

    @property
    def next_planned(self) -> Tranche | None:
        return next((t for t in self.tranches if t.status == "planned"), None)

    def tranche(self, number: int) -> Tranche | None:
        return next((t for t in self.tranches if t.number == number), None)

    def ballot_of(self, member: str) -> Ballot | None:
        return next((b for b in self.ballots if b.member == member), None)


def fold(events: Iterable[Envelope]) -> Application | None:
    """The application ``events`` leave behind (None for no events)."""
    return fold_events(evolve, events)


def evolve(state: Application | None, event: Envelope) -> Application:
    """Apply one event; an event that makes no sense for the state is a corrupt log."""
    payload = ev.EVENTS.parse(event)
    if isinstance(payload, ev.ApplicationSubmitted):
        if state is not None:
            raise ValueError(f"{event.aggregate_id}: submitted twice")
        return _application(payload, event)
    if state is None:
        raise ValueError(f"{event.aggregate_id}: {event.type} before submission")
    now = advanced(state, event)

    def only_when(*statuses: Status) -> None:
        if state.status not in statuses:
            raise ValueError(f"{event.aggregate_id}: {event.type} while {state.status}")

    match payload:
        case ev.ApplicationVerified(facts=facts):
            only_when(Status.SUBMITTED)
            return replace(now, status=Status.VERIFIED, facts=facts)
        case ev.ApplicationRejected(stage="verification", reasons=reasons, facts=facts):
            only_when(Status.SUBMITTED)
            return replace(
                now, status=Status.REJECTED, rejection_reasons=_reasons(reasons), facts=facts
            )
        case ev.ApplicationRejected(stage="commitment", reasons=reasons):
            only_when(Status.APPROVED)
            return replace(now, status=Status.REJECTED, rejection_reasons=_reasons(reasons))
        case ev.ApplicationRejected(reasons=reasons):
            only_when(Status.VERIFIED)
            return replace(now, status=Status.REJECTED, rejection_reasons=_reasons(reasons))
        case ev.VoteRecorded():
            only_when(Status.VERIFIED)
            ballot = Ballot(
                payload.member,
                payload.vote,
                payload.reason,
                payload.conflict_of_interest,
                event.occurred_at,
            )
            return replace(now, ballots=(*state.ballots, ballot))
        case ev.ApplicationApproved(amount=amount):
            only_when(Status.VERIFIED)
            return replace(now, status=Status.APPROVED, approved_amount=amount)
        case ev.ApplicationWithdrawn():
            only_when(Status.SUBMITTED, Status.VERIFIED)
            return replace(now, status=Status.WITHDRAWN)
        case ev.InvestmentCommitted(amount=amount, committed_on=committed_on):
            only_when(Status.APPROVED)
            if amount != state.approved_amount:
                approved = state.approved_amount
                raise ValueError(f"{event.aggregate_id}: committed {amount}, approved {approved}")
            return replace(now, status=Status.COMMITTED, committed_on=committed_on)
        case ev.CoInvestmentRecorded(co_investment_id=co_investment_id):
            only_when(Status.COMMITTED)
            return replace(now, co_investment_ids=(*state.co_investment_ids, co_investment_id))
        case ev.TrancheReleased(number=number):
            only_when(Status.COMMITTED)
            tranche = _tranche(state, number, "planned", event)
            released = replace(
                tranche,
                status="released",
                milestone_evidence=payload.milestone_evidence,
                released_by=payload.officer,
            )
            return replace(now, tranches=_with(state.tranches, released))
        case ev.TranchePaid(number=number, payout_id=payout_id):
            only_when(Status.COMMITTED)
            tranche = _tranche(state, number, "released", event)
            paid = replace(tranche, status="paid", payout_id=payout_id)
            return replace(now, tranches=_with(state.tranches, paid))
        case ev.InvestmentCompleted():
            only_when(Status.COMMITTED)
            if any(t.status != "paid" for t in state.tranches):
                raise ValueError(f"{event.aggregate_id}: completed with tranches unpaid")
            return replace(now, status=Status.COMPLETED)
        case ev.InvestmentCancelled(returned_amount=returned, cancelled_tranches=numbers):
            only_when(Status.COMMITTED)
            unpaid = sum(t.amount for t in state.tranches if t.number in numbers)
            if returned != unpaid or state.paid_amount + unpaid != state.amount:
                raise ValueError(f"{event.aggregate_id}: {returned} won returned of {unpaid}")
            tranches = tuple(
                replace(t, status="cancelled") if t.number in numbers else t for t in state.tranches
            )
            return replace(
                now, status=Status.CANCELLED, tranches=tranches, returned_amount=returned
            )
    raise ValueError(f"{event.aggregate_id}: {event.type} is not an application event")


def _application(payload: ev.ApplicationSubmitted, event: Envelope) -> Application:
    numbered = enumerate(payload.tranches, start=1)
    planned = tuple(Tranche(n, terms.amount, terms.milestone) for n, terms in numbered)
    return Application(**opening(event), terms=payload, status=Status.SUBMITTED, tranches=planned)


def _reasons(reasons: Iterable[ReasonPayload]) -> tuple[Reason, ...]:
    return tuple(Reason(r.code, r.message) for r in reasons)


def _tranche(state: Application, number: int, expected: str, event: Envelope) -> Tranche:
    tranche = state.tranche(number)
    if tranche is None or tranche.status != expected:
        raise ValueError(f"{event.aggregate_id}: {event.type} for tranche {number}: {tranche}")
    return tranche


def _with(tranches: tuple[Tranche, ...], changed: Tranche) -> tuple[Tranche, ...]:
    return tuple(changed if t.number == changed.number else t for t in tranches)


__all__ = [
    "OPEN_STATUSES",
    "Application",
    "Ballot",
    "Status",
    "Tranche",
    "TrancheStatus",
    "evolve",
    "fold",
    "tally_of",
]
