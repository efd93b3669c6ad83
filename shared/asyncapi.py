"""The AsyncAPI 3.0.0 document of a service's events, generated from its typed payloads.

One channel, ``<service>.events``, whose address is the Kafka topic; one message per
registered event type. A message's payload is the envelope exactly as published (the
Kafka message value, key = ``aggregate_id``), with ``type`` and ``schema_version`` fixed
to the event type and its current version and ``payload`` described by the event
type's pydantic model. Every schema lives once under ``components.schemas``, so every
``$ref`` in the document points inside it. Pure: no I/O.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.contracts import Envelope
from shared.domain.events import EventPayload, EventRegistry

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
CONTENT_TYPE = "application/json"
_SCHEMAS = "#/components/schemas/"
_NOT_A_KEY = re.compile(r"[^A-Za-z0-9_-]")
_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "definitions", "$defs", "dependentSchemas", "dependencies"}
)
_LITERAL_VALUES = frozenset({"const", "enum", "default", "examples", "example"})


def asyncapi_document(
    registry: EventRegistry,
    *,
    service: str,
    topic: str,
    title: str,
    description: str,
    version: str = "0.1.0",
    servers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the events ``service`` publishes on ``topic``.

    ``servers`` maps a server name to a Kafka bootstrap ``host:port``.
    """
    types = registry.types
    names = _message_names(types)
    schemas, envelope_ref, payload_refs = _component_schemas(types)

    channel_id = f"{service}.events"
    channel_ref = "#/channels/" + _pointer(channel_id)
    messages = {
        names[event_type]: _message(
            service, event_type, model, names[event_type], envelope_ref, payload_refs[event_type]
        )
        for event_type, model in types.items()
    }
    channel: dict[str, Any] = {
        "address": topic,
        "title": f"{service} events",
        "description": (
            f"Every event of {service}, in the order of its application's hash chain: "
            "the Kafka message key is the application (aggregate) id, so one "
            "application's events stay ordered within a partition."
        ),
        "messages": {
            name: {"$ref": "#/components/messages/" + _pointer(name)} for name in messages
        },
    }
    operation = {
        "action": "send",
        "channel": {"$ref": channel_ref},
        "title": f"{service} publishes its events",
        "summary": "The outbox relay publishes each appended event, in log order, at least once.",
        "messages": [
            {"$ref": f"{channel_ref}/messages/{_pointer(name)}"} for name in channel["messages"]
        ],
    }

    document: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
    }
    if servers:
        document["servers"] = {
            name: {"host": host, "protocol": "kafka"} for name, host in servers.items()
        }
    document["defaultContentType"] = CONTENT_TYPE
    document["channels"] = {channel_id: channel}
    document["operations"] = {f"publish_{_key(service)}_events": operation}
    document["components"] = {"schemas": schemas, "messages": messages}
    return document


def _message_names(types: dict[str, type[EventPayload]]) -> dict[str, str]:
    """A component key per event type (dots become underscores); clashes are an error."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for event_type in types:
        name = _key(event_type)
        if name in taken:
            raise ValueError(f"{event_type} and {taken[name]} would share the message name {name}")
        taken[name] = event_type
        names[event_type] = name
    return names


def _component_schemas(
    types: dict[str, type[EventPayload]],
) -> tuple[dict[str, Any], str, dict[str, str]]:
    """Every schema the document needs, keyed for ``components.schemas``.

    Returns the schemas, the envelope's ``$ref`` and, per event type, the ``$ref`` of its
    payload model's schema. The envelope and all payload models are generated together,
    so pydantic gives distinct keys to models that share a name.
    """
    models: list[type[Any]] = [Envelope, *types.values()]
    keyed, top = models_json_schema(
        [(model, "serialization") for model in models],
        ref_template=_SCHEMAS + "{model}",
    )
    schemas: dict[str, Any] = {
        key: _asyncapi_schema(schema) for key, schema in top.get("$defs", {}).items()
    }
    envelope_ref = _schema_ref(keyed[(Envelope, "serialization")])
    _describe_envelope(schemas[envelope_ref.removeprefix(_SCHEMAS)])
    payload_refs = {
        event_type: _schema_ref(keyed[(model, "serialization")])
        for event_type, model in types.items()
    }
    return schemas, envelope_ref, payload_refs


def _asyncapi_schema(schema: Any, *, names: bool = False) -> Any:
    """A pydantic JSON schema as an AsyncAPI Schema Object.

    The one keyword that differs is ``discriminator``: pydantic writes OpenAPI's object
    (``propertyName`` and ``mapping``), AsyncAPI takes the property name as a string; the
    ``oneOf`` branches still tell the variants apart by their ``const`` tag. ``names`` is
    true for a map from names to schemas (``properties``), whose keys are not keywords.
    """
    if isinstance(schema, list):
        return [_asyncapi_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted: dict[str, Any] = {}
    for key, value in schema.items():
        if names:
            converted[key] = _asyncapi_schema(value)
        elif key == "discriminator" and isinstance(value, dict) and "propertyName" in value:
            converted[key] = value["propertyName"]
        elif key in _SCHEMA_MAPS:
            converted[key] = _asyncapi_schema(value, names=True)
        elif key in _LITERAL_VALUES:
            converted[key] = value
        else:
            converted[key] = _asyncapi_schema(value)
    return converted


def _describe_envelope(schema: dict[str, Any]) -> None:
    properties = schema["properties"]
    occurred_at = properties.get("occurred_at", {})
    if occurred_at.get("type") == "string" and "pattern" not in occurred_at:
        occurred_at["format"] = "date-time"
        occurred_at["pattern"] = _TIMESTAMP_PATTERN
        occurred_at["description"] = "UTC, with microseconds and a Z: the one form in the log."
    properties["hash"]["description"] = (
        'sha256 (hex) of the RFC 8785 canonical JSON of this envelope without "hash".'
    )
    properties["prev_hash"]["description"] = (
        "The hash of the previous event of the same application (64 zeros for its first)."
    )
    properties["aggregate_id"]["description"] = "The application id; also the Kafka message key."


def _message(
    service: str,
    event_type: str,
    model: type[EventPayload],
    name: str,
    envelope_ref: str,
    payload_ref: str,
) -> dict[str, Any]:
    version = model.schema_version
    message: dict[str, Any] = {
        "name": name,
        "title": _title(service, event_type),
        "summary": f"The {event_type} event, payload schema version {version}.",
    }
    doc = model.__dict__.get("__doc__")
    if isinstance(doc, str) and doc.strip():
        message["description"] = inspect.cleandoc(doc)
    message["contentType"] = CONTENT_TYPE
    message["headers"] = {
        "type": "object",
        "description": "Kafka record headers set by the relay (UTF-8 strings).",
        "required": ["type", "event_id", "correlation_id", "schema_version"],
        "properties": {
            "type": {"type": "string", "const": event_type},
            "event_id": {"type": "string"},
            "correlation_id": {"type": "string"},
            "schema_version": {"type": "string", "const": str(version)},
        },
    }
    message["payload"] = {
        "title": f"{model.__name__} envelope",
        "description": "The envelope of one event, exactly as hashed, published and served.",
        "allOf": [
            {"$ref": envelope_ref},
            {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "const": event_type},
                    "schema_version": {"type": "integer", "const": version},
                    "payload": {"$ref": payload_ref},
                },
            },
        ],
    }
    message["bindings"] = {
        "kafka": {
            "key": {"type": "string", "description": "The aggregate (application) id."},
            "bindingVersion": KAFKA_BINDING_VERSION,
        }
    }
    return message


def _title(service: str, event_type: str) -> str:
    """``taxcredit.certificate.issued`` of taxcredit -> ``Certificate issued``."""
    parts = event_type.split(".")
    if len(parts) > 1 and parts[0] == service:
        parts = parts[1:]
    words = " ".join(part.replace("_", " ") for part in parts)
    return words[:1].upper() + words[1:]


def _key(text: str) -> str:
    return _NOT_A_KEY.sub("_", text)


def _schema_ref(reference: dict[str, Any]) -> str:
    ref = reference.get("$ref")
    if not isinstance(ref, str) or not ref.startswith(_SCHEMAS):
        raise ValueError(f"unexpected schema reference {ref!r}")
    return ref


def _pointer(token: str) -> str:
    """``token`` escaped as one JSON Pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")
