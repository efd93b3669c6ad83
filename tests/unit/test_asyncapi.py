"""The AsyncAPI document: structure, resolvable references, and envelopes it accepts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
import pytest
import referencing
from pydantic import BaseModel, ConfigDict, Field
from referencing.jsonschema import DRAFT7

from shared.asyncapi import asyncapi_document
from shared.contracts import GENESIS_HASH, Actor, Envelope, Role
from shared.domain.events import EventPayload, EventRegistry

TOPIC = "demo.events"


class Investment(BaseModel):
    """One investment line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    technology: str
    amount: Decimal
    made_on: date


class StrategicBasis(BaseModel):
    kind: Literal["strategic"] = "strategic"
    technology: str


class MergerBasis(BaseModel):
    kind: Literal["merger"] = "merger"
    target: str


class ClaimSubmitted(EventPayload):
    """A firm submitted a claim with its investment lines."""

    event_type: ClassVar[str] = "demo.claim.submitted"

    firm_id: str
    tax_year: int
    investments: list[Investment]
    total: Decimal
    basis: Annotated[StrategicBasis | MergerBasis, Field(discriminator="kind")]


class ClaimWithdrawn(EventPayload):
    event_type: ClassVar[str] = "demo.claim.withdrawn"
    schema_version: ClassVar[int] = 2

    reason: str


REGISTRY = EventRegistry("demo", [ClaimSubmitted, ClaimWithdrawn])


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(
        REGISTRY,
        service="demo",
        topic=TOPIC,
        title="Demo events",
        description="The events of the demo programme.",
        servers={"local": "localhost:9092"},
    )


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{ref} does not resolve"
        node = node[token]
    return node


def _validator(document: dict[str, Any], message: str) -> Any:
    """A draft-7 validator of ``message``'s payload, its refs resolved inside the document."""
    resource = DRAFT7.create_resource(document)
    registry = referencing.Registry().with_resource("urn:asyncapi", resource)
    schema = {"$ref": f"urn:asyncapi#/components/messages/{message}/payload"}
    return jsonschema.Draft7Validator(schema, registry=registry)


def _envelope(event: EventPayload) -> dict[str, Any]:
    sealed = Envelope.seal(
        aggregate_id="app-1",
        aggregate_seq=1,
        event=event.event(),
        occurred_at=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        actor=Actor(sub="firm-user", role=Role.FIRM),
        firm_id="123-45-67890",
        correlation_id="corr-1",
        causation_id=None,
        prev_hash=GENESIS_HASH,
    )
    # exactly what goes on the wire
    wire: dict[str, Any] = json.loads(json.dumps(sealed.to_json_dict()))
    return wire


SUBMITTED = ClaimSubmitted(
    firm_id="123-45-67890",
    tax_year=2026,
    investments=[
        Investment(
            technology="biopharma.cell_culture",
            amount=Decimal("1000000000"),
            made_on=date(2026, 2, 1),
        )
    ],
    total=Decimal("1000000000"),
    basis=MergerBasis(target="Cellgen Bio"),
)


def test_document_header_and_channel(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"] == {
        "title": "Demo events",
        "version": "0.1.0",
        "description": "The events of the demo programme.",
    }
    assert document["defaultContentType"] == "application/json"
    assert document["servers"] == {"local": {"host": "localhost:9092", "protocol": "kafka"}}
    (channel,) = document["channels"].values()
    assert channel["address"] == TOPIC


def test_one_message_per_event_type(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    assert set(messages) == {"demo_claim_submitted", "demo_claim_withdrawn"}
    (channel,) = document["channels"].values()
    assert len(channel["messages"]) == 2
    submitted = messages["demo_claim_submitted"]
    assert submitted["name"] == "demo_claim_submitted"
    assert submitted["title"] == "Claim submitted"
    assert submitted["description"] == "A firm submitted a claim with its investment lines."
    assert "description" not in messages["demo_claim_withdrawn"]  # no docstring of its own
    assert submitted["contentType"] == "application/json"
    assert submitted["bindings"]["kafka"]["key"]["type"] == "string"
    headers = messages["demo_claim_withdrawn"]["headers"]
    assert set(headers["required"]) == {"type", "event_id", "correlation_id", "schema_version"}
    assert headers["properties"]["schema_version"] == {"type": "string", "const": "2"}
    assert all(p["type"] == "string" for p in headers["properties"].values())


def test_one_send_operation_lists_every_message(document: dict[str, Any]) -> None:
    (operation,) = document["operations"].values()
    assert operation["action"] == "send"
    assert _resolve(document, operation["channel"]["$ref"]) is next(
        iter(document["channels"].values())
    )
    names = {_resolve(document, m["$ref"])["$ref"] for m in operation["messages"]}
    assert names == {
        "#/components/messages/demo_claim_submitted",
        "#/components/messages/demo_claim_withdrawn",
    }


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = set(_refs(document))
    assert "#/components/schemas/Investment" in refs  # the nested model, hoisted
    for ref in refs:
        _resolve(document, ref)
    assert "$defs" not in json.dumps(document)


def _discriminators(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        if "oneOf" in node and "discriminator" in node:
            yield node["discriminator"]
        for value in node.values():
            yield from _discriminators(value)
    elif isinstance(node, list):
        for item in node:
            yield from _discriminators(item)


def test_discriminators_are_asyncapi_property_names(document: dict[str, Any]) -> None:
    assert list(_discriminators(document)) == ["kind"]  # not OpenAPI's object


def test_payloads_validate_real_envelopes(document: dict[str, Any]) -> None:
    _validator(document, "demo_claim_submitted").validate(_envelope(SUBMITTED))
    withdrawn = _envelope(ClaimWithdrawn(reason="duplicate"))
    assert withdrawn["schema_version"] == 2
    _validator(document, "demo_claim_withdrawn").validate(withdrawn)


def test_payload_missing_a_required_field_is_rejected(document: dict[str, Any]) -> None:
    envelope = _envelope(SUBMITTED)
    del envelope["payload"]["investments"][0]["made_on"]
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)
    envelope = _envelope(SUBMITTED)
    del envelope["payload"]["total"]
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)
    envelope = _envelope(SUBMITTED)
    envelope["payload"]["basis"] = {"kind": "merger", "technology": "cell culture"}
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)


def test_envelope_of_another_type_is_rejected(document: dict[str, Any]) -> None:
    envelope = _envelope(SUBMITTED)
    assert not _validator(document, "demo_claim_withdrawn").is_valid(envelope)
    envelope["type"] = "demo.claim.withdrawn"
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)


def test_envelope_fields_are_checked_too(document: dict[str, Any]) -> None:
    envelope = _envelope(SUBMITTED)
    envelope["hash"] = "not-a-hash"
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)
    envelope = _envelope(SUBMITTED)
    envelope["extra"] = 1
    assert not _validator(document, "demo_claim_submitted").is_valid(envelope)


def test_document_is_pure_json_and_deterministic() -> None:
    def build() -> str:
        return json.dumps(
            asyncapi_document(REGISTRY, service="demo", topic=TOPIC, title="t", description="d"),
            sort_keys=True,
        )

    first = build()
    assert first == build()
    assert "servers" not in json.loads(first)


def test_clashing_message_names_are_refused() -> None:
    class A(EventPayload):
        event_type: ClassVar[str] = "demo.a_b.c"

    class B(EventPayload):
        event_type: ClassVar[str] = "demo.a.b_c"

    with pytest.raises(ValueError, match="message name"):
        asyncapi_document(
            EventRegistry("demo", [A, B]), service="demo", topic=TOPIC, title="t", description="d"
        )
