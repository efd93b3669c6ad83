"""The verification and issue stages take a consumer batch together (PostgreSQL and SQLite).

A batch shares one transaction and a few statements; what each application gets
must be what it would have got one by one, also when two in the batch concern
the same firm.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, timedelta

import pytest

from services.voucher.adapters.tables import budgets, ledger_entries, support_grants
from services.voucher.domain.decider import SubmitApplication
from services.voucher.domain.model import E, Firm
from services.voucher.domain.programmes import load_catalogue
from services.voucher.main import default_catalogue
from services.voucher.service_layer import VoucherService
from shared.clock import FixedClock
from shared.contracts import Actor, Envelope, NewEvent, Role, verify_chain
from shared.domain import Decision
from shared.domain.support import SupportFacts
from shared.eventstore import EventContext, EventStore, UnitOfWork
from shared.kit.application import new_id
from shared.kit.payouts import LedgerPayouts
from shared.kit.support import SupportBook, default_policy
from tests.integration.voucher.conftest import FIRM_ID, OTHER_FIRM_ID

PROGRAMME = "cluster-startup-support-2026"


@pytest.fixture
async def service(store: EventStore) -> AsyncIterator[VoucherService]:
    programmes = load_catalogue(default_catalogue())
    async with store.engine.begin() as connection:
        await budgets.ensure(connection, {p.id: p.budget_total for p in programmes.values()})
    clock = FixedClock(datetime(2026, 11, 25, 1, 0, tzinfo=UTC))
    # the log and the service read one clock, as in a service process
    yield VoucherService(
        EventStore(store.engine, clock),
        programmes,
        LedgerPayouts(ledger_entries),
        clock,
        SupportBook(support_grants, "voucher", default_policy()[0]),
    )


async def submitted(
    service: VoucherService,
    firm_id: str,
    amount: int = 8_000_000,
    cost_reference: str | None = None,
) -> Envelope:
    command = SubmitApplication(
        programme_id=PROGRAMME,
        firm=Firm(
            firm_id=firm_id,
            name="Hanbit Bio",
            founded_on=date(2023, 3, 2),
            size="sme",
            cluster="osong-bio",
            industry="advanced_bio",
        ),
        service_category="legal",
        requested_amount=amount,
        purpose="patent filing",
        cost_reference=cost_reference,
    )
    context = EventContext(
        actor=Actor(sub="ceo", role=Role.FIRM), correlation_id=new_id("c"), firm_id=firm_id
    )
    async with service.store.transaction() as uow:
        outcome = await service.submit(uow, new_id("app"), command, context)
    [event] = outcome.events
    return event


async def document_of(service: VoucherService, application_id: str) -> dict:
    async with service.store.engine.connect() as connection:
        document = await service.projection.document(connection, application_id)
    assert document is not None
    return document


async def test_two_applications_of_one_firm_in_one_batch_are_not_both_verified(
    service: VoucherService,
) -> None:
    first = await submitted(service, FIRM_ID)
    second = await submitted(service, FIRM_ID)
    other_firm = await submitted(service, OTHER_FIRM_ID)

    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [first, second, other_firm])

    assert (await document_of(service, first.aggregate_id))["status"] == "verified"
    later = await document_of(service, second.aggregate_id)
    assert later["status"] == "rejected"
    assert [r["code"] for r in later["rejection_reasons"]] == ["duplicate_open_application"]
    assert (await document_of(service, other_firm.aggregate_id))["status"] == "verified"


async def test_an_event_handled_twice_in_one_batch_changes_its_application_once(
    service: VoucherService,
) -> None:
    event = await submitted(service, FIRM_ID)
    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [event, event])
    chain = await service.store.read_stream(event.aggregate_id)
    assert [e.type for e in chain] == [E.SUBMITTED, E.VERIFIED]
    assert verify_chain([e.to_json_dict() for e in chain]).ok
    assert (await document_of(service, event.aggregate_id))["version"] == 2


async def test_a_late_verification_records_the_facts_as_of_the_submission(
    service: VoucherService,
) -> None:
    event = await submitted(service, FIRM_ID, amount=12_000_000)
    assert isinstance(service.clock, FixedClock)
    service.clock.advance(timedelta(days=40))  # the verifier lagged for weeks
    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [event])
    verified = (await service.store.read_stream(event.aggregate_id))[-1]
    assert verified.type == E.VERIFIED and verified.schema_version == 2
    assert verified.actor.sub == "voucher-verifier"
    facts = verified.payload["facts"]
    assert facts["as_of"] == "2026-11-25"  # the submission's date in Korea, not 40 days on
    assert facts["catalogue_version"] == "2026-1"
    assert facts["programme_id"] == PROGRAMME
    assert facts["held_in_programme"] == 0
    assert facts["max_amount_per_firm"] == 30_000_000
    assert facts["requested_amount"] == 12_000_000
    assert facts["other_open_application"] is None
    # 40 days on is 2027: the firm's support counts in the year of the submission
    assert facts["support"] == {
        "policy_version": service.support.policy.version,
        "year": 2026,
        "cost_reference": None,
        "supported_elsewhere": None,
        "combined_support": 0,
        "combined_yearly_cap": service.support.policy.combined_yearly_cap,
    }


async def test_the_voucher_is_issued_under_the_issue_stage_not_the_payout(
    service: VoucherService,
) -> None:
    event = await submitted(service, FIRM_ID)
    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [event])
    for officer in ("officer-kim",):
        async with service.store.transaction() as uow:
            await service.decide_application(
                uow,
                event.aggregate_id,
                decision=Decision.APPROVE,
                reason="fine",
                approved_amount=None,
                context=EventContext(
                    actor=Actor(sub=officer, role=Role.OFFICER), correlation_id="c"
                ),
            )
    approved = (await service.store.read_stream(event.aggregate_id))[-1]
    assert approved.type == E.APPROVED
    async with service.store.transaction() as uow:
        await service.when_applications_approved_issue_vouchers(uow, [approved])
    issued = (await service.store.read_stream(event.aggregate_id))[-1]
    assert issued.type == E.ISSUED
    assert issued.actor == Actor(sub="voucher-issue", role=Role.SYSTEM)
    assert issued.causation_id == approved.event_id


def officer(sub: str) -> EventContext:
    return EventContext(actor=Actor(sub=sub, role=Role.OFFICER), correlation_id=new_id("c"))


async def approve(service: VoucherService, application_id: str, sub: str) -> None:
    async with service.store.transaction() as uow:
        await service.decide_application(
            uow,
            application_id,
            decision=Decision.APPROVE,
            reason="fine",
            approved_amount=None,
            context=officer(sub),
        )


async def test_a_replica_never_acts_on_a_state_another_replica_moved_on(
    service: VoucherService,
) -> None:
    """Each process keeps the states it folded; another replica's events make them stale."""
    replica = VoucherService(
        service.store,
        service.programmes,
        LedgerPayouts(ledger_entries),
        service.clock,
        service.support,
    )
    event = await submitted(service, FIRM_ID, amount=12_000_000)  # this process knows v1
    async with replica.store.transaction() as uow:  # the other verifies: v2
        await replica.when_applications_submitted_verify(uow, [event])
    await approve(service, event.aggregate_id, "officer-kim")  # must see v2, not its own v1
    await approve(replica, event.aggregate_id, "officer-park")  # and this one the first approval
    chain = await service.store.read_stream(event.aggregate_id)
    assert [e.type for e in chain] == [E.SUBMITTED, E.VERIFIED, E.APPROVAL_RECORDED, E.APPROVED]
    assert verify_chain([e.to_json_dict() for e in chain]).ok
    assert (await document_of(service, event.aggregate_id))["version"] == 4


async def test_a_state_from_a_rolled_back_transaction_is_never_used(
    service: VoucherService,
) -> None:
    event = await submitted(service, FIRM_ID)
    with pytest.raises(RuntimeError, match="went away"):
        async with service.store.transaction() as uow:
            await service.when_applications_submitted_verify(uow, [event])
            raise RuntimeError("the process went away before the commit")
    chain = await service.store.read_stream(event.aggregate_id)
    assert [e.type for e in chain] == [E.SUBMITTED]  # the verification never happened
    async with service.store.transaction() as uow:  # so it happens now, from the log's state
        await service.when_applications_submitted_verify(uow, [event])
    chain = await service.store.read_stream(event.aggregate_id)
    assert [e.type for e in chain] == [E.SUBMITTED, E.VERIFIED]
    assert verify_chain([e.to_json_dict() for e in chain]).ok


# --- cross-programme support limits ---------------------------------------------------------

THIRD_FIRM_ID = "111-22-33333"


def other_programmes_grant(
    event_type: str, payload: dict, *, application_id: str, firm_id: str
) -> Envelope:
    """A grant another programme published (the support read model reads only its members)."""
    return Envelope.seal(
        aggregate_id=application_id,
        aggregate_seq=6,
        event=NewEvent(type=event_type, payload=payload, schema_version=1),
        occurred_at=datetime(2026, 10, 1, 2, 0, tzinfo=UTC),
        actor=Actor(sub="stage", role=Role.SYSTEM),
        firm_id=firm_id,
        correlation_id="elsewhere",
        causation_id=None,
        prev_hash="0" * 64,
    )


async def test_a_batch_asks_the_support_read_model_once_and_each_gets_its_own_facts(
    service: VoucherService, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap = service.support.policy.combined_yearly_cap
    certificate = other_programmes_grant(
        "taxcredit.certificate.issued",
        {"amount": 1_000_000, "firm_id": FIRM_ID, "tax_year": 2026, "cost_reference": "FAC-1"},
        application_id="tc-app-1",
        firm_id=FIRM_ID,
    )
    commitment = other_programmes_grant(
        "fund.investment.committed",
        {"amount": cap - 8_000_000 + 1, "firm_id": OTHER_FIRM_ID, "year": 2026},
        application_id="fund-app-1",
        firm_id=OTHER_FIRM_ID,
    )
    async with service.store.transaction() as uow:
        await service.support.apply(uow, [certificate, commitment])
    duplicate = await submitted(service, FIRM_ID, cost_reference="FAC-1")
    over_cap = await submitted(service, OTHER_FIRM_ID, cost_reference="FAC-2")
    clear = await submitted(service, THIRD_FIRM_ID, cost_reference="FAC-1-BIS")
    asked: list[list[tuple[str, int, str | None]]] = []
    facts_of = service.support.facts

    async def counted(
        uow: UnitOfWork, wanted: Sequence[tuple[str, int, str | None]]
    ) -> list[SupportFacts]:
        asked.append(list(wanted))
        return await facts_of(uow, wanted)

    monkeypatch.setattr(service.support, "facts", counted)
    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [duplicate, over_cap, clear])

    assert asked == [
        [
            (FIRM_ID, 2026, "FAC-1"),
            (OTHER_FIRM_ID, 2026, "FAC-2"),
            (THIRD_FIRM_ID, 2026, "FAC-1-BIS"),
        ]
    ]
    rejected = await document_of(service, duplicate.aggregate_id)
    assert [r["code"] for r in rejected["rejection_reasons"]] == ["duplicate_support"]
    assert "taxcredit application tc-app-1" in rejected["rejection_reasons"][0]["message"]
    assert rejected["cost_reference"] == "FAC-1"
    capped = await document_of(service, over_cap.aggregate_id)
    assert [r["code"] for r in capped["rejection_reasons"]] == ["combined_cap_exceeded"]
    assert (await document_of(service, clear.aggregate_id))["status"] == "verified"
    [verdict] = (await service.store.read_stream(over_cap.aggregate_id))[-1:]
    assert verdict.payload["facts"]["support"]["combined_support"] == cap - 8_000_000 + 1


async def test_an_issued_voucher_carries_its_grant_in_the_year_of_issue(
    service: VoucherService,
) -> None:
    event = await submitted(service, FIRM_ID, cost_reference="CONTRACT-7")
    async with service.store.transaction() as uow:
        await service.when_applications_submitted_verify(uow, [event])
    await approve(service, event.aggregate_id, "officer-kim")
    approved = (await service.store.read_stream(event.aggregate_id))[-1]
    assert isinstance(service.clock, FixedClock)
    service.clock.advance(timedelta(days=40))  # issued in January 2027 (Korea)
    async with service.store.transaction() as uow:
        await service.when_applications_approved_issue_vouchers(uow, [approved])

    issued = (await service.store.read_stream(event.aggregate_id))[-1]
    assert issued.type == E.ISSUED and issued.schema_version == 2
    assert issued.payload["firm_id"] == FIRM_ID
    assert issued.payload["year"] == 2027
    assert issued.payload["programme"] == "voucher"
    assert issued.payload["cost_reference"] == "CONTRACT-7"
    async with service.store.transaction() as uow:  # as the support consumer records it
        await service.support.apply(uow, [issued])
    async with service.store.transaction() as uow:
        [in_2027] = await service.support.facts(uow, [(FIRM_ID, 2027, "CONTRACT-7")])
    assert in_2027.combined_support == 8_000_000
    # another voucher application naming the cost would be a duplicate of this grant
    assert in_2027.supported_elsewhere == f"voucher application {event.aggregate_id}"
