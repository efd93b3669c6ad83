"""Builders for voucher decider tests: commands with sensible defaults, and a hash-chained stream.

``VoucherStream`` plays "given events / when command / then events": each command is
decided against the current state, the new events are sealed onto the application's
chain (prev_hash linked, aggregate_seq counting from 1) and folded in with ``evolve``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from services.voucher.domain.decider import (
    DECIDER,
    DecideApplication,
    ExpireVoucher,
    IssueVoucher,
    PayRedemption,
    RequestRedemption,
    SubmitApplication,
    VerifyApplication,
    WithdrawApplication,
)
from services.voucher.domain.model import Application, Firm
from services.voucher.domain.programmes import Programme, load_catalogue
from shared.contracts import Actor, Role
from shared.domain import Decision
from shared.domain.support import SupportFacts
from shared.kit.catalogue import load_document
from tests.unit.streams import FIRM_ID as FIRM_ID
from tests.unit.streams import T0 as T0
from tests.unit.streams import DecidedStream
from tests.unit.streams import types as types

# --- the default catalogue (read once; every test after that is pure) ------------------

_CATALOGUE_DOC: dict[str, Any] = load_document("services.voucher.catalogue", "default.json")
PROGRAMMES: dict[str, Programme] = load_catalogue(_CATALOGUE_DOC)
PROVIDER_CATEGORIES: dict[str, frozenset[str]] = {
    p["id"]: frozenset(p["service_categories"]) for p in _CATALOGUE_DOC["providers"]
}

STARTUP = PROGRAMMES["cluster-startup-support-2026"]
"""7 years, 30,000,000 won per firm, four eyes above 10,000,000 won, valid 365 days."""
BIO = PROGRAMMES["bio-kendall-voucher-2026"]

LAW_FIRM = "prov-hanbit-law"  # legal, intellectual_property
ACCOUNTANT = "prov-samil-accounting"  # accounting, tax

# --- people ---------------------------------------------------------------------------

FIRM_USER = Actor(sub="firm-user-1", role=Role.FIRM)
OFFICER_KIM = "officer-kim"
OFFICER_LEE = "officer-lee"
OFFICER_PARK = "officer-park"
VERIFIER = Actor(sub="voucher-verifier", role=Role.SYSTEM)
PAYOUT_STAGE = Actor(sub="voucher-payout", role=Role.SYSTEM)
EXPIRY = Actor(sub="voucher-expiry", role=Role.SYSTEM)

# --- the calendar -----------------------------------------------------------------------

TODAY = date(2026, 3, 2)

# --- the support policy --------------------------------------------------------------------

COMBINED_CAP = 50_000_000_000
"""The combined yearly cap across programmes the verification tests assume (the default's)."""
POLICY_VERSION = "test-policy"

# --- command builders -------------------------------------------------------------------


def a_firm(**overrides: Any) -> Firm:
    defaults: dict[str, Any] = {
        "firm_id": FIRM_ID,
        "name": "Osong Cell Therapeutics",
        "founded_on": date(2023, 5, 1),
        "size": "sme",
        "cluster": "osong-bio",
        "industry": "advanced_bio",
    }
    return Firm(**{**defaults, **overrides})


def submit(
    *,
    amount: int = 8_000_000,
    programme_id: str = STARTUP.id,
    service_category: str = "legal",
    firm: Firm | None = None,
    cost_reference: str | None = None,
    **firm_overrides: Any,
) -> SubmitApplication:
    return SubmitApplication(
        programme_id=programme_id,
        firm=firm or a_firm(**firm_overrides),
        service_category=service_category,
        requested_amount=amount,
        purpose="patent filings and licence agreements for a cell-culture process",
        cost_reference=cost_reference,
    )


def verify(
    *,
    programme: Programme | None = STARTUP,
    today: date = TODAY,
    held: int = 0,
    other_open: str | None = None,
    cost_reference: str | None = None,
    supported_elsewhere: str | None = None,
    combined_support: int = 0,
    combined_cap: int = COMBINED_CAP,
) -> VerifyApplication:
    """Verification as of ``today``; ``cost_reference`` must be the application's."""
    return VerifyApplication(
        programme=programme,
        today=today,
        held_in_programme=held,
        other_open_application=other_open,
        support=SupportFacts(
            policy_version=POLICY_VERSION,
            year=today.year,
            cost_reference=cost_reference,
            supported_elsewhere=supported_elsewhere,
            combined_support=combined_support,
            combined_yearly_cap=combined_cap,
        ),
    )


def approve(
    officer: str = OFFICER_KIM,
    *,
    amount: int | None = None,
    programme: Programme = STARTUP,
    reason: str = "meets the programme rules",
) -> DecideApplication:
    return DecideApplication(
        officer=officer,
        decision=Decision.APPROVE,
        reason=reason,
        programme=programme,
        approved_amount=amount,
    )


def reject(
    officer: str = OFFICER_KIM, *, reason: str = "purpose is not a business-support service"
) -> DecideApplication:
    return DecideApplication(
        officer=officer, decision=Decision.REJECT, reason=reason, programme=STARTUP
    )


def withdraw(reason: str = "we found private funding") -> WithdrawApplication:
    return WithdrawApplication(reason=reason)


def issue(
    voucher_id: str = "vch-1", *, today: date = TODAY, programme: Programme = STARTUP
) -> IssueVoucher:
    return IssueVoucher(voucher_id=voucher_id, programme=programme, today=today)


def redeem(
    amount: int,
    *,
    invoice: str = "INV-1",
    redemption_id: str | None = None,
    provider: str = LAW_FIRM,
    category: str = "legal",
    categories: frozenset[str] | None = None,
    today: date = TODAY,
    programme: Programme = STARTUP,
) -> RequestRedemption:
    return RequestRedemption(
        redemption_id=redemption_id or f"rdm-{provider}-{invoice}",
        provider_id=provider,
        provider_categories=(
            categories if categories is not None else PROVIDER_CATEGORIES[provider]
        ),
        invoice_number=invoice,
        amount=amount,
        service_category=category,
        programme=programme,
        today=today,
    )


def pay(redemption_id: str, payout_id: str | None = None) -> PayRedemption:
    return PayRedemption(redemption_id=redemption_id, payout_id=payout_id or f"pay-{redemption_id}")


def expire(today: date) -> ExpireVoucher:
    return ExpireVoucher(today=today)


# --- the stream -------------------------------------------------------------------------


def actor_for(command: Any) -> Actor:
    """Who sends each kind of command in the running service."""
    match command:
        case SubmitApplication() | WithdrawApplication():
            return FIRM_USER
        case VerifyApplication():
            return VERIFIER
        case DecideApplication(officer=officer):
            return Actor(sub=officer, role=Role.OFFICER)
        case RequestRedemption(provider_id=provider_id):
            return Actor(sub=provider_id, role=Role.PROVIDER)
        case IssueVoucher() | PayRedemption():
            return PAYOUT_STAGE
        case ExpireVoucher():
            return EXPIRY
    raise TypeError(f"no actor for {type(command).__name__}")


class VoucherStream(DecidedStream[Application]):
    """One application's log, built by deciding commands against its own fold."""

    decider = DECIDER
    actor_for = staticmethod(actor_for)


# --- common starting points ---------------------------------------------------------------


def submitted(amount: int = 8_000_000, **submit_overrides: Any) -> VoucherStream:
    return VoucherStream().given(submit(amount=amount, **submit_overrides))


def verified(amount: int = 8_000_000, **submit_overrides: Any) -> VoucherStream:
    stream = submitted(amount, **submit_overrides)
    return stream.given(verify(cost_reference=stream.app.cost_reference))


def approved(amount: int = 8_000_000, **submit_overrides: Any) -> VoucherStream:
    stream = verified(amount, **submit_overrides)
    if amount > STARTUP.four_eyes_threshold:
        return stream.given(approve(OFFICER_KIM), approve(OFFICER_LEE))
    return stream.given(approve(OFFICER_KIM))


def issued(amount: int = 8_000_000, *, today: date = TODAY) -> VoucherStream:
    return approved(amount).given(issue(today=today))
