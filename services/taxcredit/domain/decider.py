"""Commands and the decider: ``decide(command, state) -> events``, pure, no I/O.

Facts a rule needs from outside the application (the published rate tables, the
strategic-technology catalogue, which application already claims a reference, the other
programmes' grants for the cost and the firm's combined support in the tax year) travel
in the command, so the service, the tests and the auditors run the same decision.
Dates come from the log: the table in force is chosen as of the submission, never
as of the moment verification happens to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, NamedTuple

from services.taxcredit.domain.events import (
    CertificateClawedBack,
    CertificateIssued,
    ClaimApprovalRecorded,
    ClaimApproved,
    ClaimRejected,
    ClaimSubmitted,
    ClaimVerified,
    ClaimWithdrawn,
    MnaClaim,
    StrategicInvestmentClaim,
    VentureInvestmentClaim,
    VerificationFacts,
)
from services.taxcredit.domain.model import (
    Application,
    ClaimInputs,
    Programme,
    Status,
    evolve,
)
from services.taxcredit.domain.rates import (
    Credit,
    PublishedTable,
    RateTable,
    lookup_table,
    mna_technology_credit,
    strategic_investment_credit,
    venture_investment_credit,
)
from shared.contracts import NewEvent
from shared.domain import (
    Decider,
    Decision,
    Firm,
    FirmSize,
    OfficerDecides,
    Reason,
    StrategicTechnology,
    Unprocessable,
    Withdraw,
    decide_by_command,
    firm_identity_failures,
    officer_decision,
    require_new,
    require_status,
)
from shared.domain.support import RefuseGrant, SupportFacts, support_failures

# --- commands -----------------------------------------------------------------------------


class SubmitClaim(NamedTuple):
    """A firm (or a stage acting for one) claims a credit."""

    programme: Programme
    tax_year: int
    firm: Firm
    inputs: ClaimInputs
    """The programme's inputs; ``inputs.programme`` must be ``programme``."""
    cost_reference: str | None = None
    """The cost the credit covers across programmes; None: the claim's own reference."""


class VerifyClaim(NamedTuple):
    """Automatic verification, with what it needs from outside the claim."""

    tables: tuple[PublishedTable, ...]
    """Every rate table published so far; the decider picks the one in force at submission."""
    technologies: Mapping[str, StrategicTechnology]
    catalogue_version: str
    claimed_by: str | None
    """The id of an application holding the same claim reference, if any (maybe this one)."""
    claimed_by_firm: str | None = None
    """The firm whose application that is."""
    support: SupportFacts | None = None
    """The other programmes' grants for the claim's cost, and the firm's combined support in
    its tax year (the year a credit counts in). None: the support limits are not checked."""


DecideClaim = OfficerDecides
"""An officer approves or rejects a verified claim (the amount is the verified credit)."""
WithdrawClaim = Withdraw
"""The firm withdraws its claim before approval."""


class IssueCertificate(NamedTuple):
    """The certificate stage issues the certificate of an approved claim."""

    number: str
    issued_on: date


class ClawBack(NamedTuple):
    """An officer claws back part or all of a certified credit."""

    officer: str
    reason: str
    amount: int | None = None
    """In won; None claws back all that remains (revoking the certificate)."""


# --- the decider --------------------------------------------------------------------------


decide = decide_by_command()
"""``decide(command, state) -> events`` for every command of the programme."""


@decide.register
def _submit(command: SubmitClaim, state: Application | None) -> list[NewEvent]:
    require_new(state)
    if command.inputs.programme != command.programme:
        raise Unprocessable(
            f"a {command.programme} application cannot carry {command.inputs.programme} inputs",
            field="programme",
        )
    terms = command._asdict()
    payload = ClaimSubmitted(claim=terms.pop("inputs"), **terms)
    return [payload.event()]


SUPPORT_CHECKS = ("no_duplicate_support", "combined_cap")
"""The cross-programme support limits, checked last: the cap needs the credit computed."""
DUPLICATE = "duplicate_support"


def checks_for(programme: Programme, *, support: bool = True) -> tuple[str, ...]:
    """The checks verification runs for ``programme``, in the order they are reported
    (``support``: with the cross-programme support limits, as the service always runs them)."""
    checks = ["firm_id_format", "firm_id_matches_token", "figures_consistent"]
    if programme is Programme.MNA_TECHNOLOGY_VALUE:
        checks.append("acquirer_technology_innovative_sme")
    if programme is not Programme.CORPORATE_VENTURE_INVESTMENT:
        checks.append("technology_listed")
    checks += ["claim_reference_unique", "rate_table_in_force"]
    if support:
        checks += SUPPORT_CHECKS
    return tuple(checks)


@decide.register
def _verify(command: VerifyClaim, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.SUBMITTED, "verify")
    lookup = lookup_table(command.tables, application.created_at, application.tax_year)
    technology = _technology(application.claim)
    facts = VerificationFacts(
        as_of=lookup.as_of,
        table_version=lookup.table.version if lookup.table else None,
        table_valid_from=lookup.table.valid_from if lookup.table else None,
        catalogue_version=command.catalogue_version if technology is not None else None,
        technology=technology,
        claim_reference=application.claim_reference,
        checks=checks_for(application.programme, support=command.support is not None),
        support=command.support,
    )
    reasons = verification_failures(application, command, as_of=lookup.as_of)
    table = lookup.table
    if table is None:
        reasons.append(Reason("no_rate_table", lookup.why_none or "no rate table is in force"))
        # without a credit there is no amount to add up against the cap; the cost still counts
        reasons += [r for r in support_failures(command.support, 0) if r.code == DUPLICATE]
        return [_rejected(reasons, stage="verification", facts=facts)]
    credit = credit_for(application, table)
    reasons += support_failures(command.support, credit.amount)
    if reasons:
        return [_rejected(reasons, stage="verification", facts=facts)]
    verified = ClaimVerified(
        credit=credit, four_eyes_threshold=table.four_eyes_threshold, facts=facts
    )
    return [verified.event()]


def verification_failures(
    application: Application, command: VerifyClaim, *, as_of: date
) -> list[Reason]:
    """Every rule the claim breaks (the rate table aside), in the order an officer reads them."""
    firm = application.firm
    claim = application.claim
    reasons: list[Reason] = []
    reasons.extend(firm_identity_failures(firm, application.firm_id))
    inconsistencies = figure_inconsistencies(application, as_of=as_of)
    if inconsistencies:
        reasons.append(Reason("inconsistent_figures", "; ".join(inconsistencies)))
    if isinstance(claim, MnaClaim) and not (
        firm.size is FirmSize.SME and firm.technology_innovative
    ):
        reasons.append(
            Reason(
                "not_technology_innovative_sme",
                f"the M&A credit is for technology-innovative SMEs; the firm is "
                f"{'a technology-innovative' if firm.technology_innovative else 'a'} "
                f"{firm.size} firm",
            )
        )
    technology = _technology(claim)
    if technology is not None and technology not in command.technologies:
        reasons.append(
            Reason(
                "technology_not_listed",
                f"{technology!r} is not a national strategic technology in catalogue "
                f"{command.catalogue_version}",
            )
        )
    if command.claimed_by is not None and command.claimed_by != application.id:
        holder = (  # another firm's application is not this firm's to know of
            f"application {command.claimed_by}"
            if command.claimed_by_firm == application.firm_id
            else "another firm's application"
        )
        reasons.append(
            Reason(
                "duplicate_claim",
                f"reference {application.claim_reference!r} is already claimed by {holder}",
            )
        )
    return reasons


def figure_inconsistencies(application: Application, *, as_of: date) -> list[str]:
    """Cross-field facts a schema cannot check, each as a sentence."""
    firm = application.firm
    claim = application.claim
    tax_year = application.tax_year
    found: list[str] = []
    if tax_year > as_of.year:
        found.append(f"tax year {tax_year} is after the year of submission ({as_of.year})")
    if firm.founded_on.year > tax_year:
        found.append(f"the firm was founded on {firm.founded_on}, after tax year {tax_year}")
    elif isinstance(claim, StrategicInvestmentClaim) and claim.investment.previous_years:
        years = len(claim.investment.previous_years)
        earliest = tax_year - years
        if firm.founded_on > date(earliest, 12, 31):
            found.append(
                f"{years} previous years are declared (back to {earliest}) but the firm was "
                f"founded on {firm.founded_on}"
            )
    own_ids = {firm.firm_id, application.firm_id}
    if isinstance(claim, MnaClaim) and claim.target_firm_id in own_ids:
        found.append(f"the M&A target {claim.target_firm_id} is the acquiring firm itself")
    if isinstance(claim, VentureInvestmentClaim) and claim.investee in own_ids:
        found.append(f"the investee {claim.investee} is the investing firm itself")
    return found


def credit_for(application: Application, table: RateTable) -> Credit:
    """The credit the claim earns under ``table``, with its trace."""
    claim = application.claim
    match claim:
        case StrategicInvestmentClaim(investment=investment):
            return strategic_investment_credit(
                table,
                size=application.firm.size,
                current_year=investment.current_year,
                previous_years=investment.previous_years,
            )
        case MnaClaim(technology_value=value):
            return mna_technology_credit(table, technology_value=value)
        case VentureInvestmentClaim(amount_invested=amount):
            return venture_investment_credit(table, amount_invested=amount)
    raise TypeError(f"no credit for {type(claim).__name__}")


@decide.register
def _decide(command: OfficerDecides, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.VERIFIED, str(command.decision))
    credit = application.credit
    if credit is None:
        raise ValueError(f"{application.id}: verified without a credit")
    outcome = officer_decision(
        decision=Decision(command.decision),
        officer=command.officer,
        submitted_by=application.submitted_by,
        approvals=application.approvals,
        needs_two=application.needs_two_approvals,
    )
    if outcome == "reject":
        reason = Reason("officer_rejected", command.reason or "rejected by an officer")
        return [_rejected([reason], stage="decision", officer=command.officer)]
    if outcome == "record":
        recorded = ClaimApprovalRecorded(
            officer=command.officer, amount=credit.amount, reason=command.reason
        )
        return [recorded.event()]
    approved = ClaimApproved(officer=command.officer, amount=credit.amount, reason=command.reason)
    return [approved.event()]


@decide.register
def _issue(command: IssueCertificate, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.APPROVED, "issue a certificate for")
    if application.approved_amount is None:
        raise ValueError(f"{application.id}: approved without an amount")
    grant = {  # what other programmes read to keep a firm's combined support in bounds
        "firm_id": application.firm_id,
        "tax_year": application.tax_year,
        "programme": application.programme,
        "cost_reference": application.cost_reference,
    }
    issued = CertificateIssued(
        number=command.number,
        amount=application.approved_amount,
        issued_on=command.issued_on,
        **grant,
    )
    return [issued.event()]


@decide.register
def _refuse_certificate(command: RefuseGrant, state: Application | None) -> list[NewEvent]:
    """The support limits, checked again as the certificate was to be issued, are passed."""
    _require(state, Status.APPROVED, "refuse the certificate of")
    refused = ClaimRejected.of(command.reasons, stage="certification", support=command.support)
    return [refused.event()]


@decide.register
def _claw_back(command: ClawBack, state: Application | None) -> list[NewEvent]:
    application = _require(state, Status.CERTIFIED, "claw back")
    certificate = application.certificate
    if certificate is None:
        raise ValueError(f"{application.id}: certified without a certificate")
    remaining = certificate.amount
    amount = remaining if command.amount is None else command.amount
    if amount <= 0:
        raise Unprocessable("a clawback must be of a positive amount", field="amount")
    if amount > remaining:
        raise Unprocessable(
            f"the certificate is worth {remaining} won; {amount} won cannot be clawed back",
            field="amount",
            remaining=remaining,
        )
    clawed = CertificateClawedBack(
        number=certificate.number,
        amount=amount,
        remaining=remaining - amount,
        reason=command.reason,
        officer=command.officer,
    )
    return [clawed.event()]


@decide.register
def _withdraw(command: Withdraw, state: Application | None) -> list[NewEvent]:
    _require(state, (Status.SUBMITTED, Status.VERIFIED), "withdraw")
    return [ClaimWithdrawn(reason=command.reason).event()]


DECIDER: Decider[Application] = Decider(decide=decide, evolve=evolve)


# --- helpers ------------------------------------------------------------------------------


def _require(state: Application | None, allowed: Any, action: str) -> Application:
    return require_status(state, allowed, action)


def _technology(claim: ClaimInputs) -> str | None:
    return claim.technology if isinstance(claim, StrategicInvestmentClaim | MnaClaim) else None


def _rejected(
    reasons: list[Reason],
    *,
    stage: Literal["verification", "decision"],
    officer: str | None = None,
    facts: VerificationFacts | None = None,
) -> NewEvent:
    return ClaimRejected.of(reasons, stage=stage, officer=officer, facts=facts).event()


__all__ = [
    "DECIDER",
    "SUPPORT_CHECKS",
    "ClawBack",
    "DecideClaim",
    "IssueCertificate",
    "SubmitClaim",
    "VerifyClaim",
    "WithdrawClaim",
    "checks_for",
    "credit_for",
    "decide",
    "figure_inconsistencies",
    "verification_failures",
]
