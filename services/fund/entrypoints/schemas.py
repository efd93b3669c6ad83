"""Request bodies of the fund endpoints: parsing only, the rules live in the domain."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictBool, ValidationInfo, field_validator

from services.fund.domain.decider import SubmitApplication
from services.fund.domain.events import (
    CoInvestor,
    DueDiligence,
    Instrument,
    TrancheTerms,
    VoteChoice,
)
from services.fund.domain.funds import MAX_WON, Stage
from shared.domain import BUSINESS_NUMBER
from shared.kit.schemas import JSON_INTEGER, Body, FirmIn

Won = Annotated[int, Field(gt=0, le=MAX_WON, description="integer won"), JSON_INTEGER]
Reference = Annotated[str, Field(min_length=1, max_length=200)]
Text = Annotated[str, Field(max_length=2000)]


class TrancheIn(Body):
    amount: Won
    milestone: Reference


class CoInvestorIn(Body):
    investor_firm_id: str = Field(
        pattern=f"^{BUSINESS_NUMBER.pattern}$",
        examples=["220-81-12345"],
        description="the co-investor's business number: its tax-credit claim is filed under it",
    )
    name: Reference
    amount: Won


class DueDiligenceIn(Body):
    financials: StrictBool
    ip: StrictBool
    legal: StrictBool
    site_visit: StrictBool


class SubmitInvestmentIn(Body):
    fund_id: str = Field(min_length=1, max_length=100, examples=["global-open-innovation-fund"])
    firm: FirmIn
    stage: Stage
    instrument: Instrument
    amount: Won
    pre_money_valuation: Won
    tranches: list[TrancheIn] = Field(
        min_length=1, max_length=50, description="in release order; they sum to the amount"
    )
    co_investors: list[CoInvestorIn] = Field(default=[], max_length=50)
    due_diligence: DueDiligenceIn
    cost_reference: Reference = Field(
        description="the cost the investment covers: no other programme may support it too"
    )

    @field_validator("tranches")
    @classmethod
    def _sum_to_the_amount(cls, tranches: list[TrancheIn], info: ValidationInfo) -> list[TrancheIn]:
        amount = info.data.get("amount")
        planned = sum(t.amount for t in tranches)
        if amount is not None and planned != amount:
            raise ValueError(
                f"the tranches sum to {planned} won; they must sum to the amount, {amount} won"
            )
        return tranches

    def command(self) -> SubmitApplication:
        return SubmitApplication(
            fund_id=self.fund_id,
            firm=self.firm.to_domain(),
            stage=self.stage,
            tranches=tuple(TrancheTerms(**t.model_dump()) for t in self.tranches),
            instrument=self.instrument,
            amount=self.amount,
            pre_money_valuation=self.pre_money_valuation,
            due_diligence=DueDiligence(**self.due_diligence.model_dump()),
            cost_reference=self.cost_reference,
            co_investors=tuple(CoInvestor(**c.model_dump()) for c in self.co_investors),
        )


class VoteIn(Body):
    vote: VoteChoice
    reason: Text = ""
    conflict_of_interest: StrictBool = False


class ReleaseIn(Body):
    milestone_evidence: str = Field(min_length=1, max_length=2000)


class CancellationIn(Body):
    reason: str = Field(min_length=1, max_length=2000)
