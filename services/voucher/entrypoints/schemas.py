"""Request bodies of the voucher's own endpoints: parsing only, the rules live in the domain."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.voucher.domain.programmes import ServiceCategory
from shared.kit.schemas import JSON_INTEGER, Body, DecisionIn, FirmIn


class SubmitApplicationIn(Body):
    programme_id: str = Field(min_length=1, max_length=100)
    firm: FirmIn
    service_category: str = Field(min_length=1, max_length=50, examples=["legal"])
    requested_amount: Annotated[int, JSON_INTEGER] = Field(
        gt=0, le=10**15, description="integer won"
    )
    purpose: str = Field(min_length=1, max_length=2000)
    cost_reference: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the cost the voucher would cover (an invoice, contract or project "
        "reference); another programme's support for the same cost refuses the application",
        examples=["CONTRACT-2026-0042"],
    )


class VoucherDecisionIn(DecisionIn):
    approved_amount: Annotated[int, Field(gt=0, le=10**15), JSON_INTEGER] | None = Field(
        default=None, description="less than requested, if the officer says so"
    )


class RedemptionIn(Body):
    invoice_number: str = Field(min_length=1, max_length=100)
    amount: Annotated[int, JSON_INTEGER] = Field(gt=0, le=10**15, description="integer won")
    service_category: str = Field(min_length=1, max_length=50)


class PayoutDecisionIn(Body):
    """Why an officer retries or cancels a failed payout."""

    reason: str = Field(min_length=1, max_length=1000)


class ProviderIn(Body):
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{1,54}$",  # its log is "provider:<id>", 64 at most
        examples=["prov-hanbit-law"],
    )
    name: str = Field(min_length=1, max_length=200)
    service_categories: list[ServiceCategory] = Field(min_length=1)
