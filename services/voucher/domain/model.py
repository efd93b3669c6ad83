"""The state of a voucher application: the fold of its events (the auditors run the same fold)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from shared.contracts import Envelope


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


class E:
    """Registered event type names."""

    SUBMITTED = "voucher.application.submitted"
    VERIFIED = "voucher.application.verified"
    REJECTED = "voucher.application.rejected"
    APPROVAL_RECORDED = "voucher.application.approval_recorded"
    APPROVED = "voucher.application.approved"
    WITHDRAWN = "voucher.application.withdrawn"
    ISSUED = "voucher.voucher.issued"
    REDEMPTION_REQUESTED = "voucher.redemption.requested"
    REDEMPTION_PAID = "voucher.redemption.paid"
    CLOSED = "voucher.voucher.closed"
    EXPIRED = "voucher.voucher.expired"


@dataclass(frozen=True, slots=True)
class Firm:
    firm_id: str
    name: str
    founded_on: date
    size: str
    cluster: str
    industry: str

    def to_json(self) -> dict[str, Any]:
        return {
            "firm_id": self.firm_id,
            "name": self.name,
            "founded_on": self.founded_on.isoformat(),
            "size": self.size,
            "cluster": self.cluster,
            "industry": self.industry,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Firm:
        return cls(
            firm_id=data["firm_id"],
            name=data["name"],
            founded_on=date.fromisoformat(data["founded_on"]),
            size=data["size"],
            cluster=data["cluster"],
            industry=data["industry"],
        )


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Approval:
    officer: str
    amount: int
    reason: str
    at: datetime


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
    status: str  # requested | paid
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

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def pending_redemptions(self) -> tuple[Redemption, ...]:
        return tuple(r for r in self.redemptions if r.status == "requested")

    def redemption(self, redemption_id: str) -> Redemption | None:
        return next((r for r in self.redemptions if r.id == redemption_id), None)


def evolve(state: Application | None, event: Envelope) -> Application:
    """Apply one event; an event that makes no sense for the state is a corrupt log."""
    p = event.payload
    at = event.occurred_at
    if event.type == E.SUBMITTED:
        if state is not None:
            raise ValueError(f"{event.aggregate_id}: submitted twice")
        return Application(
            id=event.aggregate_id,
            status=Status.SUBMITTED,
            programme_id=p["programme_id"],
            firm_id=event.firm_id or "",
            firm=Firm.from_json(p["firm"]),
            service_category=p["service_category"],
            requested_amount=p["requested_amount"],
            purpose=p["purpose"],
            submitted_by=event.actor.sub,
            created_at=at,
            updated_at=at,
            version=event.aggregate_seq,
            last_hash=event.hash,
        )
    if state is None:
        raise ValueError(f"{event.aggregate_id}: {event.type} before submission")
    state = replace(state, updated_at=at, version=event.aggregate_seq, last_hash=event.hash)
    match event.type:
        case E.VERIFIED:
            return replace(state, status=Status.VERIFIED)
        case E.REJECTED:
            reasons = tuple(Reason(r["code"], r["message"]) for r in p["reasons"])
            return replace(state, status=Status.REJECTED, rejection_reasons=reasons)
        case E.APPROVAL_RECORDED:
            return replace(state, approvals=(*state.approvals, _approval(p, at)))
        case E.APPROVED:
            return replace(
                state,
                status=Status.APPROVED,
                approved_amount=p["approved_amount"],
                approvals=(*state.approvals, _approval(p, at)),
            )
        case E.WITHDRAWN:
            return replace(state, status=Status.WITHDRAWN)
        case E.ISSUED:
            voucher = Voucher(
                id=p["voucher_id"],
                amount=p["amount"],
                balance=p["amount"],
                expires_on=date.fromisoformat(p["expires_on"]),
            )
            return replace(state, status=Status.ISSUED, voucher=voucher)
        case E.REDEMPTION_REQUESTED:
            voucher = _voucher(state)
            redemption = Redemption(
                id=p["redemption_id"],
                provider_id=p["provider_id"],
                invoice_number=p["invoice_number"],
                amount=p["amount"],
                service_category=p["service_category"],
                status="requested",
                requested_at=at,
            )
            return replace(
                state,
                voucher=replace(voucher, balance=voucher.balance - p["amount"]),
                redemptions=(*state.redemptions, redemption),
            )
        case E.REDEMPTION_PAID:
            paid = tuple(
                replace(r, status="paid", payout_id=p["payout_id"], paid_at=at)
                if r.id == p["redemption_id"]
                else r
                for r in state.redemptions
            )
            return replace(state, redemptions=paid)
        case E.CLOSED:
            return replace(state, status=Status.CLOSED)
        case E.EXPIRED:
            voucher = _voucher(state)
            return replace(
                state,
                status=Status.EXPIRED,
                voucher=replace(voucher, balance=0),
                returned_amount=p["returned_amount"],
            )
    raise ValueError(f"{event.aggregate_id}: unknown event type {event.type}")


def fold(events: Iterable[Envelope]) -> Application | None:
    state: Application | None = None
    for event in events:
        state = evolve(state, event)
    return state


def _approval(p: dict[str, Any], at: datetime) -> Approval:
    return Approval(officer=p["officer"], amount=p["amount"], reason=p.get("reason", ""), at=at)


def _voucher(state: Application) -> Voucher:
    if state.voucher is None:
        raise ValueError(f"{state.id}: voucher event before the voucher was issued")
    return state.voucher
