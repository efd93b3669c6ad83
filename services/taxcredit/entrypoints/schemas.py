"""Request bodies of the taxcredit endpoints: parsing only, the rules live in the domain.

An application is one of three claims, told apart by ``programme``; amounts are integer
won, never negative, and a history has at most three previous years.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from services.taxcredit.domain.events import (
    MAX_WON,
    Investment,
    MnaClaim,
    StrategicInvestmentClaim,
    VentureInvestmentClaim,
)
from services.taxcredit.domain.model import ClaimInputs
from services.taxcredit.domain.rates import RateTable
from shared.kit.schemas import JSON_INTEGER, Body, Day, FirmIn

Won = Annotated[int, Field(ge=0, le=MAX_WON, description="integer won"), JSON_INTEGER]
PositiveWon = Annotated[int, Field(gt=0, le=MAX_WON, description="integer won"), JSON_INTEGER]
Reference = Annotated[str, Field(min_length=1, max_length=200)]


class InvestmentIn(Body):
    current_year: PositiveWon
    previous_years: list[Won] = Field(
        default=[],
        max_length=3,
        description="tax_year − 1, − 2, − 3 in that order; fewer for a younger firm",
    )


class ClaimIn(Body):
    tax_year: Annotated[int, JSON_INTEGER] = Field(ge=1900, le=9999, examples=[2026])
    firm: FirmIn
    cost_reference: Reference | None = Field(
        default=None,
        description="the cost the credit covers, as a voucher or a fund investment for the "
        "same cost would name it (checked against the other programmes' grants); left out, "
        "the facility, deal or investment reference is the cost",
        examples=["COST-OSONG-PLANT-2026"],
    )

    def inputs(self) -> ClaimInputs:
        raise NotImplementedError


class StrategicInvestmentIn(ClaimIn):
    """National strategic technology investment: base rate by size, plus the increase."""

    programme: Literal["strategic_investment"]
    technology: str = Field(min_length=1, max_length=100, examples=["biopharma-purification"])
    investment: InvestmentIn
    facility_reference: Reference

    def inputs(self) -> ClaimInputs:
        return StrategicInvestmentClaim(
            technology=self.technology,
            investment=Investment(
                current_year=self.investment.current_year,
                previous_years=tuple(self.investment.previous_years),
            ),
            facility_reference=self.facility_reference,
        )


class MnaTechnologyValueIn(ClaimIn):
    """A technology-innovative SME's M&A: a share of the technology value acquired."""

    programme: Literal["mna_technology_value"]
    technology: str = Field(min_length=1, max_length=100)
    target_firm_id: Reference
    technology_value: PositiveWon
    deal_reference: Reference

    def inputs(self) -> ClaimInputs:
        return MnaClaim(
            technology=self.technology,
            target_firm_id=self.target_firm_id,
            technology_value=self.technology_value,
            deal_reference=self.deal_reference,
        )


class CorporateVentureInvestmentIn(ClaimIn):
    """A corporation's investment in a venture firm or a mother fund."""

    programme: Literal["corporate_venture_investment"]
    investee: str = Field(
        min_length=1, max_length=200, description="a venture firm's business number or a fund id"
    )
    amount_invested: PositiveWon
    investment_reference: Reference

    def inputs(self) -> ClaimInputs:
        return VentureInvestmentClaim(
            investee=self.investee,
            amount_invested=self.amount_invested,
            investment_reference=self.investment_reference,
        )


SubmitClaimIn = Annotated[
    StrategicInvestmentIn | MnaTechnologyValueIn | CorporateVentureInvestmentIn,
    Field(discriminator="programme"),
]


class ClawbackIn(Body):
    reason: str = Field(min_length=1, max_length=2000)
    amount: PositiveWon | None = Field(
        default=None, description="won to claw back; all that remains if left out"
    )


class RateTableIn(Body, RateTable):
    """A rate table as a ministry publishes it: rates are decimal strings, amounts integer won."""

    valid_from: Day
    four_eyes_threshold: Annotated[int, JSON_INTEGER] = Field(ge=0, le=2**53 - 1)

    assumptions: tuple[Annotated[str, Field(max_length=2000)], ...] = Field(
        default=(), max_length=50
    )
