"""The taxcredit events: typed payloads, their schema versions, and the registry folds read.

Application events live on the application's aggregate; ``taxcredit.rate_table.published``
lives on its own aggregate, ``rate-table:<version>``. ``taxcredit.certificate.issued`` is
the grant the other programmes read for cross-programme support limits;
``support.conflict.detected`` (see :mod:`shared.domain.support`) lives on an aggregate
of its own, named after the conflict, and is recorded by the support detector when a
certificate turns out to overlap another programme's grant.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from services.taxcredit.domain.rates import Credit, RateTable
from shared.domain import EventPayload, EventRegistry, Firm, Part, lifecycle
from shared.domain.support import SupportConflictDetected, SupportFacts

MAX_WON = 2**53 - 1
"""The largest amount a JSON event can carry exactly (RFC 8785 numbers)."""

Won = Annotated[int, Field(ge=0, le=MAX_WON)]
PositiveWon = Annotated[int, Field(gt=0, le=MAX_WON)]
Reference = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=2000)]


class Programme(StrEnum):
    """The tax credits the service certifies."""

    STRATEGIC_INVESTMENT = "strategic_investment"
    """Investment in national strategic technology (15 % / 25 %, plus 10 % of the increase)."""
    MNA_TECHNOLOGY_VALUE = "mna_technology_value"
    """A technology-innovative SME acquiring a firm: 10 % of the technology value acquired."""
    CORPORATE_VENTURE_INVESTMENT = "corporate_venture_investment"
    """A corporation investing in a venture firm or a mother fund."""


# --- what a firm claims (a union discriminated on "programme") ---------------------------------


class Investment(Part):
    current_year: PositiveWon
    """The investment of the tax year, in won."""
    previous_years: tuple[Won, ...] = Field(default=(), max_length=3)
    """The investments of tax_year − 1, − 2, − 3 in that order; fewer for a younger firm."""


class StrategicInvestmentClaim(Part):
    programme: Literal[Programme.STRATEGIC_INVESTMENT] = Programme.STRATEGIC_INVESTMENT
    technology: Reference
    """The id of a national strategic technology in the catalogue."""
    investment: Investment
    facility_reference: Reference

    @property
    def claim_reference(self) -> str:
        return self.facility_reference


class MnaClaim(Part):
    programme: Literal[Programme.MNA_TECHNOLOGY_VALUE] = Programme.MNA_TECHNOLOGY_VALUE
    technology: Reference
    target_firm_id: Reference
    technology_value: PositiveWon
    deal_reference: Reference

    @property
    def claim_reference(self) -> str:
        return self.deal_reference


class VentureInvestmentClaim(Part):
    programme: Literal[Programme.CORPORATE_VENTURE_INVESTMENT] = (
        Programme.CORPORATE_VENTURE_INVESTMENT
    )
    investee: Reference
    """A venture firm's business registration number, or a fund id."""
    amount_invested: PositiveWon
    investment_reference: Reference

    @property
    def claim_reference(self) -> str:
        return self.investment_reference


Claim = Annotated[
    StrategicInvestmentClaim | MnaClaim | VentureInvestmentClaim,
    Field(discriminator="programme"),
]


# --- the facts a verification was made on --------------------------------------------------------


class VerificationFacts(Part):
    """What verification looked at, so an auditor can redo it from the log alone."""

    as_of: date
    """The submission's date in Korea: the table in force is chosen as of this date."""
    table_version: str | None
    table_valid_from: date | None
    catalogue_version: str | None
    """The strategic-technology catalogue consulted (None when the programme needs none)."""
    technology: str | None
    """The technology id checked against the catalogue (None for venture investments)."""
    claim_reference: str
    """The facility, deal or investment reference checked for duplicate claims."""
    checks: tuple[str, ...]
    """The checks run, in order."""
    support: SupportFacts | None = None
    """The other programmes' grants for the cost, and the firm's combined support in the tax
    year, as the support read model showed them (None in events from before the check)."""


# --- application events ------------------------------------------------------------------------


class ClaimSubmitted(EventPayload):
    event_type: ClassVar[str] = "taxcredit.application.submitted"

    programme: Programme
    tax_year: int = Field(ge=1900, le=9999)
    firm: Firm
    claim: Claim
    """The programme's inputs; ``claim.programme`` equals ``programme``."""
    cost_reference: Reference | None = None
    """The cost the credit covers, as the firm names it across programmes (the reference a
    voucher or a fund investment for the same cost would name). None: the claim's own
    facility, deal or investment reference is the cost (and in events from before it)."""

    @model_validator(mode="after")
    def _one_programme(self) -> ClaimSubmitted:
        if self.claim.programme != self.programme:
            raise ValueError(
                f"a {self.programme} application carries a {self.claim.programme} claim"
            )
        return self


class ClaimVerified(EventPayload):
    event_type: ClassVar[str] = "taxcredit.application.verified"

    credit: Credit
    four_eyes_threshold: Won
    """From the table in force: a credit at or above it needs two approvals."""
    facts: VerificationFacts


class ClaimRejected(lifecycle.RejectionPayload):
    """Verification found the claim wanting, an officer refused it, or (stage
    ``certification``) the support limits, checked again as the certificate was to be
    issued, were passed."""

    event_type: ClassVar[str] = "taxcredit.application.rejected"
    stage: Literal["verification", "decision", "certification"]  # type: ignore[assignment]
    facts: VerificationFacts | None = None


class ClaimApprovalRecorded(lifecycle.ApprovalPayload):
    """The first of two approvals a credit at or above the four-eyes threshold needs."""

    event_type: ClassVar[str] = "taxcredit.application.approval_recorded"


class ClaimApproved(lifecycle.ApprovalPayload):
    """The credit is approved for certification (``amount``: the verified credit)."""

    event_type: ClassVar[str] = "taxcredit.application.approved"


class ClaimWithdrawn(lifecycle.WithdrawalPayload):
    """The firm withdrew its claim before approval."""

    event_type: ClassVar[str] = "taxcredit.application.withdrawn"


class CertificateIssued(EventPayload):
    """The grant: the credit the tax authority will honour (read by the other programmes)."""

    event_type: ClassVar[str] = "taxcredit.certificate.issued"

    number: Reference
    amount: Won
    issued_on: date
    firm_id: str
    tax_year: int
    programme: Programme
    cost_reference: str
    """The cost the credit covers: the submitted ``cost_reference``, else the facility, deal
    or investment reference."""


class CertificateClawedBack(EventPayload):
    event_type: ClassVar[str] = "taxcredit.certificate.clawed_back"

    number: Reference
    amount: PositiveWon
    remaining: Won
    """What the certificate is still worth after this clawback (0: revoked)."""
    reason: Text
    officer: str


class RateTablePublished(RateTable, EventPayload):
    """A ministry publishes a rate table (on the aggregate ``rate-table:<version>``)."""

    event_type: ClassVar[str] = "taxcredit.rate_table.published"

    @property
    def table(self) -> RateTable:
        return RateTable.from_json(self.to_json())


class E:
    """Registered event type names, as each payload class declares them."""

    SUBMITTED = ClaimSubmitted.event_type
    VERIFIED = ClaimVerified.event_type
    REJECTED = ClaimRejected.event_type
    APPROVAL_RECORDED = ClaimApprovalRecorded.event_type
    APPROVED = ClaimApproved.event_type
    WITHDRAWN = ClaimWithdrawn.event_type
    CERTIFICATE_ISSUED = CertificateIssued.event_type
    CERTIFICATE_CLAWED_BACK = CertificateClawedBack.event_type
    RATE_TABLE_PUBLISHED = RateTablePublished.event_type
    SUPPORT_CONFLICT = SupportConflictDetected.event_type
    """Recorded by the support detector on an aggregate of its own (see shared.domain.support)."""


APPLICATION_EVENTS: tuple[type[EventPayload], ...] = (
    ClaimSubmitted,
    ClaimVerified,
    ClaimRejected,
    ClaimApprovalRecorded,
    ClaimApproved,
    ClaimWithdrawn,
    CertificateIssued,
    CertificateClawedBack,
)

EVENTS = EventRegistry(
    "taxcredit", [*APPLICATION_EVENTS, RateTablePublished, SupportConflictDetected]
)

EVENTS.upcaster(E.REJECTED, from_version=1)(lifecycle.rejection_v1_compared_no_support)


def rate_table_aggregate(version: str) -> str:
    """The aggregate id a rate table is published on."""
    return f"rate-table:{version}"


__all__ = [
    "APPLICATION_EVENTS",
    "EVENTS",
    "MAX_WON",
    "CertificateClawedBack",
    "CertificateIssued",
    "Claim",
    "ClaimApprovalRecorded",
    "ClaimApproved",
    "ClaimRejected",
    "ClaimSubmitted",
    "ClaimVerified",
    "ClaimWithdrawn",
    "E",
    "Investment",
    "MnaClaim",
    "Programme",
    "RateTablePublished",
    "StrategicInvestmentClaim",
    "SupportConflictDetected",
    "VentureInvestmentClaim",
    "VerificationFacts",
    "rate_table_aggregate",
]
