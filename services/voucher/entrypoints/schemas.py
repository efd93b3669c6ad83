"""Request bodies of the voucher API: parsing only, the rules live in the domain."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.voucher.domain.programmes import ServiceCategory


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FirmIn(Body):
    firm_id: str = Field(min_length=1, max_length=64, examples=["123-45-67890"])
    name: str = Field(min_length=1, max_length=200)
    founded_on: date
    size: Literal["sme", "medium", "large"]
    cluster: str = Field(min_length=1, max_length=100, examples=["osong-bio"])
    industry: str = Field(min_length=1, max_length=100, examples=["advanced_bio"])


class SubmitApplicationIn(Body):
    programme_id: str = Field(min_length=1, max_length=100)
    firm: FirmIn
    service_category: str = Field(min_length=1, max_length=50, examples=["legal"])
    requested_amount: int = Field(gt=0, le=10**15, description="integer won")
    purpose: str = Field(min_length=1, max_length=2000)


class DecisionIn(Body):
    decision: Literal["approve", "reject"]
    reason: str = Field(default="", max_length=2000)
    approved_amount: int | None = Field(default=None, gt=0, le=10**15)


class WithdrawalIn(Body):
    reason: str = Field(default="", max_length=2000)


class RedemptionIn(Body):
    invoice_number: str = Field(min_length=1, max_length=100)
    amount: int = Field(gt=0, le=10**15, description="integer won")
    service_category: str = Field(min_length=1, max_length=50)


class ProviderIn(Body):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$", examples=["prov-hanbit-law"])
    name: str = Field(min_length=1, max_length=200)
    service_categories: list[ServiceCategory] = Field(min_length=1)
