"""The state of a tax-credit application: the fold of its events (auditors run the same fold)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from services.taxcredit.domain.events import (
    EVENTS,
    CertificateClawedBack,
    CertificateIssued,
    ClaimApprovalRecorded,
    ClaimApproved,
    ClaimRejected,
    ClaimSubmitted,
    ClaimVerified,
    ClaimWithdrawn,
    MnaClaim,
    Programme,
    RateTablePublished,
    StrategicInvestmentClaim,
    SupportConflictDetected,
    VentureInvestmentClaim,
    VerificationFacts,
)
from services.taxcredit.domain.rates import Credit
from shared.contracts import Envelope
from shared.domain import Approval, Firm, Reason, advanced, fold_events, opening


class Status(StrEnum):
    SUBMITTED = "submitted"
    VERIFIED = "verified"
    REJECTED = "rejected"
    APPROVED = "approved"
    CERTIFIED = "certified"
    REVOKED = "revoked"
    WITHDRAWN = "withdrawn"


OPEN_STATUSES = frozenset({Status.SUBMITTED, Status.VERIFIED, Status.APPROVED})
"""Still on its way to a certificate."""

ClaimInputs = StrategicInvestmentClaim | MnaClaim | VentureInvestmentClaim


@dataclass(frozen=True, slots=True)
class Certificate:
    number: str
    amount: int
    """What the certificate is still worth: the original amount less every clawback."""
    original_amount: int
    issued_on: date
    status: Literal["valid", "reduced", "revoked"]
    event_id: str
    """The id of the event that issued it (with its hash: the certificate's proof in the log)."""
    event_hash: str


@dataclass(frozen=True, slots=True)
class Clawback:
    amount: int
    reason: str
    officer: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    status: Status
    programme: Programme
    tax_year: int
    firm_id: str
    """The firm that owns the application: the submitter's token ``firm_id``."""
    firm: Firm
    """The firm as the application declares it."""
    claim: ClaimInputs
    claim_reference: str
    """The facility, deal or investment reference (claimed once within the programme)."""
    cost_reference: str
    """The cost the credit covers across programmes: the submitted ``cost_reference``, else
    ``claim_reference``. The certificate grants it; other programmes' grants are checked
    against it."""
    submitted_by: str
    created_at: datetime
    """The submission moment: the rate table in force is chosen as of this."""
    updated_at: datetime
    version: int
    last_hash: str
    credit: Credit | None = None
    four_eyes_threshold: int | None = None
    facts: VerificationFacts | None = None
    """What verification looked at (also on a verification rejection, where known)."""
    approvals: tuple[Approval, ...] = ()
    approved_amount: int | None = None
    rejection_reasons: tuple[Reason, ...] = ()
    certificate: Certificate | None = None
    clawbacks: tuple[Clawback, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def needs_two_approvals(self) -> bool:
        """Four eyes: the credit is at or above the threshold of the table it was computed with."""
        if self.credit is None or self.four_eyes_threshold is None:
            return False
        return self.credit.amount >= self.four_eyes_threshold


def evolve(state: Application | None, event: Envelope) -> Application:
    """Apply one event; an event that makes no sense for the state is a corrupt log."""
    payload = EVENTS.parse(event)
    if isinstance(payload, RateTablePublished | SupportConflictDetected):
        home = "a rate-table" if isinstance(payload, RateTablePublished) else "a support-conflict"
        raise ValueError(
            f"{event.aggregate_id}: {event.type} belongs to {home} aggregate, not to an application"
        )
    if state is None or isinstance(payload, ClaimSubmitted):
        return _opened(state, payload, event)
    at = event.occurred_at

    def expect(*statuses: Status) -> None:
        if state.status not in statuses:
            raise ValueError(f"{event.aggregate_id}: {event.type} on a {state.status} application")

    after = advanced(state, event)
    match payload:
        case ClaimVerified(credit=credit, four_eyes_threshold=threshold, facts=facts):
            expect(Status.SUBMITTED)
            return replace(
                after,
                status=Status.VERIFIED,
                credit=credit,
                four_eyes_threshold=threshold,
                facts=facts,
            )
        case ClaimRejected(stage=stage, reasons=reasons, facts=facts):
            before = {"verification": Status.SUBMITTED, "certification": Status.APPROVED}
            expect(before.get(stage, Status.VERIFIED))
            return replace(
                after,
                status=Status.REJECTED,
                rejection_reasons=tuple(Reason(r.code, r.message) for r in reasons),
                facts=facts if facts is not None else state.facts,
            )
        case ClaimApprovalRecorded(officer=officer, amount=amount, reason=reason):
            expect(Status.VERIFIED)
            approval = Approval(officer=officer, amount=amount, reason=reason, at=at)
            return replace(after, approvals=(*state.approvals, approval))
        case ClaimApproved(officer=officer, amount=amount, reason=reason):
            expect(Status.VERIFIED)
            approval = Approval(officer=officer, amount=amount, reason=reason, at=at)
            return replace(
                after,
                status=Status.APPROVED,
                approved_amount=amount,
                approvals=(*state.approvals, approval),
            )
        case ClaimWithdrawn():
            expect(Status.SUBMITTED, Status.VERIFIED)
            return replace(after, status=Status.WITHDRAWN)
        case CertificateIssued(number=number, amount=amount, issued_on=issued_on):
            expect(Status.APPROVED)
            if amount != state.approved_amount:
                raise ValueError(
                    f"{event.aggregate_id}: certificate for {amount} won, "
                    f"approved {state.approved_amount} won"
                )
            certificate = Certificate(
                number=number,
                amount=amount,
                original_amount=amount,
                issued_on=issued_on,
                status="valid",
                event_id=event.event_id,
                event_hash=event.hash,
            )
            return replace(after, status=Status.CERTIFIED, certificate=certificate)
        case CertificateClawedBack(
            number=number, amount=amount, remaining=remaining, reason=reason, officer=officer
        ):
            expect(Status.CERTIFIED)
            held = state.certificate
            if held is None or held.number != number or held.amount - amount != remaining:
                raise ValueError(
                    f"{event.aggregate_id}: clawback of {amount} won leaving {remaining} "
                    f"does not match certificate {held}"
                )
            certificate = replace(
                held, amount=remaining, status="revoked" if remaining == 0 else "reduced"
            )
            return replace(
                after,
                status=Status.REVOKED if remaining == 0 else Status.CERTIFIED,
                certificate=certificate,
                clawbacks=(*state.clawbacks, Clawback(amount, reason, officer, at)),
            )
    raise ValueError(f"{event.aggregate_id}: {event.type} is not an application event")


def _opened(state: Application | None, payload: object, event: Envelope) -> Application:
    """The claim its submission opens; any other first event, or a second submission, is corrupt."""
    if state is not None:
        raise ValueError(f"{event.aggregate_id}: submitted twice")
    if not isinstance(payload, ClaimSubmitted):
        raise ValueError(f"{event.aggregate_id}: {event.type} before submission")
    claim = payload.claim
    return Application(
        **opening(event),
        status=Status.SUBMITTED,
        programme=payload.programme,
        tax_year=payload.tax_year,
        firm=payload.firm,
        claim=claim,
        claim_reference=claim.claim_reference,
        cost_reference=payload.cost_reference or claim.claim_reference,
    )


def fold(events: Iterable[Envelope]) -> Application | None:
    return fold_events(evolve, events)


__all__ = [
    "OPEN_STATUSES",
    "Application",
    "Certificate",
    "ClaimInputs",
    "Clawback",
    "Programme",
    "Status",
    "evolve",
    "fold",
]
