"""The fund service's AsyncAPI document describes the envelopes its decider really writes."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT7

from services.fund.domain.events import EVENTS
from shared.asyncapi import asyncapi_document
from tests.unit.fund_builders import (
    FundStream,
    cancel,
    committed,
    pay,
    release,
    submit,
    verify,
    vote_against,
    withdraw,
)


def _document() -> dict[str, Any]:
    return asyncapi_document(
        EVENTS,
        service="fund",
        topic="fund.events",
        title="Fund events",
        description="The events of the fund programme.",
        servers={"local": "localhost:9092"},
    )


def _validator(document: dict[str, Any], message: str) -> jsonschema.Draft7Validator:
    resource = DRAFT7.create_resource(document)
    registry = referencing.Registry().with_resource("urn:asyncapi", resource)
    schema = {"$ref": f"urn:asyncapi#/components/messages/{message}/payload"}
    return jsonschema.Draft7Validator(schema, registry=registry)


def test_every_envelope_of_an_investments_life_matches_its_message() -> None:
    document = _document()
    paid = committed()
    assert paid.app is not None
    for tranche in paid.app.tranches:
        paid.given(release(tranche.number), pay(tranche.number))
    cancelled = committed().given(release(1), pay(1), cancel())
    rejected = FundStream().given(submit(), verify(available=0))
    withdrawn = FundStream().given(submit(), withdraw())
    outvoted = (
        FundStream()
        .given(submit(), verify())
        .given(vote_against("officer-kim"), vote_against("officer-lee"))
    )
    seen = set()
    for stream in (paid, cancelled, rejected, withdrawn, outvoted):
        for envelope in stream.envelopes:
            wire = json.loads(json.dumps(envelope.to_json_dict()))
            message = envelope.type.replace(".", "_")
            assert message in document["components"]["messages"], envelope.type
            _validator(document, message).validate(wire)
            seen.add(envelope.type)
    written = {  # the capacity's events: tests/unit/test_pool_events.py
        t for t in EVENTS.types if t != "support.conflict.detected" and ".capacity." not in t
    }
    assert seen == written
