"""The support read model on both backends: grants from every programme's events, the checks
verification asks for, and each overlap recorded once by exactly one programme."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared.clock import SystemClock
from shared.contracts import GENESIS_HASH, Actor, Envelope, NewEvent, Role
from shared.domain.support import SupportPolicy
from shared.eventstore import EventStore, create_engine
from shared.kit.support import SupportBook, support_table
from tests.schema import migrated

T0 = datetime(2026, 5, 4, 1, 0, tzinfo=UTC)
FIRM = "123-45-67890"
CAP = 1_000_000
POLICY = SupportPolicy(version="test", combined_yearly_cap=CAP, assumption="a test cap")
SYSTEM = Actor(sub="stage", role=Role.SYSTEM)


def grant(
    kind: str, application_id: str, amount: int, cost: str | None, at: datetime, **extra: Any
) -> Envelope:
    payloads = {
        "voucher.voucher.issued": {
            "voucher_id": f"v-{application_id}",
            "amount": amount,
            "expires_on": "2027-05-04",
            "firm_id": FIRM,
            "year": 2026,
            "programme": "voucher",
            "cost_reference": cost,
        },
        "taxcredit.certificate.issued": {
            "number": f"TC-{application_id}",
            "amount": amount,
            "issued_on": "2026-05-04",
            "firm_id": FIRM,
            "tax_year": 2026,
            "programme": "strategic_investment",
            "cost_reference": cost,
        },
        "fund.investment.committed": {
            "committed_on": "2026-05-04",
            "amount": amount,
            "firm_id": FIRM,
            "programme": "fund",
            "year": 2026,
            "fund_id": "f",
            "cost_reference": cost,
        },
    }
    return Envelope.seal(
        aggregate_id=application_id,
        aggregate_seq=extra.pop("seq", 5),
        event=NewEvent(type=kind, payload=payloads[kind] | extra, schema_version=1),
        occurred_at=at,
        actor=SYSTEM,
        firm_id=FIRM,
        correlation_id=f"corr-{application_id}",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


def clawed_back(application_id: str, amount: int, *, remaining: int) -> Envelope:
    """Part of a certified credit clawed back: a give-back."""
    return Envelope.seal(
        aggregate_id=application_id,
        aggregate_seq=6,
        event=NewEvent(
            type="taxcredit.certificate.clawed_back",
            payload={"number": f"TC-{application_id}", "amount": amount, "remaining": remaining},
            schema_version=1,
        ),
        occurred_at=T0 + timedelta(minutes=5),
        actor=SYSTEM,
        firm_id=FIRM,
        correlation_id="corr",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )


@pytest.fixture
async def fund_book(store: EventStore) -> SupportBook:
    """The fund service's support book, in the store's database (migrated: the voucher's
    schema has the same ``support_grants`` table every programme has)."""
    return SupportBook(support_table(sa.MetaData()), "fund", POLICY)


async def apply(store: EventStore, book: SupportBook, *events: Envelope) -> None:
    async with store.transaction() as uow:
        await book.apply(uow, list(events))


async def conflicts(store: EventStore) -> list[dict[str, Any]]:
    """The ``support.conflict.detected`` events the store holds, in order."""
    return [
        e.envelope
        for e in await store.read_all(limit=10_000)
        if e.envelope["type"] == "support.conflict.detected"
    ]


async def facts(store: EventStore, book: SupportBook, cost: str | None) -> Any:
    async with store.transaction() as uow:
        [found] = await book.facts(uow, [(FIRM, 2026, cost)])
    return found


T1, T2 = T0, T0 + timedelta(minutes=5)


@pytest.mark.parametrize("arrival", ["in order", "reversed"])
async def test_the_programme_of_the_later_grant_records_the_overlap_once(
    store: EventStore, fund_book: SupportBook, arrival: str
) -> None:
    earlier = grant("voucher.voucher.issued", "v-app", 200_000, "COST-1", T1)
    later = grant("fund.investment.committed", "f-app", 300_000, "COST-1", T2)
    events = [earlier, later] if arrival == "in order" else [later, earlier]
    for event in events:
        await apply(store, fund_book, event)

    [conflict] = await conflicts(store)
    payload = conflict["payload"]
    assert payload["kind"] == "duplicate_support"
    assert payload["detected_by"] == "fund"
    assert [a["application_id"] for a in payload["applications"]] == ["v-app", "f-app"]
    assert conflict["actor"] == {"sub": "fund-support-detector", "role": "system"}

    await apply(store, fund_book, later)  # delivered again after a restore: nothing new
    assert len(await conflicts(store)) == 1


async def test_an_overlap_whose_later_grant_is_another_programmes_is_not_ours_to_record(
    store: EventStore, fund_book: SupportBook
) -> None:
    await apply(store, fund_book, grant("fund.investment.committed", "f-app", 300_000, "C", T1))
    await apply(store, fund_book, grant("taxcredit.certificate.issued", "t-app", 100, "C", T2))

    assert await conflicts(store) == []


async def test_verification_sees_other_programmes_grants_and_what_went_back(
    store: EventStore, fund_book: SupportBook
) -> None:
    await apply(
        store,
        fund_book,
        grant("voucher.voucher.issued", "v-app", 200_000, "COST-V", T1),
        grant("taxcredit.certificate.issued", "t-app", 500_000, None, T1),
        grant("fund.investment.committed", "f-own", 100_000, "COST-F", T1),
    )
    await apply(store, fund_book, clawed_back("t-app", 150_000, remaining=350_000))

    voucher_cost = await facts(store, fund_book, "COST-V")
    assert voucher_cost.supported_elsewhere == "voucher application v-app"
    assert voucher_cost.combined_support == 200_000 + 350_000 + 100_000
    assert voucher_cost.combined_yearly_cap == CAP
    own_cost = await facts(store, fund_book, "COST-F")
    assert own_cost.supported_elsewhere == "fund application f-own"  # another of its own
    assert (await facts(store, fund_book, "COST-NEW")).supported_elsewhere is None


async def test_each_grant_made_over_the_cap_is_recorded_once(
    store: EventStore, fund_book: SupportBook
) -> None:
    later = grant("fund.investment.committed", "f-next", 10, None, T2 + timedelta(minutes=1))
    await apply(store, fund_book, grant("voucher.voucher.issued", "v-app", 600_000, None, T1))
    await apply(store, fund_book, grant("fund.investment.committed", "f-app", 500_000, None, T2))
    await apply(store, fund_book, later)
    await apply(store, fund_book, later)  # delivered again: nothing new

    crossing, beyond = await conflicts(store)
    assert crossing["payload"]["kind"] == beyond["payload"]["kind"] == "combined_cap_exceeded"
    assert [a["application_id"] for a in crossing["payload"]["applications"]] == [
        "v-app",
        "f-app",
    ]
    assert [a["application_id"] for a in beyond["payload"]["applications"]][-1] == "f-next"


async def test_another_firms_reference_that_is_the_same_string_is_another_cost(
    store: EventStore, fund_book: SupportBook
) -> None:
    theirs = grant(
        "voucher.voucher.issued", "v-other", 200_000, "INVOICE-1", T1, firm_id="999-99-99999"
    )
    await apply(store, fund_book, theirs)
    await apply(store, fund_book, grant("fund.investment.committed", "f-app", 1, "INVOICE-1", T2))

    # the firm's own grant for the string is a duplicate; the other firm's is not
    found = await facts(store, fund_book, "INVOICE-1")
    assert found.supported_elsewhere == "fund application f-app"
    assert await conflicts(store) == []  # nor is the other firm's grant an overlap


async def test_a_give_back_ahead_of_its_grant_is_refused_and_counts_once_it_comes_in_order(
    store: EventStore, fund_book: SupportBook
) -> None:
    """Only after a broker lost its log can a give-back arrive before its grant; refused
    (its consumer retries it, and it comes again in order), it changes nothing until then."""
    granted = grant("taxcredit.certificate.issued", "t-app", 500_000, "COST-T", T1)
    clawback = clawed_back("t-app", 200_000, remaining=300_000)
    with pytest.raises(LookupError, match="no grant of taxcredit application t-app"):
        await apply(store, fund_book, clawback)
    assert (await facts(store, fund_book, None)).combined_support == 0

    await apply(store, fund_book, granted)
    await apply(store, fund_book, clawback)
    assert (await facts(store, fund_book, None)).combined_support == 300_000


async def test_a_grant_recorded_by_two_transactions_at_once_is_recorded_once_and_both_commit(
    postgres_url: str,
) -> None:
    """The programme records its grant as it makes it; its own support consumer may record the
    same grant from the topic meanwhile (a replica restored, a redelivery). On PostgreSQL the
    second insert waits for the first to commit: it must then leave the row as it is, not
    fail its transaction (and with it the consumer's batch). SQLite has one writer at a time."""
    engine = create_engine(postgres_url)
    try:
        await migrated(engine)
        store = EventStore(engine, SystemClock())
        book = SupportBook(support_table(sa.MetaData()), "taxcredit", POLICY)
        certified = grant("taxcredit.certificate.issued", "t-app", 700_000, "cost-1", T1)
        async with store.transaction() as first:
            await book.record_grants(first, [certified])
            second = asyncio.create_task(apply(store, book, certified))
            await asyncio.sleep(0.3)  # the second insert is waiting on the first's row
            assert not second.done()
        await asyncio.wait_for(second, 10)  # committed, not failed

        async with engine.connect() as connection:
            rows = (await connection.execute(sa.select(book.table))).all()
        assert [(r.application_id, r.granted) for r in rows] == [("t-app", 700_000)]
    finally:
        await engine.dispose()
