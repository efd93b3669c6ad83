"""Corporate co-investments the fund service records, as the tax-credit claims they open.

When a fund commits an investment, the fund service records each private co-investor
alongside it as ``fund.co_investment.recorded``. A corporation investing in a venture
firm may claim the corporate venture investment credit, so taxcredit opens that claim
for the investor, on its own: the claim then goes through taxcredit's own verification
like any firm's.

Taxcredit reads the fund's event as the fund publishes it (the envelope on
``fund.events``), through :class:`FundCoInvestment`, a model of its own of the members it
needs: the programmes share their events, never their code. Pure: no I/O.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.taxcredit.domain.decider import SubmitClaim
from services.taxcredit.domain.events import MAX_WON, Programme, VentureInvestmentClaim
from shared.contracts import Envelope
from shared.domain import Firm, FirmSize, today_in_korea

CO_INVESTMENT_RECORDED: Final = "fund.co_investment.recorded"
"""The fund event a co-investment claim comes from."""

SOURCE: Final = "fund"
"""The source a co-investment claim's id is derived from (see ``service_layer.claim_id``)."""

Text = Annotated[str, Field(min_length=1, max_length=200)]


class FundCoInvestment(BaseModel):
    """The payload of ``fund.co_investment.recorded``: the members taxcredit reads.

    Members the fund adds later are passed over (``extra="ignore"``); a payload without
    the members below, or with text a claim cannot hold (too long, a NUL character), is
    refused, and the consumer sends its event to the DLQ.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    investor_firm_id: str = Field(min_length=1, max_length=64)
    """The co-investing corporation's business registration number: the claimant (as long
    as a firm id may be)."""
    name: Text
    """The co-investor's name, as the fund application named it."""
    amount: int = Field(gt=0, le=MAX_WON)
    """What the co-investor invested, in won."""
    co_investment_id: Text
    """``<fund application id>:<index>``."""
    fund_id: Text
    """The fund it invested alongside."""
    investee_firm_id: str = Field(default="", max_length=200)
    """The venture firm the money went to (the fund application's firm)."""
    application_id: Text
    """The fund application the co-investment was recorded on."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_characters(cls, value: object) -> object:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain the NUL character")
        return value


# --- the investor as a claim's firm ------------------------------------------------------------
#
# A claim declares its firm (``shared.domain.Firm``: founding date, size, cluster and
# industry); the fund's event names only the investor's business number and name. The
# venture investment credit depends on none of the rest (its rate is one for every size),
# and verification checks only that the firm was not founded after the tax year. So the
# rest is filled with values that say they are not declarations, and that pass those
# checks because they are true of any corporation that invested:

FOUNDED_UNKNOWN: Final = date(1900, 1, 1)
"""The investor's founding date is unknown: the earliest date a claim can name (tax years
start at 1900), so that "founded no later than the tax year", which is true of any firm
that invested in that year, holds; it cannot be read as a young firm's founding."""

INVESTOR_SIZE: Final = FirmSize.LARGE
"""The co-investors the fund records are corporations investing beside a public fund (the
corporate venture investment credit is theirs); the credit's rate is the same for every
size, so the size decides nothing here."""

UNDECLARED: Final = "undeclared"
"""The investor's cluster and industry: the fund's event does not carry them (those of the
fund application are the investee's, not the investor's), and the venture investment
credit checks neither."""


def investment_reference(event_id: str) -> str:
    """The claim's investment reference: derived from the fund event's id, so that the same
    event always names the same investment (and opens the same claim)."""
    return f"fund-co-investment:{event_id}"


def investor_firm(co_investment: FundCoInvestment) -> Firm:
    """The investor as the claim declares it (see the placeholders above)."""
    return Firm(
        firm_id=co_investment.investor_firm_id,
        name=co_investment.name,
        founded_on=FOUNDED_UNKNOWN,
        size=INVESTOR_SIZE,
        cluster=UNDECLARED,
        industry=UNDECLARED,
        technology_innovative=False,
    )


def claim_for_co_investment(event: Envelope) -> SubmitClaim:
    """The corporate venture investment claim a ``fund.co_investment.recorded`` opens.

    The claimant is the investor; the tax year is the year in Korea when the fund recorded
    the co-investment (the year the money went in); the investee is the venture firm, or
    the fund when the event names no firm; the amount invested is the co-investment's.
    Raises ``ValueError`` for any other event, or a payload taxcredit cannot read.
    """
    if event.type != CO_INVESTMENT_RECORDED:
        raise ValueError(f"{event.event_id} is {event.type}, not {CO_INVESTMENT_RECORDED}")
    co_investment = FundCoInvestment.model_validate(event.payload)
    return SubmitClaim(
        programme=Programme.CORPORATE_VENTURE_INVESTMENT,
        tax_year=today_in_korea(event.occurred_at).year,
        firm=investor_firm(co_investment),
        inputs=VentureInvestmentClaim(
            investee=co_investment.investee_firm_id or co_investment.fund_id,
            amount_invested=co_investment.amount,
            investment_reference=investment_reference(event.event_id),
        ),
    )


__all__ = [
    "CO_INVESTMENT_RECORDED",
    "FOUNDED_UNKNOWN",
    "INVESTOR_SIZE",
    "SOURCE",
    "UNDECLARED",
    "FundCoInvestment",
    "claim_for_co_investment",
    "investment_reference",
    "investor_firm",
]
