"""Builders for fund decider tests: commands with sensible defaults, and a hash-chained stream.

``FundStream`` plays "given events / when command / then events" on the shared
:class:`DecidedStream`: each command is decided against the current state, sealed onto
the application's chain and folded in with the fund's ``evolve``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from services.fund.domain.decider import (
    DECIDER,
    CancelInvestment,
    CommitInvestment,
    PayTranche,
    RefuseCommitment,
    ReleaseTranche,
    SubmitApplication,
    VerifyApplication,
    Vote,
    WithdrawApplication,
)
from services.fund.domain.events import (
    CoInvestor,
    DueDiligence,
    Instrument,
    TrancheTerms,
    VoteChoice,
)
from services.fund.domain.funds import Fund, Stage, catalogue_version, load_funds
from services.fund.domain.model import Application
from shared.contracts import Actor, Role
from shared.domain import Firm, FirmSize
from shared.domain.support import SupportFacts
from shared.kit.catalogue import load_document
from tests.unit.streams import FIRM_ID as FIRM_ID
from tests.unit.streams import T0 as T0
from tests.unit.streams import DecidedStream
from tests.unit.streams import types as types

# --- the default catalogue (read once; every test after that is pure) -------------------------

CATALOGUE_DOC: dict[str, Any] = load_document("services.fund.catalogue", "default.json")
CATALOGUE_VERSION = catalogue_version(CATALOGUE_DOC)
FUNDS: dict[str, Fund] = load_funds(CATALOGUE_DOC)

MEGA = FUNDS["bio-mega-fund"]
"""1 trillion won; rnd, clinical, export, mna; five members, quorum 3."""
GOIF = FUNDS["global-open-innovation-fund"]
"""200 billion won; rnd, clinical, export; officer-kim, officer-lee, officer-han, quorum 2."""

# --- people ---------------------------------------------------------------------------

FIRM_USER = Actor(sub="firm-user-1", role=Role.FIRM)
OFFICER_KIM = "officer-kim"
OFFICER_LEE = "officer-lee"
OFFICER_HAN = "officer-han"
OFFICER_PARK = "officer-park"  # on the mega fund's committee, not on the GOIF's
VERIFIER = Actor(sub="fund-verifier", role=Role.SYSTEM)
COMMITMENT_STAGE = Actor(sub="fund-commitment", role=Role.SYSTEM)
PAYOUT_STAGE = Actor(sub="fund-payout", role=Role.SYSTEM)

VENTURES_ID = "456-78-90123"
PARTNERS_ID = "567-89-01234"

# --- figures ------------------------------------------------------------------------------

AMOUNT = 3_000_000_000
TRANCHE_AMOUNTS = (1_000_000_000, 2_000_000_000)
COMBINED_CAP = 10_000_000_000
SUBMISSION_DAY = date(2026, 3, 2)
"""The stream's clock starts at 09:30 KST on this day; the submission is sealed at 09:31."""
COMMITMENT_DAY = date(2026, 5, 4)

# --- command builders -------------------------------------------------------------------


def a_firm(**overrides: Any) -> Firm:
    defaults: dict[str, Any] = {
        "firm_id": FIRM_ID,
        "name": "Osong Antibody Therapeutics",
        "founded_on": date(2019, 9, 1),
        "size": FirmSize.SME,
        "cluster": "osong-bio",
        "industry": "advanced_bio",
    }
    return Firm(**{**defaults, **overrides})


def tranches(*amounts: int) -> tuple[TrancheTerms, ...]:
    return tuple(
        TrancheTerms(amount=amount, milestone=f"milestone {n}")
        for n, amount in enumerate(amounts or TRANCHE_AMOUNTS, start=1)
    )


CO_INVESTORS = (
    CoInvestor(investor_firm_id=VENTURES_ID, name="Kendall Ventures", amount=1_500_000_000),
    CoInvestor(investor_firm_id=PARTNERS_ID, name="Osong Bio Partners", amount=500_000_000),
)


def diligence(**undone: bool) -> DueDiligence:
    return DueDiligence(
        **{"financials": True, "ip": True, "legal": True, "site_visit": True, **undone}
    )


def submit(
    amount: int = AMOUNT,
    *,
    fund: Fund = GOIF,
    stage: Stage = Stage.CLINICAL,
    planned: tuple[TrancheTerms, ...] | None = None,
    co_investors: tuple[CoInvestor, ...] = CO_INVESTORS,
    due_diligence: DueDiligence | None = None,
    reference: str = "TRIAL-2026-PH2-001",
    firm: Firm | None = None,
    **firm_overrides: Any,
) -> SubmitApplication:
    return SubmitApplication(
        fund_id=fund.id,
        firm=firm or a_firm(**firm_overrides),
        stage=stage,
        instrument=Instrument.EQUITY,
        amount=amount,
        pre_money_valuation=30_000_000_000,
        tranches=planned if planned is not None else tranches(),
        due_diligence=due_diligence or diligence(),
        cost_reference=reference,
        co_investors=co_investors,
    )


def verify(
    *,
    fund: Fund | None = GOIF,
    available: int | None = None,
    combined_support: int = 0,
    combined_cap: int = COMBINED_CAP,
    supported_elsewhere: str | None = None,
) -> VerifyApplication:
    return VerifyApplication(
        fund=fund,
        catalogue_version=CATALOGUE_VERSION,
        available_capacity=(fund.capacity if fund else 0) if available is None else available,
        support=SupportFacts(
            policy_version="test-policy",
            year=2026,
            cost_reference="TRIAL-2026-PH2-001",
            supported_elsewhere=supported_elsewhere,
            combined_support=combined_support,
            combined_yearly_cap=combined_cap,
        ),
    )


def vote_for(member: str, *, reason: str = "sound science, credible plan") -> Vote:
    return Vote(member=member, vote=VoteChoice.FOR, reason=reason)


def vote_against(member: str, *, reason: str = "valuation too rich") -> Vote:
    return Vote(member=member, vote=VoteChoice.AGAINST, reason=reason)


def conflicted(member: str, vote: VoteChoice = VoteChoice.FOR) -> Vote:
    return Vote(
        member=member, vote=vote, reason="I sit on the firm's board", conflict_of_interest=True
    )


def withdraw(reason: str = "we closed a private round") -> WithdrawApplication:
    return WithdrawApplication(reason=reason)


def commit(committed_on: date = COMMITMENT_DAY) -> CommitInvestment:
    return CommitInvestment(committed_on=committed_on)


def release(number: int, *, officer: str = OFFICER_PARK, evidence: str = "") -> ReleaseTranche:
    return ReleaseTranche(
        number=number,
        milestone_evidence=evidence or f"report for milestone {number}",
        officer=officer,
    )


def pay(number: int, payout_id: str | None = None) -> PayTranche:
    return PayTranche(number=number, payout_id=payout_id or f"payout-{number}")


def cancel(*, officer: str = OFFICER_PARK, reason: str = "trial halted") -> CancelInvestment:
    return CancelInvestment(officer=officer, reason=reason)


# --- the stream -------------------------------------------------------------------------


def actor_for(command: Any) -> Actor:
    """Who sends each kind of command in the running service."""
    match command:
        case SubmitApplication() | WithdrawApplication():
            return FIRM_USER
        case VerifyApplication():
            return VERIFIER
        case (
            Vote(member=officer)
            | ReleaseTranche(officer=officer)
            | CancelInvestment(officer=officer)
        ):
            return Actor(sub=officer, role=Role.OFFICER)
        case CommitInvestment() | RefuseCommitment():
            return COMMITMENT_STAGE
        case PayTranche():
            return PAYOUT_STAGE
    raise TypeError(f"no actor for {type(command).__name__}")


class FundStream(DecidedStream[Application]):
    """One application's log, built by deciding commands against its own fold."""

    decider = DECIDER
    actor_for = staticmethod(actor_for)


# --- common starting points ---------------------------------------------------------------


def submitted(command: SubmitApplication | None = None) -> FundStream:
    return FundStream().given(command or submit())


def verified(command: SubmitApplication | None = None) -> FundStream:
    return submitted(command).given(verify())


def approved(command: SubmitApplication | None = None) -> FundStream:
    return verified(command).given(vote_for(OFFICER_KIM), vote_for(OFFICER_LEE))


def committed(command: SubmitApplication | None = None) -> FundStream:
    return approved(command).given(commit())
