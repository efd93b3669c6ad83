"""The voucher programme's events: one typed payload per event type, the published contract.

Oversight and the audit tools read voucher histories through these models and the
same fold the service runs (:func:`services.voucher.domain.model.evolve`).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field

from shared.domain import (
    ApprovalPayload,
    EventPayload,
    EventRegistry,
    Firm,
    Part,
    RejectionPayload,
    WithdrawalPayload,
)
from shared.domain.lifecycle import rejection_v1_compared_no_support
from shared.domain.pools import PoolCut, PoolEvents, PoolOpened, PoolToppedUp
from shared.domain.support import SupportConflictDetected, SupportFacts

PROGRAMME: Final = "voucher"
"""How this service's grants name their programme (see :mod:`shared.domain.support`)."""

MAX_COST_REFERENCE: Final = 200
"""The longest cost reference, as every programme's support read model stores it."""
CostReference = Annotated[str, Field(min_length=1, max_length=MAX_COST_REFERENCE)]
"""The cost an application asks support for (an invoice, a contract, a project code)."""


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
    REDEMPTION_PAYOUT_FAILED = "voucher.redemption.payout_failed"
    REDEMPTION_PAYOUT_RETRIED = "voucher.redemption.payout_retried"
    REDEMPTION_CANCELLED = "voucher.redemption.cancelled"
    CLOSED = "voucher.voucher.closed"
    EXPIRED = "voucher.voucher.expired"
    PROVIDER_REGISTERED = "voucher.provider.registered"
    BUDGET_OPENED = "voucher.budget.opened"
    BUDGET_TOPPED_UP = "voucher.budget.topped_up"
    BUDGET_CUT = "voucher.budget.cut"
    SUPPORT_CONFLICT = SupportConflictDetected.event_type
    """Recorded by the support detector on an aggregate of its own (see shared.domain.support)."""


class VerificationFacts(Part):
    """What verification compared, so that an auditor can decide again from the log alone."""

    as_of: date
    """The submission's date in Korea: the day the rules were applied as of."""
    catalogue_version: str
    programme_id: str
    max_startup_age_years: int | None = None
    clusters: tuple[str, ...] = ()
    max_amount_per_firm: int | None = None
    held_in_programme: int
    """Won the firm already held in the programme from other applications."""
    requested_amount: int
    other_open_application: str | None = None
    support: SupportFacts | None = None
    """The other programmes' grants for the cost and the firm's combined support in the
    year (``None`` only for verifications before cross-programme support limits)."""


class ApplicationSubmitted(EventPayload):
    """A firm applied for a voucher."""

    event_type: ClassVar[str] = E.SUBMITTED
    programme_id: str
    firm: Firm
    service_category: str
    requested_amount: int
    purpose: str
    cost_reference: CostReference | None = None
    """The cost the voucher would cover, checked against the other programmes' grants
    (optional; absent from applications submitted before support limits)."""


class ApplicationVerified(EventPayload):
    """The application passed every automatic check."""

    event_type: ClassVar[str] = E.VERIFIED
    schema_version: ClassVar[int] = 2
    checks: list[str]
    facts: VerificationFacts | None
    """``None`` only for events written before the facts were recorded (version 1)."""


class ApplicationRejected(RejectionPayload):
    """Verification or an officer refused the application, or (stage ``issue``) the support
    limits, checked again as the voucher was to be issued, were passed."""

    event_type: ClassVar[str] = E.REJECTED
    stage: Literal["verification", "decision", "issue"]  # type: ignore[assignment]
    facts: VerificationFacts | None = None


class ApprovalRecorded(ApprovalPayload):
    """The first of two approvals (four eyes above the programme's threshold)."""

    event_type: ClassVar[str] = E.APPROVAL_RECORDED


class ApplicationApproved(ApprovalPayload):
    """Approved; the programme's budget holds ``approved_amount``."""

    event_type: ClassVar[str] = E.APPROVED
    approved_amount: int


class ApplicationWithdrawn(WithdrawalPayload):
    """The firm withdrew its application before approval."""

    event_type: ClassVar[str] = E.WITHDRAWN


class VoucherIssued(EventPayload):
    """The voucher was issued: providers may redeem it until ``expires_on``.

    The voucher's grant, as the other programmes read it (:func:`shared.domain.support.grant_of`):
    the firm, the amount, the year it counts in, the programme and the cost it covers.
    """

    event_type: ClassVar[str] = E.ISSUED
    schema_version: ClassVar[int] = 2
    voucher_id: str
    amount: int
    expires_on: date
    firm_id: str | None
    """The firm granted: ``None`` only in version 1 events, whose envelope names it."""
    year: int | None = Field(ge=1900, le=9999)
    """The year of issue in Korea, the year the grant counts in: ``None`` only in version 1
    events, which count in the Korean year of the envelope's ``occurred_at``."""
    programme: Literal["voucher"] = PROGRAMME
    cost_reference: CostReference | None
    """The cost the voucher covers; ``None`` when the application named none."""


class RedemptionRequested(EventPayload):
    """A registered provider redeemed part of the voucher against an invoice."""

    event_type: ClassVar[str] = E.REDEMPTION_REQUESTED
    redemption_id: str
    voucher_id: str
    provider_id: str
    invoice_number: str
    amount: int
    service_category: str


class RedemptionPaid(EventPayload):
    """The provider was paid for a redemption, once (``payout_id``)."""

    event_type: ClassVar[str] = E.REDEMPTION_PAID
    redemption_id: str
    voucher_id: str
    payout_id: str
    provider_id: str
    amount: int


class RedemptionPayoutFailed(EventPayload):
    """The payout of a redemption failed ``attempts`` times: officers decide (retry, cancel)."""

    event_type: ClassVar[str] = E.REDEMPTION_PAYOUT_FAILED
    redemption_id: str
    voucher_id: str
    payout_id: str
    attempts: int = Field(ge=1)
    reason: str


class RedemptionPayoutRetried(EventPayload):
    """An officer asked for a failed payout to be tried again."""

    event_type: ClassVar[str] = E.REDEMPTION_PAYOUT_RETRIED
    redemption_id: str
    voucher_id: str
    officer: str
    reason: str


class RedemptionCancelled(EventPayload):
    """An officer cancelled a redemption whose payout failed (and which the payee was not
    paid for): its amount is back on the voucher."""

    event_type: ClassVar[str] = E.REDEMPTION_CANCELLED
    redemption_id: str
    voucher_id: str
    officer: str
    reason: str
    returned_amount: int = Field(ge=0)


class VoucherClosed(EventPayload):
    """Spent to the last won and every redemption paid."""

    event_type: ClassVar[str] = E.CLOSED
    voucher_id: str


class VoucherExpired(EventPayload):
    """Past its date; the unspent rest went back to the programme's budget."""

    event_type: ClassVar[str] = E.EXPIRED
    voucher_id: str
    returned_amount: int


class ProviderRegistered(EventPayload):
    """A business-support provider may now redeem vouchers for its categories."""

    event_type: ClassVar[str] = E.PROVIDER_REGISTERED
    provider_id: str
    name: str
    service_categories: list[str]


class BudgetOpened(PoolOpened):
    """A programme's budget, as first recorded in the log (on the stream ``budget:<id>``):
    the catalogue's total when the programme is new; the total and what was available as
    found, for a budget older than these events."""

    event_type: ClassVar[str] = E.BUDGET_OPENED
    programme_id: str


class BudgetToppedUp(PoolToppedUp):
    """The catalogue raised the programme's budget: total and available rose by ``change``."""

    event_type: ClassVar[str] = E.BUDGET_TOPPED_UP
    programme_id: str


class BudgetCut(PoolCut):
    """The catalogue lowered the programme's budget: total and available fell by ``change``,
    which was available (a cut below what approvals hold is refused, never recorded)."""

    event_type: ClassVar[str] = E.BUDGET_CUT
    programme_id: str


BUDGET_EVENTS = PoolEvents(
    BudgetOpened, BudgetToppedUp, BudgetCut, id_field="programme_id", noun="programme budget"
)
"""How the service records what the catalogue does to a programme's budget."""


EVENTS = EventRegistry(
    "voucher",
    [
        ApplicationSubmitted,
        ApplicationVerified,
        ApplicationRejected,
        ApprovalRecorded,
        ApplicationApproved,
        ApplicationWithdrawn,
        VoucherIssued,
        RedemptionRequested,
        RedemptionPaid,
        RedemptionPayoutFailed,
        RedemptionPayoutRetried,
        RedemptionCancelled,
        VoucherClosed,
        VoucherExpired,
        ProviderRegistered,
        BudgetOpened,
        BudgetToppedUp,
        BudgetCut,
        SupportConflictDetected,
    ],
)


@EVENTS.upcaster(E.VERIFIED, from_version=1)
def _verified_v1_recorded_no_facts(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 listed the checks only; what they compared was not recorded."""
    return {**payload, "facts": None}


EVENTS.upcaster(E.REJECTED, from_version=1)(rejection_v1_compared_no_support)


@EVENTS.upcaster(E.ISSUED, from_version=1)
def _issued_v1_carried_no_grant_members(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 carried the voucher only. Its firm and year are not in the payload (the
    envelope's ``firm_id`` and the Korean date of its ``occurred_at`` say them, and that is
    where :func:`shared.domain.support.grant_of` reads them); it named no cost."""
    return {
        "firm_id": None,
        "year": None,
        "programme": PROGRAMME,
        "cost_reference": None,
        **payload,
    }
