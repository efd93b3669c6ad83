"""Cross-programme support limits (shared.domain.support): the grant contract every
programme's events keep, the checks verification runs, and the conflict detector's rule.

The grant events are built with each programme's own payload models, so a programme that
renames a member the support read model reads breaks these tests, not production.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import permutations
from typing import Any

import pytest

from services.fund.domain.events import EVENTS as FUND_EVENTS
from services.fund.domain.events import InvestmentCancelled, InvestmentCommitted
from services.taxcredit.domain.events import EVENTS as TAXCREDIT_EVENTS
from services.taxcredit.domain.events import (
    CertificateClawedBack,
    CertificateIssued,
    Programme,
)
from services.voucher.domain.events import EVENTS as VOUCHER_EVENTS
from services.voucher.domain.events import VoucherExpired, VoucherIssued
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.domain import DomainError
from shared.domain.support import (
    GIVE_BACK_EVENTS,
    GRANT_EVENTS,
    PROGRAMMES,
    GiveBack,
    Grant,
    RefuseGrant,
    SupportConflictDetected,
    SupportFacts,
    SupportPolicy,
    conflicts_of,
    facts_among,
    give_back_of,
    grant_of,
    refusal_at_grant,
    support_failures,
)
from tests.unit import fund_builders, taxcredit_builders, voucher_builders

FIRM = "123-45-67890"
OTHER_FIRM = "987-65-43210"
COST = "FACILITY-OSONG-2026-07"
CAP = 50_000_000_000
T0 = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
SYSTEM = Actor(sub="stage", role=Role.SYSTEM)


def sealed(
    event: NewEvent, *, application_id: str = "app-1", at: datetime = T0, firm_id: str = FIRM
) -> Envelope:
    """``event`` as its programme's relay publishes it."""
    return Envelope.seal(
        aggregate_id=application_id,
        aggregate_seq=5,
        event=event,
        occurred_at=at,
        actor=SYSTEM,
        firm_id=firm_id,
        correlation_id="corr-1",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def voucher_issued(amount: int = 8_000_000, cost: str | None = COST, year: int = 2026) -> NewEvent:
    return VoucherIssued(
        voucher_id="vch-1",
        amount=amount,
        expires_on=date(year + 1, 5, 4),
        firm_id=FIRM,
        year=year,
        cost_reference=cost,
    ).event()


def certificate_issued(amount: int = 1_500_000_000, tax_year: int = 2025) -> NewEvent:
    return CertificateIssued(
        number="TC-2026-000001",
        amount=amount,
        issued_on=date(2026, 5, 4),
        firm_id=FIRM,
        tax_year=tax_year,
        programme=Programme.STRATEGIC_INVESTMENT,
        cost_reference=COST,
    ).event()


def investment_committed(amount: int = 20_000_000_000) -> NewEvent:
    return InvestmentCommitted(
        committed_on=date(2026, 5, 4),
        amount=amount,
        firm_id=FIRM,
        year=2026,
        fund_id="bio-mega-fund",
        cost_reference=COST,
    ).event()


# --- the grant contract ------------------------------------------------------------------


def test_every_programme_has_one_grant_event_and_one_give_back_event():
    assert sorted(p for p, _ in GRANT_EVENTS.values()) == sorted(PROGRAMMES)
    assert sorted(p for p, _ in GIVE_BACK_EVENTS.values()) == sorted(PROGRAMMES)


@pytest.mark.parametrize(
    ("event", "programme", "amount", "year"),
    [
        (voucher_issued(8_000_000), "voucher", 8_000_000, 2026),
        (certificate_issued(1_500_000_000, tax_year=2025), "taxcredit", 1_500_000_000, 2025),
        (investment_committed(20_000_000_000), "fund", 20_000_000_000, 2026),
    ],
    ids=["voucher-issued", "certificate-issued", "investment-committed"],
)
def test_each_programmes_grant_event_is_read_as_its_grant(
    event: NewEvent, programme: str, amount: int, year: int
):
    envelope = sealed(event, application_id=f"{programme}-app-1")

    grant = grant_of(envelope)

    assert grant == Grant(
        programme=programme,
        application_id=f"{programme}-app-1",
        firm_id=FIRM,
        amount=amount,
        year=year,
        cost_reference=COST,
        event_id=envelope.event_id,
        granted_at=T0,
    )
    assert give_back_of(envelope) is None


def test_a_tax_credit_counts_in_its_tax_year_not_the_year_it_was_certified():
    grant = grant_of(sealed(certificate_issued(tax_year=2025), at=T0))

    assert grant is not None and grant.year == 2025 != T0.year


def test_a_grant_names_the_firm_of_its_payload_before_the_envelopes():
    envelope = sealed(voucher_issued(), firm_id=OTHER_FIRM)

    grant = grant_of(envelope)

    assert grant is not None and grant.firm_id == FIRM


def test_a_grant_written_before_the_contract_counts_for_the_envelopes_firm_in_its_korean_year():
    old = NewEvent(
        type="voucher.voucher.issued",
        payload={"voucher_id": "vch-0", "amount": 5_000_000, "expires_on": "2027-12-31"},
        schema_version=1,
    )
    new_year_in_seoul = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)

    grant = grant_of(sealed(old, at=new_year_in_seoul, firm_id=OTHER_FIRM))

    assert grant is not None
    assert (grant.firm_id, grant.year, grant.amount) == (OTHER_FIRM, 2027, 5_000_000)
    assert grant.cost_reference is None


def test_a_voucher_naming_no_cost_is_a_grant_for_no_cost():
    grant = grant_of(sealed(voucher_issued(cost=None)))

    assert grant is not None and grant.cost_reference is None


def test_an_event_that_grants_nothing_is_no_grant():
    submitted = NewEvent(type="voucher.application.submitted", payload={"x": 1})

    assert grant_of(sealed(submitted)) is None
    assert give_back_of(sealed(submitted)) is None


@pytest.mark.parametrize(
    ("event", "programme", "amount"),
    [
        (
            VoucherExpired(voucher_id="vch-1", returned_amount=3_000_000).event(),
            "voucher",
            3_000_000,
        ),
        (
            CertificateClawedBack(
                number="TC-2026-000001",
                amount=400_000_000,
                remaining=1_100_000_000,
                reason="the facility was sold within the holding period",
                officer="officer-kim",
            ).event(),
            "taxcredit",
            400_000_000,
        ),
        (
            InvestmentCancelled(
                cancelled_tranches=(2, 3),
                returned_amount=12_000_000_000,
                paid_amount=8_000_000_000,
                officer="officer-kim",
                reason="the trial was stopped",
            ).event(),
            "fund",
            12_000_000_000,
        ),
    ],
    ids=["voucher-expired", "certificate-clawed-back", "investment-cancelled"],
)
def test_each_programmes_give_back_event_is_read_as_money_going_back(
    event: NewEvent, programme: str, amount: int
):
    envelope = sealed(event, application_id=f"{programme}-app-1")

    assert give_back_of(envelope) == GiveBack(programme, f"{programme}-app-1", amount)
    assert grant_of(envelope) is None


def test_a_voucher_expiring_fully_spent_gives_nothing_back():
    spent = VoucherExpired(voucher_id="vch-1", returned_amount=0).event()

    assert give_back_of(sealed(spent)) is None


# --- verification --------------------------------------------------------------------------


def facts(
    *, combined: int = 0, cap: int = CAP, elsewhere: str | None = None, cost: str | None = COST
) -> SupportFacts:
    return SupportFacts(
        policy_version="2026-1",
        year=2026,
        cost_reference=cost,
        supported_elsewhere=elsewhere,
        combined_support=combined,
        combined_yearly_cap=cap,
    )


def codes(reasons: list) -> list[str]:
    return [r.code for r in reasons]


def test_no_facts_no_failures():
    assert support_failures(None, 10**12) == []


def test_a_firm_reaching_exactly_the_cap_passes():
    assert support_failures(facts(combined=CAP - 8_000_000), 8_000_000) == []


def test_a_firm_one_won_over_the_cap_fails():
    [reason] = support_failures(facts(combined=CAP - 8_000_000), 8_000_001)

    assert reason.code == "combined_cap_exceeded"
    assert str(CAP) in reason.message and "8000001" in reason.message


def test_a_first_grant_of_the_whole_cap_passes_and_one_won_more_fails():
    assert support_failures(facts(combined=0), CAP) == []
    assert codes(support_failures(facts(combined=0), CAP + 1)) == ["combined_cap_exceeded"]


def test_a_firm_already_at_the_cap_fails_for_one_won():
    assert codes(support_failures(facts(combined=CAP), 1)) == ["combined_cap_exceeded"]


def test_a_cost_supported_elsewhere_fails_naming_who_supports_it():
    [reason] = support_failures(facts(elsewhere="fund application app-9"), 1)

    assert reason.code == "duplicate_support"
    assert COST in reason.message and "fund application app-9" in reason.message


def test_both_failures_are_reported_duplicate_first():
    reasons = support_failures(facts(combined=CAP, elsewhere="taxcredit application app-2"), 1)

    assert codes(reasons) == ["duplicate_support", "combined_cap_exceeded"]


# --- the conflict detector ------------------------------------------------------------------


def grant(
    programme: str,
    n: int,
    amount: int,
    *,
    cost: str | None = None,
    firm: str = FIRM,
    year: int = 2026,
) -> Grant:
    """Grant number ``n`` (``n`` hours after T0, so numbers give the time order)."""
    return Grant(
        programme=programme,
        application_id=f"{programme}-app-{n}",
        firm_id=firm,
        amount=amount,
        year=year,
        cost_reference=cost,
        event_id=f"ev-{n}",
        granted_at=T0 + timedelta(hours=n),
    )


def seen_by(programme: str, order: tuple[Grant, ...]) -> dict[str, SupportConflictDetected]:
    """What ``programme``'s detector records seeing the grants one by one in ``order``
    (each conflict once, by its key, as the support read model keeps them)."""
    known: list[Grant] = []
    recorded: dict[str, SupportConflictDetected] = {}
    for arriving in order:
        for key, conflict in conflicts_of(arriving, known, programme=programme, cap=CAP):
            recorded.setdefault(key, conflict)
        known.append(arriving)
    return recorded


def in_every_order(grants: list[Grant]) -> dict[str, list[str]]:
    """Each programme's recorded conflict keys, seeing ``grants`` in every possible order:
    ``{programme: keys}`` when every order gives the same keys (else the test fails).
    Programmes record independently, so this covers every way the three may see them."""
    found: dict[str, list[str]] = {}
    for programme in PROGRAMMES:
        per_order = {tuple(sorted(seen_by(programme, o))) for o in permutations(grants)}
        assert len(per_order) == 1, f"{programme} records {per_order}, depending on the order"
        [keys] = per_order
        if keys:
            found[programme] = list(keys)
    return found


def test_a_cost_granted_by_two_programmes_is_reported_once_by_the_later_ones_programme():
    earlier = grant("voucher", 1, 8_000_000, cost=COST)
    later = grant("taxcredit", 2, 1_500_000_000, cost=COST)

    assert in_every_order([earlier, later]) == {"taxcredit": ["duplicate:ev-1:ev-2"]}

    conflict = seen_by("taxcredit", (later, earlier))["duplicate:ev-1:ev-2"]
    assert conflict.kind == "duplicate_support"
    assert conflict.cost_reference == COST and conflict.firm_id == FIRM
    assert [a.application_id for a in conflict.applications] == [
        "voucher-app-1",
        "taxcredit-app-2",
    ]
    assert conflict.detected_by == "taxcredit"


def test_the_same_conflict_is_recorded_the_same_whichever_order_it_was_seen_in():
    earlier = grant("fund", 1, 20_000_000_000, cost=COST)
    later = grant("voucher", 2, 8_000_000, cost=COST)

    one = seen_by("voucher", (earlier, later))
    other = seen_by("voucher", (later, earlier))

    assert one == other
    assert list(one) == ["duplicate:ev-1:ev-2"]


def test_three_programmes_granting_one_cost_report_each_pair_once():
    grants = [
        grant("voucher", 1, 8_000_000, cost=COST),
        grant("taxcredit", 2, 1_500_000_000, cost=COST),
        grant("fund", 3, 20_000_000_000, cost=COST),
    ]

    assert in_every_order(grants) == {
        "taxcredit": ["duplicate:ev-1:ev-2"],
        "fund": ["duplicate:ev-1:ev-3", "duplicate:ev-2:ev-3"],
    }


def test_one_programme_granting_one_cost_twice_reports_it_once():
    grants = [grant("voucher", 1, 8_000_000, cost=COST), grant("voucher", 2, 5_000_000, cost=COST)]

    assert in_every_order(grants) == {"voucher": ["duplicate:ev-1:ev-2"]}


def test_grants_for_no_cost_or_different_costs_are_no_duplicate():
    grants = [
        grant("voucher", 1, 8_000_000),
        grant("taxcredit", 2, 1_500_000_000),
        grant("fund", 3, 1_000_000_000, cost="A"),
        grant("voucher", 4, 1_000_000, cost="B"),
    ]

    assert in_every_order(grants) == {}


def test_each_grant_made_over_the_cap_is_reported_once_by_its_programme():
    # only all three first grants together pass the cap (30 + 15 + 10 = 55 billion won):
    # the taxcredit grant crosses it, and the voucher granted after it is over it too
    grants = [
        grant("voucher", 1, 30_000_000_000),
        grant("fund", 2, 15_000_000_000),
        grant("taxcredit", 3, 10_000_000_000),
        grant("voucher", 4, 1_000_000),
    ]

    assert in_every_order(grants) == {"taxcredit": ["cap:ev-3"], "voucher": ["cap:ev-4"]}

    [conflict] = seen_by("taxcredit", tuple(reversed(grants))).values()
    assert conflict.kind == "combined_cap_exceeded"
    assert (conflict.firm_id, conflict.year, conflict.combined_yearly_cap) == (FIRM, 2026, CAP)
    assert [a.application_id for a in conflict.applications] == [
        "voucher-app-1",
        "fund-app-2",
        "taxcredit-app-3",
    ]
    assert conflict.detected_by == "taxcredit"


def test_grants_reaching_exactly_the_cap_are_no_conflict():
    grants = [grant("voucher", 1, 30_000_000_000), grant("fund", 2, 20_000_000_000)]

    assert in_every_order(grants) == {}


def test_grants_of_other_firms_or_years_do_not_add_up():
    grants = [
        grant("voucher", 1, 30_000_000_000),
        grant("fund", 2, 30_000_000_000, firm=OTHER_FIRM),
        grant("taxcredit", 3, 30_000_000_000, year=2025),
    ]

    assert in_every_order(grants) == {}


def test_a_programme_that_sees_its_own_grant_first_reports_the_same_as_later():
    # voucher 45 + fund 10 crosses at the fund grant; taxcredit's later 10 is over the cap
    # too. Taxcredit, before fund's grant reaches it, already finds its own grant over.
    grants = [
        grant("voucher", 1, 45_000_000_000),
        grant("fund", 2, 10_000_000_000),
        grant("taxcredit", 3, 10_000_000_000),
    ]
    voucher, fund, taxcredit = grants
    orders = {
        "voucher": (voucher, fund, taxcredit),
        "fund": (voucher, fund, taxcredit),
        "taxcredit": (voucher, taxcredit, fund),
    }

    found = {p: sorted(seen_by(p, orders[p])) for p in PROGRAMMES}
    assert found == {"voucher": [], "fund": ["cap:ev-2"], "taxcredit": ["cap:ev-3"]}
    assert in_every_order(grants) == {"fund": ["cap:ev-2"], "taxcredit": ["cap:ev-3"]}


# --- checked again at the grant -------------------------------------------------------------


POLICY = SupportPolicy(version="2026-1", combined_yearly_cap=CAP, assumption="a test cap")


def at_grant(
    grants: list[Grant], amount: int, *, cost: str | None = COST, year: int = 2026
) -> tuple[SupportFacts, RefuseGrant | None]:
    facts = facts_among(grants, firm_id=FIRM, year=year, cost_reference=cost, policy=POLICY)
    return facts, refusal_at_grant(facts, amount)


def test_at_the_grant_a_cost_granted_meanwhile_is_refused_naming_the_grant():
    facts, refusal = at_grant([grant("voucher", 1, 10, cost=COST)], 5)
    assert facts.supported_elsewhere == "voucher application voucher-app-1"
    assert refusal is not None
    assert [r.code for r in refusal.reasons] == ["duplicate_support"]
    assert refusal.support == facts  # what the refusal compared goes into its event


def test_at_the_grant_the_firms_year_is_summed_net_and_other_firms_and_years_left_out():
    grants = [
        grant("voucher", 1, CAP // 2),
        grant("fund", 2, CAP // 4),
        grant("fund", 3, 0, cost=COST),  # given back in full: stands for nothing, not the cost
        grant("taxcredit", 4, CAP, firm=OTHER_FIRM),
        grant("taxcredit", 5, CAP, year=2025),
    ]
    facts, refusal = at_grant(grants, CAP // 4)
    assert facts.combined_support == CAP // 2 + CAP // 4
    assert facts.supported_elsewhere is None
    assert refusal is None  # exactly the cap
    _, refusal = at_grant(grants, CAP // 4 + 1)
    assert refusal is not None
    assert [r.code for r in refusal.reasons] == ["combined_cap_exceeded"]


def test_at_the_grant_the_first_grant_of_a_cost_is_the_one_named():
    grants = [grant("fund", 2, 10, cost=COST), grant("voucher", 1, 10, cost=COST)]
    facts, _ = at_grant(grants, 1)
    assert facts.supported_elsewhere == "voucher application voucher-app-1"


@pytest.mark.parametrize(
    ("approved", "stage", "rejected_type"),
    [
        (voucher_builders.approved, "issue", "voucher.application.rejected"),
        (taxcredit_builders.approved, "certification", "taxcredit.application.rejected"),
        (fund_builders.approved, "commitment", "fund.application.rejected"),
    ],
    ids=["voucher", "taxcredit", "fund"],
)
def test_each_programme_rejects_an_approved_application_its_grant_stage_refuses(
    approved: Any, stage: str, rejected_type: str
) -> None:
    stream = approved()
    facts, refusal = at_grant([grant("fund", 1, 10, cost=COST)], 5)
    assert refusal is not None

    [event] = stream.when(refusal, by=SYSTEM)

    assert (event.type, event.schema_version) == (rejected_type, 2)
    assert event.payload["stage"] == stage
    assert [r["code"] for r in event.payload["reasons"]] == ["duplicate_support"]
    assert event.payload["support"] == facts.model_dump(mode="json")
    assert str(stream.app.status) == "rejected"
    assert [r.code for r in stream.app.rejection_reasons] == ["duplicate_support"]
    with pytest.raises(DomainError):  # refused once: nothing left to refuse or grant
        stream.when(refusal, by=SYSTEM)


@pytest.mark.parametrize("registry", [VOUCHER_EVENTS, TAXCREDIT_EVENTS, FUND_EVENTS])
def test_a_rejection_of_version_1_compared_no_support_of_its_own(registry: Any) -> None:
    service = registry.service
    v1 = sealed(
        NewEvent(
            type=f"{service}.application.rejected",
            payload={
                "stage": "verification",
                "reasons": [{"code": "duplicate_support", "message": "granted elsewhere"}],
                "officer": None,
            },
            schema_version=1,
        )
    )
    parsed = registry.parse(v1)
    assert parsed.support is None
    assert parsed.stage == "verification"
