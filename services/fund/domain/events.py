"""The fund events: typed payloads, their schema versions, and the registry folds read.

Every event lives on the application's aggregate. ``fund.investment.committed`` is the
grant the other programmes read for cross-programme support limits;
``fund.co_investment.recorded`` tells taxcredit of a private co-investment, one event per
co-investor, under a stable ``co_investment_id``.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, model_validator

from services.fund.domain.funds import MAX_WON, Committee, Remit, Stage
from shared.domain import EventPayload, EventRegistry, Firm, Part, lifecycle
from shared.domain.pools import PoolCut, PoolEvents, PoolOpened, PoolToppedUp
from shared.domain.support import SupportConflictDetected, SupportFacts

AmountWon = Annotated[int, Field(gt=0, le=MAX_WON)]
"""A positive amount of integer won."""
SumWon = Annotated[int, Field(ge=0, le=MAX_WON)]
"""A total or remainder in integer won (may be nothing)."""
Ref = Annotated[str, Field(min_length=1, max_length=200)]
Note = Annotated[str, Field(max_length=2000)]

PROGRAMME: Final = "fund"
"""How grants of this service name their programme."""


class Instrument(StrEnum):
    EQUITY = "equity"
    CONVERTIBLE = "convertible"


class VoteChoice(StrEnum):
    FOR = "for"
    AGAINST = "against"


# --- what a firm applies with -------------------------------------------------------------


class TrancheTerms(Part):
    """One planned disbursement and the milestone that releases it."""

    amount: AmountWon
    milestone: Ref


class CoInvestor(Part):
    """A private investor investing alongside the fund."""

    investor_firm_id: Ref
    name: Ref
    amount: AmountWon


class DueDiligence(Part):
    """The due-diligence checklist; every item must be done before verification passes."""

    financials: bool
    ip: bool
    legal: bool
    site_visit: bool

    def missing(self) -> tuple[str, ...]:
        return tuple(item for item, done in self.model_dump().items() if not done)


# --- the facts decisions were made on ----------------------------------------------------------


class VerificationFacts(Part):
    """What verification compared, so an auditor can redo it from the log alone."""

    as_of: date
    """The submission's date in Korea."""
    catalogue_version: str
    fund_id: str
    stage: Stage
    industry: str
    remit: Remit | None
    """The fund's remit (None when the catalogue has no such fund)."""
    committee: Committee | None
    """The committee whose votes decide the application, pinned at verification."""
    amount: SumWon
    available_capacity: SumWon
    """What the fund had left to commit when verification ran."""
    support: SupportFacts
    """The other programmes' grants for the cost, and the firm's combined support in the year."""
    checks: tuple[str, ...]


class Tally(Part):
    """The committee's votes when one was cast (conflicted votes are recorded, not counted)."""

    quorum: int = Field(ge=1)
    in_favour: tuple[str, ...]
    against: tuple[str, ...]
    conflicted: tuple[str, ...]
    not_voted: tuple[str, ...]


# --- application events ------------------------------------------------------------------------


class ApplicationSubmitted(EventPayload):
    event_type: ClassVar[str] = "fund.application.submitted"

    fund_id: Ref
    firm: Firm
    stage: Stage
    tranches: tuple[TrancheTerms, ...] = Field(min_length=1)
    instrument: Instrument
    amount: AmountWon
    pre_money_valuation: AmountWon
    co_investors: tuple[CoInvestor, ...] = ()
    due_diligence: DueDiligence
    cost_reference: Ref
    """The cost the investment covers (checked against the other programmes' grants)."""

    @model_validator(mode="after")
    def _tranches_add_up(self) -> ApplicationSubmitted:
        planned = sum(t.amount for t in self.tranches)
        if planned != self.amount:
            raise ValueError(f"tranches sum to {planned} won, not the amount {self.amount}")
        return self


class ApplicationWithdrawn(lifecycle.WithdrawalPayload):
    """The firm withdrew before the committee approved."""

    event_type: ClassVar[str] = "fund.application.withdrawn"


class ApplicationVerified(EventPayload):
    event_type: ClassVar[str] = "fund.application.verified"

    facts: VerificationFacts


class ApplicationRejected(lifecycle.RejectionPayload):
    """Verification found the application wanting, the committee can no longer approve it,
    or (stage ``commitment``) the fund no longer had the capacity when it came to commit, or
    the support limits, checked again then, were passed."""

    event_type: ClassVar[str] = "fund.application.rejected"
    stage: Literal["verification", "decision", "commitment"]  # type: ignore[assignment]
    available_capacity: SumWon | None = None
    """At the commitment stage: what the fund (or a parent) had left when the hold failed."""
    facts: VerificationFacts | None = None
    tally: Tally | None = None


class VoteRecorded(EventPayload):
    """A committee member voted (a declared conflict of interest is recorded, not counted)."""

    event_type: ClassVar[str] = "fund.application.vote_recorded"

    member: Ref
    vote: VoteChoice
    reason: Note = ""
    conflict_of_interest: bool = False


class ApplicationApproved(lifecycle.ApprovalPayload):
    """The counted ``for`` votes reached quorum (``officer``: the member whose vote did)."""

    event_type: ClassVar[str] = "fund.application.approved"
    tally: Tally


# --- the investment ----------------------------------------------------------------------------


class InvestmentCommitted(EventPayload):
    """The grant: the fund commits the approved amount (read by the other programmes)."""

    event_type: ClassVar[str] = "fund.investment.committed"

    committed_on: date
    amount: AmountWon
    firm_id: str
    programme: Literal["fund"] = PROGRAMME
    year: int = Field(ge=1900, le=9999)
    """The year of ``committed_on``: the year whose combined support the grant counts in."""
    fund_id: Ref
    cost_reference: Ref


class CoInvestmentRecorded(CoInvestor, EventPayload):
    """A private co-investment alongside the fund's commitment (taxcredit may credit it):
    the co-investor as the application named it, and where the money went."""

    event_type: ClassVar[str] = "fund.co_investment.recorded"

    co_investment_id: Ref
    """``<application id>:<index>``, stable whoever replays the commitment."""
    fund_id: Ref
    investee_firm_id: str
    application_id: Ref


class TrancheReleased(EventPayload):
    """An officer accepted the evidence of a milestone: the tranche may be paid."""

    event_type: ClassVar[str] = "fund.tranche.released"

    number: int = Field(ge=1)
    amount: AmountWon
    milestone: Ref
    milestone_evidence: Note
    officer: Ref


class TranchePaid(EventPayload):
    event_type: ClassVar[str] = "fund.tranche.paid"

    number: int = Field(ge=1)
    amount: AmountWon
    payout_id: Ref


class InvestmentCompleted(EventPayload):
    """The last tranche was paid."""

    event_type: ClassVar[str] = "fund.investment.completed"

    paid_amount: SumWon


class InvestmentCancelled(EventPayload):
    """An officer cancelled the investment; what was not paid goes back to the fund."""

    event_type: ClassVar[str] = "fund.investment.cancelled"

    cancelled_tranches: tuple[int, ...]
    """The numbers of the tranches not paid (planned, or released and unpaid)."""
    returned_amount: SumWon
    paid_amount: SumWon
    officer: Ref
    reason: Note


# --- a fund's capacity, as the catalogue sets it ---------------------------------------------


class CapacityOpened(PoolOpened):
    """A fund's capacity, as first recorded in the log (on the stream ``capacity:<id>``):
    the catalogue's capacity when the fund is new; the capacity and what was available as
    found, for a fund older than these events."""

    event_type: ClassVar[str] = "fund.capacity.opened"
    fund_id: Ref


class CapacityToppedUp(PoolToppedUp):
    """The catalogue raised the fund's capacity: capacity and available rose by ``change``
    (the fund's own pool only: a parent's capacity is its own catalogue entry)."""

    event_type: ClassVar[str] = "fund.capacity.topped_up"
    fund_id: Ref


class CapacityCut(PoolCut):
    """The catalogue lowered the fund's capacity: capacity and available fell by ``change``,
    which was available (a cut below what is committed and disbursed is refused)."""

    event_type: ClassVar[str] = "fund.capacity.cut"
    fund_id: Ref


CAPACITY_EVENTS = PoolEvents(
    CapacityOpened, CapacityToppedUp, CapacityCut, id_field="fund_id", noun="fund capacity"
)
"""How the service records what the catalogue does to a fund's capacity."""


def _types(*payloads: type[EventPayload]) -> tuple[str, ...]:
    return tuple(payload.event_type for payload in payloads)


class E:
    """Registered event type names, as each payload class declares them (in order of life)."""

    SUBMITTED, WITHDRAWN, VERIFIED, REJECTED = _types(
        ApplicationSubmitted, ApplicationWithdrawn, ApplicationVerified, ApplicationRejected
    )
    VOTE_RECORDED, APPROVED = _types(VoteRecorded, ApplicationApproved)
    COMMITTED, CO_INVESTMENT_RECORDED = _types(InvestmentCommitted, CoInvestmentRecorded)
    TRANCHE_RELEASED, TRANCHE_PAID, COMPLETED, CANCELLED = _types(
        TrancheReleased, TranchePaid, InvestmentCompleted, InvestmentCancelled
    )
    CAPACITY_OPENED, CAPACITY_TOPPED_UP, CAPACITY_CUT = _types(
        CapacityOpened, CapacityToppedUp, CapacityCut
    )
    SUPPORT_CONFLICT = SupportConflictDetected.event_type
    """Recorded by the support detector on an aggregate of its own (see shared.domain.support)."""


EVENTS = EventRegistry(
    "fund",
    [
        ApplicationSubmitted,
        ApplicationWithdrawn,
        ApplicationVerified,
        ApplicationRejected,
        VoteRecorded,
        ApplicationApproved,
        InvestmentCommitted,
        CoInvestmentRecorded,
        TrancheReleased,
        TranchePaid,
        InvestmentCompleted,
        InvestmentCancelled,
        CapacityOpened,
        CapacityToppedUp,
        CapacityCut,
        SupportConflictDetected,
    ],
)

EVENTS.upcaster(E.REJECTED, from_version=1)(lifecycle.rejection_v1_compared_no_support)


__all__ = [
    "CAPACITY_EVENTS",
    "EVENTS",
    "PROGRAMME",
    "ApplicationApproved",
    "ApplicationRejected",
    "ApplicationSubmitted",
    "ApplicationVerified",
    "ApplicationWithdrawn",
    "CapacityCut",
    "CapacityOpened",
    "CapacityToppedUp",
    "CoInvestmentRecorded",
    "CoInvestor",
    "DueDiligence",
    "E",
    "Instrument",
    "InvestmentCancelled",
    "InvestmentCommitted",
    "InvestmentCompleted",
    "Tally",
    "TranchePaid",
    "TrancheReleased",
    "TrancheTerms",
    "VerificationFacts",
    "VoteChoice",
    "VoteRecorded",
]
