"""Budget and capacity events: what the catalogue does to a pool, decided purely, published
as contracts (AsyncAPI, schema version, payload model) and folded by oversight."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
import referencing
from pydantic import ValidationError
from referencing.jsonschema import DRAFT7

from services.fund.domain import events as fund
from services.oversight.domain.standing import POOL_EVENT_TYPES, is_application, pool_totals
from services.voucher.domain import events as voucher
from shared.asyncapi import asyncapi_document
from shared.contracts import GENESIS_HASH, Actor, Envelope, Role
from shared.domain import EventRegistry
from shared.domain.pools import Catalogue, PoolEvents, Recorded, Refusal, reconcile

CATALOGUE = Catalogue(version="2026-2", digest=hashlib.sha256(b"catalogue").hexdigest())
SERVICES: dict[str, tuple[EventRegistry, PoolEvents, str]] = {
    "voucher": (voucher.EVENTS, voucher.BUDGET_EVENTS, "budget"),
    "fund": (fund.EVENTS, fund.CAPACITY_EVENTS, "capacity"),
}


def decided(kinds: PoolEvents, recorded: Recorded, wanted: int) -> list[Any]:
    found = reconcile(kinds, "pool-1", recorded, wanted, CATALOGUE)
    assert not isinstance(found, Refusal)
    return found[0]


def sealed(stream: str, payloads: list[Any], after: Envelope | None = None) -> list[Envelope]:
    envelopes: list[Envelope] = []
    previous = after
    for payload in payloads:
        previous = Envelope.seal(
            aggregate_id=f"{stream}:pool-1",
            aggregate_seq=previous.aggregate_seq + 1 if previous else 1,
            event=payload.event(),
            occurred_at=datetime(2026, 12, 1, tzinfo=UTC),
            actor=Actor(sub="catalogue", role=Role.SYSTEM),
            firm_id=None,
            correlation_id="catalogue:test",
            causation_id=None,
            prev_hash=previous.hash if previous else GENESIS_HASH,
        )
        envelopes.append(previous)
    return envelopes


def test_a_new_pool_opens_full_and_an_unchanged_one_records_nothing() -> None:
    kinds = voucher.BUDGET_EVENTS
    [opened] = decided(kinds, Recorded(None, None, opened=False), 1_000)
    assert opened == voucher.BudgetOpened(
        programme_id="pool-1",
        total=1_000,
        available=1_000,
        catalogue_version="2026-2",
        catalogue_digest=CATALOGUE.digest,
    )
    assert decided(kinds, Recorded(1_000, 400, opened=True), 1_000) == []


def test_a_top_up_and_a_cut_move_total_and_available_by_the_change() -> None:
    kinds = fund.CAPACITY_EVENTS
    [up] = decided(kinds, Recorded(1_000, 400, opened=True), 1_500)
    assert isinstance(up, fund.CapacityToppedUp)
    assert (up.previous_total, up.new_total, up.change) == (1_000, 1_500, 500)
    assert (up.previous_available, up.new_available) == (400, 900)
    [down] = decided(kinds, Recorded(1_000, 400, opened=True), 600)
    assert isinstance(down, fund.CapacityCut)
    assert (down.change, down.new_total, down.new_available) == (400, 600, 0)
    refused = reconcile(kinds, "pool-1", Recorded(1_000, 400, opened=True), 599, CATALOGUE)
    assert refused == Refusal("pool-1", "fund capacity", 599, 1_000, 400)
    assert "lowest total it can be cut to now is 600 won" in str(refused)


def test_a_pool_older_than_its_events_is_opened_as_found_then_changed() -> None:
    opened, up = decided(voucher.BUDGET_EVENTS, Recorded(1_000, 400, opened=False), 1_200)
    assert (opened.total, opened.available) == (1_000, 400)
    assert (up.previous_total, up.new_total, up.new_available) == (1_000, 1_200, 600)


def test_figures_that_do_not_add_up_are_no_event() -> None:
    facts = {"catalogue_version": "v", "catalogue_digest": CATALOGUE.digest, "fund_id": "f"}
    with pytest.raises(ValidationError, match="do not differ by the change"):
        fund.CapacityCut(
            **facts,
            previous_total=10,
            new_total=9,
            change=2,
            previous_available=5,
            new_available=3,
        )
    with pytest.raises(ValidationError, match="did not move by the change"):
        fund.CapacityToppedUp(
            **facts,
            previous_total=10,
            new_total=12,
            change=2,
            previous_available=5,
            new_available=5,
        )
    with pytest.raises(ValidationError):  # a change is a positive amount: the type says which way
        fund.CapacityCut(
            **facts,
            previous_total=10,
            new_total=10,
            change=0,
            previous_available=5,
            new_available=5,
        )


@pytest.mark.parametrize("service", list(SERVICES))
def test_pool_events_are_published_contracts_and_fold_into_oversights_totals(
    service: str,
) -> None:
    registry, kinds, stream = SERVICES[service]
    document = asyncapi_document(
        registry, service=service, topic=f"{service}.events", title="t", description="d"
    )
    resource = DRAFT7.create_resource(document)
    references = referencing.Registry().with_resource("urn:asyncapi", resource)
    history = sealed(stream, decided(kinds, Recorded(1_000, 400, opened=False), 1_200))
    history += sealed(stream, decided(kinds, Recorded(1_200, 600, opened=True), 700), history[-1])
    types = [e.type for e in history]
    assert types == [f"{service}.{stream}.{t}" for t in ("opened", "topped_up", "cut")]
    for envelope in history:
        assert envelope.type in POOL_EVENT_TYPES and envelope.schema_version == 1
        schema = {
            "$ref": f"urn:asyncapi#/components/messages/{envelope.type.replace('.', '_')}/payload"
        }
        jsonschema.Draft7Validator(schema, registry=references).validate(
            json.loads(json.dumps(envelope.to_json_dict()))
        )
        assert registry.parse(envelope) == registry.types[envelope.type].model_validate(
            envelope.payload
        )
    assert not is_application(service, history[0])
    shuffled = [(service, e) for e in (history[2], history[0], history[1], history[2])]
    assert pool_totals(shuffled) == {(service, "pool-1"): 700}
    assert pool_totals([(service, history[1])]) == {(service, "pool-1"): 1_200}
