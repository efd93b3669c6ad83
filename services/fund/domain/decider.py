"""Commands and the decider: ``decide(command, state) -> events``, pure, no I/O.

What a rule needs from outside the application travels in the command: the fund as the
catalogue defines it, what the fund has left to commit, what the other programmes
already grant the firm. Dates come from the log (verification applies the rules as of
the submission's date in Korea) or from the command (the commitment date).
"""

from __future__ import annotations

from datetime import date
from typing import NamedTuple

from services.fund.domain.events import (
    ApplicationApproved,
    ApplicationRejected,
    ApplicationSubmitted,
    ApplicationVerified,
    ApplicationWithdrawn,
    CoInvestmentRecorded,
    CoInvestor,
    DueDiligence,
    Instrument,
    InvestmentCancelled,
    InvestmentCommitted,
    InvestmentCompleted,
    Tally,
    TranchePaid,
    TrancheReleased,
    TrancheTerms,
    VerificationFacts,
    VoteChoice,
    VoteRecorded,
)
from services.fund.domain.funds import Fund, Stage
from services.fund.domain.model import Application, Ballot, Status, Tranche, evolve, tally_of
from shared.contracts import NewEvent
from shared.domain import (
    Conflict,
    Decider,
    Firm,
    Forbidden,
    InvalidTransition,
    Reason,
    SameOfficer,
    Unprocessable,
    Withdraw,
    decide_by_command,
    firm_identity_failures,
    require_new,
    require_status,
    today_in_korea,
)
from shared.domain.support import RefuseGrant, SupportFacts, support_failures

# --- commands -----------------------------------------------------------------------------


class SubmitApplication(NamedTuple):
    """A firm applies for an investment from one fund."""

    fund_id: str
    firm: Firm
    stage: Stage
    tranches: tuple[TrancheTerms, ...]
    """Planned disbursements, in release order; their amounts sum to ``amount``."""
    instrument: Instrument
    amount: int
    pre_money_valuation: int
    due_diligence: DueDiligence
    cost_reference: str
    co_investors: tuple[CoInvestor, ...] = ()


class VerifyApplication(NamedTuple):
    """Automatic verification, with the facts it needs from outside the application."""

    fund: Fund | None
    """The application's fund in the catalogue; None if the catalogue has none by that id."""
    catalogue_version: str
    available_capacity: int
    """What the fund has left to commit, in won."""
    support: SupportFacts
    """The other programmes' grants for the cost, and the firm's combined support in the year."""


class Vote(NamedTuple):
    """A member of the fund's investment committee votes."""

    member: str
    vote: VoteChoice
    reason: str = ""
    conflict_of_interest: bool = False
    """Declared: the vote is recorded and does not count."""


WithdrawApplication = Withdraw
"""The firm withdraws its application before the committee approves it."""


class CommitInvestment(NamedTuple):
    """The fund commits an approved investment (the service holds the capacity)."""

    committed_on: date


class RefuseCommitment(NamedTuple):
    """The commitment stage could not hold the capacity: the fund (or a parent) has less left."""

    available_capacity: int


class ReleaseTranche(NamedTuple):
    """An officer accepts a milestone's evidence: the next planned tranche may be paid."""

    number: int
    milestone_evidence: str
    officer: str


class PayTranche(NamedTuple):
    """The payout stage paid a released tranche."""

    number: int
    payout_id: str


class CancelInvestment(NamedTuple):
    """An officer cancels a committed investment; what was not paid returns to the fund."""

    officer: str
    reason: str


# --- the decider --------------------------------------------------------------------------


decide = decide_by_command()
"""``decide(command, state) -> events`` for every command of the fund service."""


@decide.register
def _submit(command: SubmitApplication, state: Application | None) -> list[NewEvent]:
    require_new(state)
    if command.amount <= 0:
        raise Unprocessable("the amount must be a positive number of won", field="amount")
    planned = sum(t.amount for t in command.tranches)
    if not command.tranches or planned != command.amount:
        raise Unprocessable(
            f"the tranches sum to {planned} won; they must sum to the amount, {command.amount} won",
            field="tranches",
            tranches_total=planned,
            amount=command.amount,
        )
    if any(c.investor_firm_id == command.firm.firm_id for c in command.co_investors):
        raise Unprocessable("a firm cannot co-invest in itself", field="co_investors")
    investors = [c.investor_firm_id for c in command.co_investors]
    if len(set(investors)) != len(investors):
        raise Unprocessable(  # each co-investment becomes one tax-credit claim of its investor
            "a co-investor is listed once, with all it invests", field="co_investors"
        )
    submitted = ApplicationSubmitted(**command._asdict())
    return [submitted.event()]


CHECKS = (
    "firm_id_format",
    "firm_id_matches_token",
    "fund_exists",
    "remit",
    "due_diligence",
    "capacity",
    "no_duplicate_support",
    "combined_cap",
)
"""The checks verification runs, in the order their failures are reported."""


@decide.register
def _verify(command: VerifyApplication, state: Application | None) -> list[NewEvent]:
    application = require_status(state, Status.SUBMITTED, "verify")
    fund = command.fund
    if fund is not None and fund.id != application.fund_id:
        raise ValueError(f"{application.id} applies to {application.fund_id}, not to {fund.id}")
    facts = verification_facts(application, command)
    reasons = verification_failures(application, command)
    if reasons:
        rejected = ApplicationRejected.of(reasons, stage="verification", facts=facts)
        return [rejected.event()]
    return [ApplicationVerified(facts=facts).event()]


def verification_facts(application: Application, command: VerifyApplication) -> VerificationFacts:
    """What verification compares, recorded so an auditor can decide again from the log."""
    fund = command.fund
    return VerificationFacts(
        as_of=today_in_korea(application.created_at),
        catalogue_version=command.catalogue_version,
        fund_id=application.fund_id,
        stage=application.terms.stage,
        industry=application.firm.industry,
        remit=fund.remit if fund else None,
        committee=fund.committee if fund else None,
        amount=application.amount,
        available_capacity=command.available_capacity,
        support=command.support,
        checks=CHECKS,
    )


def verification_failures(application: Application, command: VerifyApplication) -> list[Reason]:
    """Every rule the application breaks, in the order an officer reads them."""
    reasons = firm_identity_failures(application.firm, application.firm_id)
    fund = command.fund
    if fund is None:
        reasons.append(Reason("fund_unknown", f"there is no fund {application.fund_id!r}"))
        return reasons
    outside = _outside_remit(application, fund)
    if outside:
        reasons.append(Reason("outside_remit", "; ".join(outside)))
    missing = application.terms.due_diligence.missing()
    if missing:
        reasons.append(
            Reason(
                "incomplete_due_diligence",
                f"due diligence is not done on: {', '.join(missing)}",
            )
        )
    if application.amount > command.available_capacity:
        reasons.append(
            Reason(
                "insufficient_capacity",
                f"{application.amount} won is asked; {fund.name} has "
                f"{command.available_capacity} won left to commit",
            )
        )
    reasons.extend(support_failures(command.support, application.amount))
    return reasons


def _outside_remit(application: Application, fund: Fund) -> list[str]:
    found = []
    if application.terms.stage not in fund.remit.stages:
        found.append(
            f"{fund.name} invests at stages {', '.join(fund.remit.stages)}, not {application.terms.stage}"
        )
    industry = application.firm.industry
    if industry not in fund.remit.industries:
        found.append(f"{fund.name} invests in {', '.join(fund.remit.industries)}, not {industry!r}")
    return found


@decide.register
def _vote(command: Vote, state: Application | None) -> list[NewEvent]:
    member = command.member
    application = require_status(state, Status.VERIFIED, "vote on")
    if member == application.submitted_by:
        raise SameOfficer("the submitter of an application cannot vote on it")
    committee = application.committee
    if committee is None:
        raise ValueError(f"{application.id}: verified without a committee")
    if member not in committee.members:
        raise Forbidden(f"{member} is not on the investment committee of {application.fund_id}")
    if application.ballot_of(member) is not None:
        raise Conflict(f"{member} already voted on this application", member=member)
    if command.vote not in set(VoteChoice):
        raise Unprocessable(f"a vote is {' or '.join(VoteChoice)}", field="vote")
    choice = VoteChoice(command.vote)
    recorded = VoteRecorded(
        member=member,
        vote=choice,
        reason=command.reason,
        conflict_of_interest=command.conflict_of_interest,
    )
    ballot = Ballot(
        member, choice, command.reason, command.conflict_of_interest, application.updated_at
    )
    tally = tally_of(committee, (*application.ballots, ballot))
    return [recorded.event(), *_outcome(application, command, tally)]


def _outcome(application: Application, command: Vote, tally: Tally) -> list[NewEvent]:
    """Approved once the counted ``for`` votes reach quorum; rejected once they never can."""
    if len(tally.in_favour) >= tally.quorum:
        approved = ApplicationApproved(
            officer=command.member, amount=application.amount, reason=command.reason, tally=tally
        )
        return [approved.event()]
    if len(tally.in_favour) + len(tally.not_voted) < tally.quorum:
        unreachable = Reason(
            "quorum_unreachable",
            f"{len(tally.in_favour)} counted vote(s) for and {len(tally.not_voted)} member(s) "
            f"still to vote cannot reach the quorum of {tally.quorum}",
        )
        return [ApplicationRejected.of([unreachable], stage="decision", tally=tally).event()]
    return []


WITHDRAWABLE = (Status.SUBMITTED, Status.VERIFIED)
"""Until the committee approves, the firm may withdraw."""


@decide.register(Withdraw)
def _withdraw(command: Withdraw, state: Application | None) -> list[NewEvent]:
    require_status(state, WITHDRAWABLE, "withdraw")
    return [ApplicationWithdrawn(reason=command.reason).event()]


@decide.register
def _commit(command: CommitInvestment, state: Application | None) -> list[NewEvent]:
    application = require_status(state, Status.APPROVED, "commit")
    if application.approved_amount is None:
        raise ValueError(f"{application.id}: approved without an amount")
    day = command.committed_on
    grant = InvestmentCommitted(  # what the other programmes read for their support limits
        committed_on=day,
        year=day.year,
        amount=application.approved_amount,
        firm_id=application.firm_id,
        fund_id=application.fund_id,
        cost_reference=application.cost_reference,
    )
    alongside = {
        "fund_id": application.fund_id,
        "investee_firm_id": application.firm_id,
        "application_id": application.id,
    }
    return [grant.event()] + [
        CoInvestmentRecorded(
            co_investment_id=f"{application.id}:{index}", **co.model_dump(), **alongside
        ).event()
        for index, co in enumerate(application.terms.co_investors)
    ]


@decide.register
def _refuse(command: RefuseCommitment, state: Application | None) -> list[NewEvent]:
    application = require_status(state, Status.APPROVED, "refuse the commitment of")
    if command.available_capacity >= application.amount:
        raise ValueError(f"{application.id}: refused with {command.available_capacity} won left")
    short = Reason(
        "insufficient_capacity",
        f"{application.amount} won was approved; when it came to commit, the fund had "
        f"{command.available_capacity} won left (other investments were committed first)",
    )
    refused = ApplicationRejected.of(
        [short], stage="commitment", available_capacity=command.available_capacity
    )
    return [refused.event()]


@decide.register
def _refuse_for_support(command: RefuseGrant, state: Application | None) -> list[NewEvent]:
    """The support limits, checked again as the investment was to be committed, are passed."""
    require_status(state, Status.APPROVED, "refuse the commitment of")
    refused = ApplicationRejected.of(command.reasons, stage="commitment", support=command.support)
    return [refused.event()]


@decide.register
def _release(command: ReleaseTranche, state: Application | None) -> list[NewEvent]:
    application = require_status(state, Status.COMMITTED, "release a tranche of")
    tranche = _numbered(application, command.number)
    following = application.next_planned
    if following is None or following.number != tranche.number:
        raise Conflict(
            f"tranche {tranche.number} is {tranche.status}; "
            + (
                f"tranche {following.number} is the next to release"
                if following
                else "every tranche is released"
            ),
            number=tranche.number,
        )
    if not command.milestone_evidence.strip():
        raise Unprocessable(
            "a tranche is released on evidence of its milestone", field="milestone_evidence"
        )
    evidence = {"milestone_evidence": command.milestone_evidence, "officer": command.officer}
    terms = {"number": tranche.number, "amount": tranche.amount, "milestone": tranche.milestone}
    return [TrancheReleased(**terms, **evidence).event()]


@decide.register
def _pay(command: PayTranche, state: Application | None) -> list[NewEvent]:
    if state is None:
        raise InvalidTransition("cannot pay a tranche of an application that does not exist")
    tranche = _numbered(state, command.number)
    if tranche.status == "paid":
        return []  # paid already: paying again must change nothing
    application = require_status(state, Status.COMMITTED, "pay a tranche of")
    if tranche.status != "released":
        raise InvalidTransition(
            f"tranche {tranche.number} is {tranche.status}; only a released tranche is paid",
            number=tranche.number,
        )
    paid = TranchePaid(number=tranche.number, amount=tranche.amount, payout_id=command.payout_id)
    events = [paid.event()]
    if all(t.status == "paid" for t in application.tranches if t.number != tranche.number):
        events.append(InvestmentCompleted(paid_amount=application.amount).event())
    return events


@decide.register
def _cancel(command: CancelInvestment, state: Application | None) -> list[NewEvent]:
    application = require_status(state, Status.COMMITTED, "cancel")
    if not command.reason.strip():
        raise Unprocessable("a cancellation needs a reason", field="reason")
    unpaid = [t for t in application.tranches if t.status != "paid"]
    cancelled = InvestmentCancelled(
        officer=command.officer,
        reason=command.reason,
        paid_amount=application.paid_amount,
        returned_amount=sum(t.amount for t in unpaid),
        cancelled_tranches=tuple(t.number for t in unpaid),
    )
    return [cancelled.event()]


DECIDER: Decider[Application] = Decider(decide=decide, evolve=evolve)
"""The fund service's decider, as the service kit and the auditors run it."""


# --- helpers ------------------------------------------------------------------------------


def _numbered(application: Application, number: int) -> Tranche:
    tranche = application.tranche(number)
    if tranche is None:
        raise Unprocessable(
            f"there is no tranche {number}; the investment has {len(application.tranches)}",
            field="number",
        )
    return tranche


__all__ = [
    "CHECKS",
    "DECIDER",
    "CancelInvestment",
    "CommitInvestment",
    "PayTranche",
    "RefuseCommitment",
    "ReleaseTranche",
    "SubmitApplication",
    "VerifyApplication",
    "Vote",
    "WithdrawApplication",
    "decide",
    "verification_facts",
    "verification_failures",
]
