"""A fund's co-investment as the tax-credit claim it opens: the translation, and the claim
through taxcredit's own verification. Pure: no I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.fund.domain.events import CoInvestmentRecorded
from services.taxcredit.domain.co_investments import (
    CO_INVESTMENT_RECORDED,
    FOUNDED_UNKNOWN,
    SOURCE,
    UNDECLARED,
    FundCoInvestment,
    claim_for_co_investment,
    investment_reference,
)
from services.taxcredit.domain.events import E, Programme, VentureInvestmentClaim
from services.taxcredit.domain.model import Status
from services.taxcredit.entrypoints.consumers import (
    CO_INVESTMENTS,
    FUND_CO_INVESTMENTS,
    co_investment_context,
)
from services.taxcredit.service_layer import claim_id
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.domain import FirmSize
from tests.unit.taxcredit_builders import DEFAULT_TABLE, TaxcreditStream, support, verify

INVESTOR = "220-81-12345"
INVESTEE = "314-86-24680"
FUND_APPLICATION = "fa_0123456789abcdef0123456789abcdef"
RECORDED_AT = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
FUND_COMMITTER = Actor(sub="fund-commitments", role=Role.SYSTEM)


def co_investment(**overrides: Any) -> NewEvent:
    """``fund.co_investment.recorded`` as the fund's own payload type writes it."""
    members: dict[str, Any] = {
        "investor_firm_id": INVESTOR,
        "name": "Hanbit Pharma Holdings",
        "amount": 2_000_000_000,
        "co_investment_id": f"{FUND_APPLICATION}:0",
        "fund_id": "global-open-innovation",
        "investee_firm_id": INVESTEE,
        "application_id": FUND_APPLICATION,
    }
    return CoInvestmentRecorded(**{**members, **overrides}).event()


def published(
    event: NewEvent | None = None,
    *,
    at: datetime = RECORDED_AT,
    event_id: str = "5f0c2a2e-0d1e-4a53-9d7e-2b7b1d8c9e01",
) -> Envelope:
    """The event as the fund publishes it: on the fund application's chain, the investee's."""
    return Envelope.seal(
        aggregate_id=FUND_APPLICATION,
        aggregate_seq=7,
        event=event or co_investment(),
        occurred_at=at,
        actor=FUND_COMMITTER,
        firm_id=INVESTEE,
        correlation_id="corr-fund-1",
        causation_id="e-approved",
        prev_hash=GENESIS_HASH,
        event_id=event_id,
    )


def test_a_co_investment_opens_a_venture_investment_claim_for_the_investor():
    fund_event = published()

    command = claim_for_co_investment(fund_event)

    assert command.programme is Programme.CORPORATE_VENTURE_INVESTMENT
    assert command.tax_year == 2026
    assert command.inputs == VentureInvestmentClaim(
        investee=INVESTEE,
        amount_invested=2_000_000_000,
        investment_reference=f"fund-co-investment:{fund_event.event_id}",
    )
    assert command.inputs.claim_reference == investment_reference(fund_event.event_id)
    assert command.cost_reference is None  # the investor's own money: its reference is the cost
    firm = command.firm
    assert (firm.firm_id, firm.name) == (INVESTOR, "Hanbit Pharma Holdings")
    assert firm.founded_on == FOUNDED_UNKNOWN == date(1900, 1, 1)
    assert firm.size is FirmSize.LARGE
    assert firm.cluster == firm.industry == UNDECLARED
    assert firm.technology_innovative is False


def test_the_tax_year_is_the_year_in_korea_when_the_fund_recorded_it():
    late_on_new_years_eve = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)  # 00:30 on 1 Jan in Korea

    assert claim_for_co_investment(published(at=late_on_new_years_eve)).tax_year == 2027
    assert (
        claim_for_co_investment(published(at=datetime(2026, 12, 31, 14, 59, tzinfo=UTC))).tax_year
        == 2026
    )


def test_without_an_investee_firm_the_investee_is_the_fund():
    command = claim_for_co_investment(published(co_investment(investee_firm_id="")))

    assert isinstance(command.inputs, VentureInvestmentClaim)
    assert command.inputs.investee == "global-open-innovation"


def test_the_same_event_always_opens_the_same_claim_and_another_event_another():
    first = claim_for_co_investment(published())
    again = claim_for_co_investment(published())
    other = claim_for_co_investment(published(event_id="e-another"))

    def opened(command: Any) -> str:
        return claim_id(SOURCE, command.firm.firm_id, command.inputs.claim_reference)

    assert first == again and opened(first) == opened(again)
    assert opened(other) != opened(first)


def test_the_claim_is_the_investors_opened_by_the_system_because_of_the_fund_event():
    fund_event = published()

    context = co_investment_context(fund_event, INVESTOR)

    assert context.actor == CO_INVESTMENTS == Actor(sub=FUND_CO_INVESTMENTS, role=Role.SYSTEM)
    assert FUND_CO_INVESTMENTS == "taxcredit-fund-co-investments"
    assert context.causation_id == fund_event.event_id
    assert context.correlation_id == "corr-fund-1"
    assert context.firm_id == INVESTOR


def test_members_the_fund_adds_later_pass_by():
    fund_event = published()
    payload = {**fund_event.payload, "currency": "KRW", "round": "series-b"}

    assert FundCoInvestment.model_validate(payload) == FundCoInvestment.model_validate(
        fund_event.payload
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"investor_firm_id": INVESTOR},  # most members missing
        {**co_investment().payload, "amount": 0},
        {**co_investment().payload, "amount": "a lot"},
        {**co_investment().payload, "investor_firm_id": ""},
        {**co_investment().payload, "investor_firm_id": "1" * 65},
        {**co_investment().payload, "name": "Hanbit\x00"},
    ],
    ids=["missing-members", "no-money", "not-a-number", "no-investor", "long-id", "nul"],
)
def test_a_payload_taxcredit_cannot_read_is_refused(payload: dict[str, Any]):
    event = published(NewEvent(type=CO_INVESTMENT_RECORDED, payload=payload))

    with pytest.raises(ValidationError):
        claim_for_co_investment(event)


def test_another_fund_event_opens_nothing():
    committed = NewEvent(type="fund.investment.committed", payload={"amount": 1})

    with pytest.raises(ValueError, match=r"not fund\.co_investment\.recorded"):
        claim_for_co_investment(published(committed))


def test_the_claim_passes_taxcredits_own_verification_with_its_credit():
    fund_event = published()
    command = claim_for_co_investment(fund_event)
    stream = TaxcreditStream(token_firm_id=INVESTOR, clock=RECORDED_AT)
    stream.when(command, by=CO_INVESTMENTS)
    reference = command.inputs.claim_reference

    [verified] = stream.when(verify(support=support(reference, year=2026)))

    assert verified.type == E.VERIFIED, stream.app.rejection_reasons
    app = stream.app
    assert app.status is Status.VERIFIED
    assert app.firm_id == INVESTOR and app.submitted_by == FUND_CO_INVESTMENTS
    assert app.credit is not None
    assert app.credit.amount == 100_000_000  # 0.05 × 2,000,000,000
    assert app.credit.table_version == DEFAULT_TABLE.version
