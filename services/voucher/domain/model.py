"""The state of a voucher application: the fold of its events (the auditors run the same fold)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from services.voucher.domain.events import (
    EVENTS,
    ApplicationApproved,
    ApplicationRejected,
    ApplicationSubmitted,
    ApplicationVerified,
    ApplicationWithdrawn,
    ApprovalRecorded,
    E,
    RedemptionCancelled,
    RedemptionPaid,
    RedemptionPayoutFailed,
    RedemptionPayoutRetried,
    RedemptionRequested,
    VerificationFacts,
    VoucherClosed,
    VoucherExpired,
    VoucherIssued,
)
from shared.contracts import Envelope
from shared.domain import Approval, Firm, Reason, advanced, fold_events, opening


class Status(StrEnum):
    SUBMITTED = "submitted"
    VERIFIED = "verified"
    REJECTED = "rejected"
    APPROVED = "approved"
    ISSUED = "issued"
    CLOSED = "closed"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


OPEN_STATUSES = frozenset({Status.SUBMITTED, Status.VERIFIED, Status.APPROVED, Status.ISSUED})


@dataclass(frozen=True, slots=True)
class Voucher:
    id: str
    amount: int
    balance: int
    """What providers can still redeem: the amount less every accepted redemption."""
    expires_on: date


@dataclass(frozen=True, slots=True)
class Redemption:
    id: str
    provider_id: str
    invoice_number: str
    amount: int
    service_category: str
    status: str  # requested | paid | payout_failed | cancelled
    requested_at: datetime
    payout_id: str | None = None
    paid_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    status: Status
    programme_id: str
    firm_id: str
    """The firm that owns the application: the submitter's token ``firm_id``."""
    firm: Firm
    """The firm as the application declares it."""
    service_category: str
    requested_amount: int
    purpose: str
    submitted_by: str
    created_at: datetime
    updated_at: datetime
    version: int
    last_hash: str
    approved_amount: int | None = None
    approvals: tuple[Approval, ...] = ()
    rejection_reasons: tuple[Reason, ...] = ()
    voucher: Voucher | None = None
    redemptions: tuple[Redemption, ...] = ()
    returned_amount: int = 0
    """Unspent voucher money given back to the programme budget at expiry."""
    verification: VerificationFacts | None = None
    """What automatic verification compared (recorded from event version 2 on)."""
    cost_reference: str | None = None
    """The cost the application asks support for, if it named one."""

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def pending_redemptions(self) -> tuple[Redemption, ...]:
        """Accepted and not paid yet: being paid, or waiting for an officer after a failure."""
        return tuple(r for r in self.redemptions if r.status in ("requested", "payout_failed"))

    def redemption(self, redemption_id: str) -> Redemption | None:
        return next((r for r in self.redemptions if r.id == redemption_id), None)


def evolve(state: Application | None, event: Envelope) -> Application:
    """Apply one event; an event that makes no sense for the state is a corrupt log."""
    p = EVENTS.parse(event)
    at = event.occurred_at
    if isinstance(p, ApplicationSubmitted):
        if state is not None:
            raise ValueError(f"{event.aggregate_id}: submitted twice")
        return Application(
            **opening(event),
            status=Status.SUBMITTED,
            programme_id=p.programme_id,
            firm=p.firm,
            service_category=p.service_category,
            requested_amount=p.requested_amount,
            purpose=p.purpose,
            cost_reference=p.cost_reference,
        )
    if state is None:
        raise ValueError(f"{event.aggregate_id}: {event.type} before submission")
    state = advanced(state, event)
    match p:
        case ApplicationVerified():
            return replace(state, status=Status.VERIFIED, verification=p.facts)
        case ApplicationRejected():
            reasons = tuple(Reason(r.code, r.message) for r in p.reasons)
            return replace(
                state,
                status=Status.REJECTED,
                rejection_reasons=reasons,
                verification=p.facts or state.verification,
            )
        case ApprovalRecorded():
            approval = Approval(p.officer, p.amount, p.reason, at)
            return replace(state, approvals=(*state.approvals, approval))
        case ApplicationApproved():
            approval = Approval(p.officer, p.amount, p.reason, at)
            return replace(
                state,
                status=Status.APPROVED,
                approved_amount=p.approved_amount,
                approvals=(*state.approvals, approval),
            )
        case ApplicationWithdrawn():
            return replace(state, status=Status.WITHDRAWN)
        case VoucherIssued():
            voucher = Voucher(
                id=p.voucher_id, amount=p.amount, balance=p.amount, expires_on=p.expires_on
            )
            return replace(state, status=Status.ISSUED, voucher=voucher)
        case RedemptionRequested():
            voucher = _voucher(state)
            redemption = Redemption(
                id=p.redemption_id,
                provider_id=p.provider_id,
                invoice_number=p.invoice_number,
                amount=p.amount,
                service_category=p.service_category,
                status="requested",
                requested_at=at,
            )
            return replace(
                state,
                voucher=replace(voucher, balance=voucher.balance - p.amount),
                redemptions=(*state.redemptions, redemption),
            )
        case RedemptionPaid():
            paid = tuple(
                replace(r, status="paid", payout_id=p.payout_id, paid_at=at)
                if r.id == p.redemption_id
                else r
                for r in state.redemptions
            )
            return replace(state, redemptions=paid)
        case RedemptionPayoutFailed():
            return _with_redemption(state, p.redemption_id, status="payout_failed")
        case RedemptionPayoutRetried():
            return _with_redemption(state, p.redemption_id, status="requested")
        case RedemptionCancelled():
            voucher = _voucher(state)
            state = voucher_balance(state, voucher.balance + p.returned_amount)
            return _with_redemption(state, p.redemption_id, status="cancelled")
        case VoucherClosed():
            return replace(state, status=Status.CLOSED)
        case VoucherExpired():
            voucher = _voucher(state)
            return replace(
                state,
                status=Status.EXPIRED,
                voucher=replace(voucher, balance=0),
                returned_amount=p.returned_amount,
            )
    raise ValueError(f"{event.aggregate_id}: {event.type} is not an application event")


def fold(events: Iterable[Envelope]) -> Application | None:
    return fold_events(evolve, events)


def _with_redemption(state: Application, redemption_id: str, **changes: Any) -> Application:
    changed = tuple(
        replace(r, **changes) if r.id == redemption_id else r for r in state.redemptions
    )
    return replace(state, redemptions=changed)


def voucher_balance(state: Application, balance: int) -> Application:
    """``state`` with its voucher's balance set to ``balance``."""
    return replace(state, voucher=replace(_voucher(state), balance=balance))


def _voucher(state: Application) -> Voucher:
    if state.voucher is None:
        raise ValueError(f"{state.id}: voucher event before the voucher was issued")
    return state.voucher


__all__ = [
    "OPEN_STATUSES",
    "Application",
    "Approval",
    "E",
    "Firm",
    "Reason",
    "Redemption",
    "Status",
    "Voucher",
    "evolve",
    "fold",
]
