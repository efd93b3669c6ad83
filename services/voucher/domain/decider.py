"""Commands and the decider: ``decide(command, state) -> events``, pure, no I/O.

Facts a rule needs from outside the application (the programme, today's date,
what the firm already holds, what the other programmes granted, the provider's
registered categories) travel in the command, so the decider can be run by the
service, the tests and the auditors alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import singledispatch
from typing import Any

from services.voucher.domain.errors import (
    BudgetExhausted,
    CategoryNotAllowed,
    DuplicateInvoice,
    InvalidTransition,
    NotFound,
    OverBalance,
    Unprocessable,
    VoucherNotRedeemable,
)
from services.voucher.domain.events import (
    MAX_COST_REFERENCE,
    ApplicationApproved,
    ApplicationRejected,
    ApplicationSubmitted,
    ApplicationVerified,
    ApplicationWithdrawn,
    ApprovalRecorded,
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
from services.voucher.domain.model import Application, Redemption, Status, Voucher, evolve
from services.voucher.domain.programmes import Programme
from shared.contracts import NewEvent
from shared.domain import (
    Decider,
    Decision,
    Firm,
    OfficerDecides,
    Reason,
    StrategicIndustry,
    Withdraw,
    firm_identity_failures,
    officer_decision,
    require_status,
    today_in_korea,
    years_before,
)
from shared.domain.support import RefuseGrant, SupportFacts, support_failures

# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubmitApplication:
    programme_id: str
    firm: Firm
    service_category: str
    requested_amount: int
    purpose: str
    cost_reference: str | None = None
    """The cost the voucher would cover (checked against the other programmes' grants)."""


@dataclass(frozen=True, slots=True)
class VerifyApplication:
    programme: Programme | None
    today: date
    """The day the rules apply as of: the submission's (a lagging verifier decides the same)."""
    held_in_programme: int
    """What the firm already holds in the programme from other applications, in won."""
    other_open_application: str | None
    """The id of another open, verified application of the firm in the programme, if any."""
    support: SupportFacts
    """The other programmes' grants for the application's cost, and the firm's combined
    support in the year of ``today``."""


@dataclass(frozen=True, slots=True)
class DecideApplication(OfficerDecides):
    programme: Programme
    approved_amount: int | None = None


WithdrawApplication = Withdraw


@dataclass(frozen=True, slots=True)
class IssueVoucher:
    voucher_id: str
    programme: Programme
    today: date


@dataclass(frozen=True, slots=True)
class RequestRedemption:
    redemption_id: str
    provider_id: str
    provider_categories: frozenset[str]
    invoice_number: str
    amount: int
    service_category: str
    programme: Programme
    today: date


@dataclass(frozen=True, slots=True)
class PayRedemption:
    redemption_id: str
    payout_id: str


@dataclass(frozen=True, slots=True)
class FailPayout:
    """The payout stage gives up on a redemption's payout after ``attempts`` tries."""

    redemption_id: str
    payout_id: str
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPayout:
    """An officer has a failed payout tried again."""

    redemption_id: str
    officer: str
    reason: str


@dataclass(frozen=True, slots=True)
class CancelRedemption:
    """An officer cancels a redemption whose payout failed; the payee was not paid for it."""

    redemption_id: str
    officer: str
    reason: str


@dataclass(frozen=True, slots=True)
class ExpireVoucher:
    today: date


# --- the decider --------------------------------------------------------------------------


@singledispatch
def decide(command: Any, state: Application | None) -> list[NewEvent]:
    raise TypeError(f"no decider for {type(command).__name__}")


@decide.register
def _submit(command: SubmitApplication, state: Application | None) -> list[NewEvent]:
    if state is not None:
        raise InvalidTransition("this application was already submitted")
    reference = command.cost_reference
    if reference is not None and not 0 < len(reference) <= MAX_COST_REFERENCE:
        raise Unprocessable(
            f"a cost reference has 1 to {MAX_COST_REFERENCE} characters", field="cost_reference"
        )
    return [
        ApplicationSubmitted(
            programme_id=command.programme_id,
            firm=command.firm,
            service_category=command.service_category,
            requested_amount=command.requested_amount,
            purpose=command.purpose,
            cost_reference=command.cost_reference,
        ).event()
    ]


@decide.register
def _verify(command: VerifyApplication, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.SUBMITTED, "verify")
    support = command.support
    if (support.year, support.cost_reference) != (command.today.year, application.cost_reference):
        raise ValueError(
            f"{application.id}: support facts for {support.cost_reference!r} in {support.year}"
            f" do not fit an application for {application.cost_reference!r} in {command.today.year}"
        )
    reasons = verification_failures(application, command)
    facts = verification_facts(application, command)
    if reasons:
        return [_rejected(reasons, stage="verification", facts=facts)]
    return [ApplicationVerified(checks=list(CHECKS), facts=facts).event()]


def verification_facts(application: Application, command: VerifyApplication) -> VerificationFacts:
    """What the verification compared, recorded in its event so an auditor can redo it."""
    programme = command.programme
    return VerificationFacts(
        as_of=command.today,
        catalogue_version=programme.catalogue_version if programme else "unknown",
        programme_id=application.programme_id,
        max_startup_age_years=programme.max_startup_age_years if programme else None,
        clusters=programme.clusters if programme else (),
        max_amount_per_firm=programme.max_amount_per_firm if programme else None,
        held_in_programme=command.held_in_programme,
        requested_amount=application.requested_amount,
        other_open_application=command.other_open_application,
        support=command.support,
    )


CHECKS = (
    "programme_exists",
    "firm_id_format",
    "firm_id_matches_token",
    "startup_age",
    "cluster",
    "industry",
    "service_category",
    "amount_within_firm_limit",
    "single_open_application",
    "no_duplicate_support",
    "combined_cap",
)


def verification_failures(application: Application, command: VerifyApplication) -> list[Reason]:
    """Every rule the application breaks, in the order an officer would read them."""
    firm = application.firm
    reasons = firm_identity_failures(firm, application.firm_id)
    programme = command.programme
    if programme is None:
        reasons.append(
            Reason("programme_unknown", f"there is no programme {application.programme_id!r}")
        )
        return reasons
    oldest = years_before(command.today, programme.max_startup_age_years)
    if firm.founded_on < oldest:
        reasons.append(
            Reason(
                "startup_too_old",
                f"founded on {firm.founded_on}; the programme takes firms founded on or "
                f"after {oldest} ({programme.max_startup_age_years} years)",
            )
        )
    if firm.founded_on > command.today:
        reasons.append(Reason("founded_in_future", f"founded on {firm.founded_on}, after today"))
    if firm.cluster not in programme.clusters:
        reasons.append(
            Reason(
                "cluster_not_in_programme",
                f"cluster {firm.cluster!r} is not one of {', '.join(programme.clusters)}",
            )
        )
    if firm.industry not in programme.industries:
        known = firm.industry in set(StrategicIndustry)
        reasons.append(
            Reason(
                "industry_not_in_programme",
                f"industry {firm.industry!r} is "
                + ("not in this programme" if known else "not a national strategic technology"),
            )
        )
    if application.service_category not in programme.service_categories:
        reasons.append(
            Reason(
                "service_category_not_in_programme",
                f"service category {application.service_category!r} is not one of "
                f"{', '.join(programme.service_categories)}",
            )
        )
    room = programme.max_amount_per_firm - command.held_in_programme
    if application.requested_amount > room:
        reasons.append(
            Reason(
                "amount_over_firm_limit",
                f"requested {application.requested_amount} won; the firm may receive "
                f"{programme.max_amount_per_firm} won in this programme and already holds "
                f"{command.held_in_programme} won, leaving {max(room, 0)} won",
            )
        )
    if command.other_open_application is not None:
        reasons.append(
            Reason(
                "duplicate_open_application",
                f"the firm already has open application {command.other_open_application} "
                "in this programme",
            )
        )
    reasons.extend(support_failures(command.support, application.requested_amount))
    return reasons


@decide.register
def _decide(command: DecideApplication, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.VERIFIED, str(command.decision))
    amount = (
        _approval_amount(application, command)
        if command.decision is Decision.APPROVE
        else application.requested_amount
    )
    step = officer_decision(
        decision=command.decision,
        officer=command.officer,
        submitted_by=application.submitted_by,
        approvals=application.approvals,
        needs_two=amount > command.programme.four_eyes_threshold,
    )
    if step == "reject":
        return [
            _rejected(
                [Reason("officer_rejected", command.reason or "rejected by an officer")],
                stage="decision",
                officer=command.officer,
            )
        ]
    if step == "record":
        return [
            ApprovalRecorded(officer=command.officer, amount=amount, reason=command.reason).event()
        ]
    return [
        ApplicationApproved(
            officer=command.officer, amount=amount, reason=command.reason, approved_amount=amount
        ).event()
    ]


def _approval_amount(application: Application, command: DecideApplication) -> int:
    if application.approvals:
        first = application.approvals[0].amount
        if command.approved_amount is not None and command.approved_amount != first:
            raise InvalidTransition(
                f"the first approval was for {first} won; the second must approve the same amount"
            )
        return first
    amount = (
        application.requested_amount if command.approved_amount is None else command.approved_amount
    )
    if not 0 < amount <= application.requested_amount:
        raise InvalidTransition(
            f"approved_amount must be between 1 and the requested {application.requested_amount}"
        )
    return amount


@decide.register
def _withdraw(command: Withdraw, state: Application | None) -> list[NewEvent]:
    _require(state, (Status.SUBMITTED, Status.VERIFIED), "withdraw")
    return [ApplicationWithdrawn(reason=command.reason).event()]


@decide.register
def _issue(command: IssueVoucher, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.APPROVED, "issue a voucher for")
    assert application.approved_amount is not None
    expires_on = command.today + timedelta(days=command.programme.voucher_validity_days)
    return [
        VoucherIssued(
            voucher_id=command.voucher_id,
            amount=application.approved_amount,
            expires_on=expires_on,
            firm_id=application.firm_id,
            year=command.today.year,
            cost_reference=application.cost_reference,
        ).event()
    ]


@decide.register
def _refuse_issue(command: RefuseGrant, state: Application | None) -> list[NewEvent]:
    """The support limits, checked again as the voucher was to be issued, are passed."""
    _require(state, Status.APPROVED, "refuse the voucher of")
    return [ApplicationRejected.of(command.reasons, stage="issue", support=command.support).event()]


@decide.register
def _redeem(command: RequestRedemption, state: Application | None) -> list[NewEvent]:
    application = _require_redeemable(state, command.today)
    voucher = application.voucher
    assert voucher is not None
    if any(
        r.provider_id == command.provider_id and r.invoice_number == command.invoice_number
        for r in application.redemptions
    ):
        raise DuplicateInvoice(f"invoice {command.invoice_number} was already submitted")
    if command.amount <= 0:
        raise OverBalance("a redemption must be for a positive amount", field="amount")
    if command.amount > voucher.balance:
        raise OverBalance(
            f"the voucher has {voucher.balance} won left; {command.amount} won was asked",
            field="amount",
            balance=voucher.balance,
        )
    if command.service_category not in command.provider_categories:
        raise CategoryNotAllowed(
            f"provider {command.provider_id} is not registered for {command.service_category!r}",
            field="service_category",
        )
    if command.service_category not in command.programme.service_categories:
        raise CategoryNotAllowed(
            f"the programme does not pay for {command.service_category!r} services",
            field="service_category",
        )
    return [
        RedemptionRequested(
            redemption_id=command.redemption_id,
            voucher_id=voucher.id,
            provider_id=command.provider_id,
            invoice_number=command.invoice_number,
            amount=command.amount,
            service_category=command.service_category,
        ).event()
    ]


@decide.register
def _pay(command: PayRedemption, state: Application | None) -> list[NewEvent]:
    if state is None or state.voucher is None:
        raise InvalidTransition("there is no voucher to pay from")
    redemption = state.redemption(command.redemption_id)
    if redemption is None:
        raise InvalidTransition(f"no redemption {command.redemption_id} on this voucher")
    if redemption.status == "paid":
        return []  # paid already: paying again must change nothing
    if redemption.status == "cancelled":
        raise InvalidTransition(
            f"redemption {redemption.id} was cancelled: it is not paid", current_status="cancelled"
        )
    events = [
        RedemptionPaid(
            redemption_id=redemption.id,
            voucher_id=state.voucher.id,
            payout_id=command.payout_id,
            provider_id=redemption.provider_id,
            amount=redemption.amount,
        ).event()
    ]
    spent = state.voucher.balance == 0 and len(state.pending_redemptions) == 1
    if spent and state.status is Status.ISSUED:
        events.append(VoucherClosed(voucher_id=state.voucher.id).event())
    return events


@decide.register
def _fail_payout(command: FailPayout, state: Application | None) -> list[NewEvent]:
    voucher, redemption = _redemption_in(state, command.redemption_id, "requested", "fail")
    return [
        RedemptionPayoutFailed(
            redemption_id=redemption.id,
            voucher_id=voucher.id,
            payout_id=command.payout_id,
            attempts=command.attempts,
            reason=command.reason[:1000],
        ).event()
    ]


@decide.register
def _retry_payout(command: RetryPayout, state: Application | None) -> list[NewEvent]:
    voucher, redemption = _redemption_in(state, command.redemption_id, "payout_failed", "retry")
    return [
        RedemptionPayoutRetried(
            redemption_id=redemption.id,
            voucher_id=voucher.id,
            officer=command.officer,
            reason=command.reason,
        ).event()
    ]


@decide.register
def _cancel_redemption(command: CancelRedemption, state: Application | None) -> list[NewEvent]:
    voucher, redemption = _redemption_in(state, command.redemption_id, "payout_failed", "cancel")
    assert state is not None
    if state.status is not Status.ISSUED:
        raise InvalidTransition(
            f"the voucher is {state.status}: its failed payout can be retried, not cancelled",
            current_status=str(state.status),
        )
    return [
        RedemptionCancelled(
            redemption_id=redemption.id,
            voucher_id=voucher.id,
            officer=command.officer,
            reason=command.reason,
            returned_amount=redemption.amount,
        ).event()
    ]


def _redemption_in(
    state: Application | None, redemption_id: str, status: str, action: str
) -> tuple[Voucher, Redemption]:
    """The voucher and its redemption ``redemption_id``, which must be ``status`` to ``action``."""
    if state is None or state.voucher is None:
        raise NotFound("there is no such voucher")
    redemption = state.redemption(redemption_id)
    if redemption is None:
        raise NotFound(f"there is no redemption {redemption_id} on voucher {state.voucher.id}")
    if redemption.status != status:
        raise InvalidTransition(
            f"cannot {action} the payout of a redemption that is {redemption.status}",
            current_status=redemption.status,
        )
    return state.voucher, redemption


@decide.register
def _expire(command: ExpireVoucher, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.ISSUED, "expire")
    voucher = application.voucher
    assert voucher is not None
    if command.today <= voucher.expires_on:
        raise InvalidTransition(f"the voucher is valid until {voucher.expires_on}")
    return [VoucherExpired(voucher_id=voucher.id, returned_amount=voucher.balance).event()]


# --- helpers ------------------------------------------------------------------------------


def _require(state: Application | None, allowed: Any, action: str) -> Application:
    return require_status(state, allowed, action)


def _require_redeemable(state: Application | None, today: date) -> Application:
    if state is None or state.voucher is None:
        raise VoucherNotRedeemable("there is no such voucher")
    if state.status is not Status.ISSUED:
        raise VoucherNotRedeemable(
            f"the voucher is {state.status}", current_status=str(state.status)
        )
    if today > state.voucher.expires_on:
        raise VoucherNotRedeemable(
            f"the voucher expired on {state.voucher.expires_on}", current_status="expired"
        )
    return state


def _rejected(
    reasons: list[Reason],
    *,
    stage: str,
    officer: str | None = None,
    facts: VerificationFacts | None = None,
) -> NewEvent:
    return ApplicationRejected.of(
        reasons,
        stage="verification" if stage == "verification" else "decision",
        officer=officer,
        facts=facts,
    ).event()


DECIDER: Decider[Application] = Decider(decide, evolve)
"""The voucher programme's decider, as the service kit and the auditors run it."""


__all__ = [
    "DECIDER",
    "BudgetExhausted",
    "CancelRedemption",
    "DecideApplication",
    "ExpireVoucher",
    "FailPayout",
    "IssueVoucher",
    "PayRedemption",
    "RequestRedemption",
    "RetryPayout",
    "SubmitApplication",
    "VerifyApplication",
    "WithdrawApplication",
    "decide",
    "today_in_korea",
    "verification_failures",
]
