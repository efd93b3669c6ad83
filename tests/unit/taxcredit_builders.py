"""Builders for taxcredit decider tests: commands with sensible defaults, and a hash-chained stream.

``TaxcreditStream`` plays "given events / when command / then events": each command is
decided against the current state, the new events are sealed onto the application's
chain (prev_hash linked, aggregate_seq counting from 1) and folded in with ``evolve``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from services.taxcredit.domain.decider import (
    DECIDER,
    ClawBack,
    DecideClaim,
    IssueCertificate,
    SubmitClaim,
    VerifyClaim,
    WithdrawClaim,
)
from services.taxcredit.domain.events import (
    Investment,
    MnaClaim,
    Programme,
    StrategicInvestmentClaim,
    VentureInvestmentClaim,
)
from services.taxcredit.domain.model import Application
from services.taxcredit.domain.rates import PublishedTable, RateTable, load_rate_tables
from shared.contracts import Actor, Role
from shared.domain import Decision, Firm, FirmSize, StrategicTechnology, load_technologies
from shared.domain.support import SupportFacts
from shared.kit.catalogue import load_document, strategic_technologies
from tests.unit.streams import FIRM_ID as FIRM_ID
from tests.unit.streams import T0 as T0
from tests.unit.streams import DecidedStream
from tests.unit.streams import types as types

# --- the default rate table and catalogue (read once; every test after that is pure) ---------

RATES_DOC: dict[str, Any] = load_document("services.taxcredit.rates", "default.json")
[DEFAULT_TABLE] = load_rate_tables(RATES_DOC)
"""2023-1: large/medium 0.15, SME 0.25, +0.10 of the increase, M&A 0.10, venture 0.05."""
THRESHOLD = DEFAULT_TABLE.four_eyes_threshold  # 500,000,000 won

DEFAULT_PUBLISHED = PublishedTable(
    table=DEFAULT_TABLE, published_at=datetime(2022, 12, 20, 1, 0, tzinfo=UTC), sequence=1
)
TABLES: tuple[PublishedTable, ...] = (DEFAULT_PUBLISHED,)

_CATALOGUE_DOC: dict[str, Any] = strategic_technologies()
CATALOGUE_VERSION: str = _CATALOGUE_DOC["version"]
TECHNOLOGIES: dict[str, StrategicTechnology] = load_technologies(_CATALOGUE_DOC)

COMBINED_CAP = 50_000_000_000
"""The packaged support policy's combined yearly cap (policy 2026-1)."""

CELL_CULTURE = "biopharma-animal-cell-culture"
PURIFICATION = "biopharma-purification"

# --- people ---------------------------------------------------------------------------

TARGET_ID = "234-56-78901"
VENTURE_ID = "345-67-89012"
FIRM_USER = Actor(sub="firm-user-1", role=Role.FIRM)
OFFICER_KIM = "officer-kim"
OFFICER_LEE = "officer-lee"
OFFICER_PARK = "officer-park"
VERIFIER = Actor(sub="taxcredit-verifier", role=Role.SYSTEM)
CERTIFIER = Actor(sub="taxcredit-certifier", role=Role.SYSTEM)

# --- the calendar -----------------------------------------------------------------------

"""The stream's clock starts here; the submission is sealed a minute later (09:31 KST)."""
SUBMISSION_DAY = date(2026, 3, 2)
TAX_YEAR = 2025

# --- command builders -------------------------------------------------------------------


def a_firm(**overrides: Any) -> Firm:
    defaults: dict[str, Any] = {
        "firm_id": FIRM_ID,
        "name": "Osong Biologics",
        "founded_on": date(2015, 4, 1),
        "size": FirmSize.SME,
        "cluster": "osong-bio",
        "industry": "advanced_bio",
        "technology_innovative": False,
    }
    return Firm(**{**defaults, **overrides})


def submit_strategic(
    current_year: int = 400_000_000,
    previous_years: tuple[int, ...] = (300_000_000, 200_000_000, 100_000_000),
    *,
    technology: str = CELL_CULTURE,
    reference: str = "FAC-2025-001",
    tax_year: int = TAX_YEAR,
    firm: Firm | None = None,
    cost_reference: str | None = None,
    **firm_overrides: Any,
) -> SubmitClaim:
    """By default an SME's claim for 120,000,000 won: 0.25 × 400M + 0.10 × (400M − 200M)."""
    return SubmitClaim(
        programme=Programme.STRATEGIC_INVESTMENT,
        tax_year=tax_year,
        firm=firm or a_firm(**firm_overrides),
        inputs=StrategicInvestmentClaim(
            technology=technology,
            investment=Investment(current_year=current_year, previous_years=previous_years),
            facility_reference=reference,
        ),
        cost_reference=cost_reference,
    )


def submit_mna(
    technology_value: int = 1_234_567_891,
    *,
    target: str = TARGET_ID,
    technology: str = PURIFICATION,
    reference: str = "DEAL-2025-007",
    tax_year: int = TAX_YEAR,
    cost_reference: str | None = None,
    **firm_overrides: Any,
) -> SubmitClaim:
    """By default a technology-innovative SME's claim for 123,456,789 won."""
    firm = a_firm(**{"technology_innovative": True, **firm_overrides})
    return SubmitClaim(
        programme=Programme.MNA_TECHNOLOGY_VALUE,
        tax_year=tax_year,
        firm=firm,
        inputs=MnaClaim(
            technology=technology,
            target_firm_id=target,
            technology_value=technology_value,
            deal_reference=reference,
        ),
        cost_reference=cost_reference,
    )


def submit_venture(
    amount_invested: int = 987_654_321,
    *,
    investee: str = VENTURE_ID,
    reference: str = "INV-2025-042",
    tax_year: int = TAX_YEAR,
    cost_reference: str | None = None,
    **firm_overrides: Any,
) -> SubmitClaim:
    """By default a large corporation's claim for 49,382,716 won."""
    firm = a_firm(**{"size": FirmSize.LARGE, **firm_overrides})
    return SubmitClaim(
        programme=Programme.CORPORATE_VENTURE_INVESTMENT,
        tax_year=tax_year,
        firm=firm,
        inputs=VentureInvestmentClaim(
            investee=investee, amount_invested=amount_invested, investment_reference=reference
        ),
        cost_reference=cost_reference,
    )


def verify(
    *,
    tables: tuple[PublishedTable, ...] = TABLES,
    technologies: dict[str, StrategicTechnology] | None = None,
    catalogue_version: str = CATALOGUE_VERSION,
    claimed_by: str | None = None,
    support: SupportFacts | None = None,
) -> VerifyClaim:
    """Without ``support``, the cross-programme support limits are not checked."""
    return VerifyClaim(
        tables=tables,
        technologies=TECHNOLOGIES if technologies is None else technologies,
        catalogue_version=catalogue_version,
        claimed_by=claimed_by,
        support=support,
    )


def support(
    cost_reference: str | None = "FAC-2025-001",
    *,
    combined_support: int = 0,
    supported_elsewhere: str | None = None,
    year: int = TAX_YEAR,
    cap: int = COMBINED_CAP,
) -> SupportFacts:
    """What the support read model shows for a claim: by default, nothing granted anywhere."""
    return SupportFacts(
        policy_version="2026-1",
        year=year,
        cost_reference=cost_reference,
        supported_elsewhere=supported_elsewhere,
        combined_support=combined_support,
        combined_yearly_cap=cap,
    )


def approve(officer: str = OFFICER_KIM, *, reason: str = "figures check out") -> DecideClaim:
    return DecideClaim(officer=officer, decision=Decision.APPROVE, reason=reason)


def reject(
    officer: str = OFFICER_KIM, *, reason: str = "the facility is not in the cluster"
) -> DecideClaim:
    return DecideClaim(officer=officer, decision=Decision.REJECT, reason=reason)


def withdraw(reason: str = "we will claim next year") -> WithdrawClaim:
    return WithdrawClaim(reason=reason)


def issue(number: str = "TC-2026-000001", *, issued_on: date = SUBMISSION_DAY) -> IssueCertificate:
    return IssueCertificate(number=number, issued_on=issued_on)


def claw_back(
    amount: int | None = None,
    *,
    officer: str = OFFICER_PARK,
    reason: str = "the facility was sold within two years",
) -> ClawBack:
    return ClawBack(officer=officer, reason=reason, amount=amount)


def published(table: RateTable | dict[str, Any], *, at: datetime, sequence: int) -> PublishedTable:
    if isinstance(table, dict):
        table = RateTable.from_json(table)
    return PublishedTable(table=table, published_at=at, sequence=sequence)


def a_table(version: str, valid_from: str, *, sme: str = "0.25", **changes: Any) -> RateTable:
    """The default table under another version, validity and (optionally) SME base rate."""
    doc = DEFAULT_TABLE.to_json()
    doc["strategic_investment"]["base_rate"]["sme"] = sme
    return RateTable.from_json({**doc, "version": version, "valid_from": valid_from, **changes})


# --- the stream -------------------------------------------------------------------------


def actor_for(command: Any) -> Actor:
    """Who sends each kind of command in the running service."""
    match command:
        case SubmitClaim() | WithdrawClaim():
            return FIRM_USER
        case VerifyClaim():
            return VERIFIER
        case DecideClaim(officer=officer) | ClawBack(officer=officer):
            return Actor(sub=officer, role=Role.OFFICER)
        case IssueCertificate():
            return CERTIFIER
    raise TypeError(f"no actor for {type(command).__name__}")


class TaxcreditStream(DecidedStream[Application]):
    """One application's log, built by deciding commands against its own fold."""

    decider = DECIDER
    actor_for = staticmethod(actor_for)


# --- common starting points ---------------------------------------------------------------


def submitted(command: SubmitClaim | None = None) -> TaxcreditStream:
    return TaxcreditStream().given(command or submit_strategic())


def verified(command: SubmitClaim | None = None) -> TaxcreditStream:
    return submitted(command).given(verify())


def approved(command: SubmitClaim | None = None) -> TaxcreditStream:
    stream = verified(command)
    if stream.app.needs_two_approvals:
        return stream.given(approve(OFFICER_KIM), approve(OFFICER_LEE))
    return stream.given(approve(OFFICER_KIM))


def certified(command: SubmitClaim | None = None) -> TaxcreditStream:
    return approved(command).given(issue())
