"""Typed event payloads: each event type is a pydantic model with its schema version.

A decider builds payload models and turns them into :class:`NewEvent` with
:meth:`EventPayload.event`; a fold reads an envelope back through
:meth:`EventRegistry.parse`, which first runs the upcasters from the version the
event was written in to the model's current one. The log is evidence: old events are
read through upcasters, never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from shared.contracts import Envelope, NewEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
P = TypeVar("P", bound="EventPayload")


class Part(BaseModel):
    """A frozen part of an event payload (a nested object)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EventPayload(BaseModel):
    """The payload of one registered event type (``event_type``, ``schema_version``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def event(self) -> NewEvent:
        """This payload as the event a decider returns."""
        new = NewEvent(
            type=self.event_type,
            payload=self.model_dump(mode="json"),
            schema_version=self.schema_version,
        )
        _built(new.payload, self)
        return new


_BUILT: dict[int, tuple[dict[str, Any], EventPayload]] = {}
"""The payload models this process made events of (:meth:`EventPayload.event`), by the
identity of the payload that event carries (sealed, the envelope carries the same dict): the
fold that follows a decision takes the model instead of validating the dict back into one.
An entry holds its dict, so the dict's id cannot be another's while the entry stands."""
BUILT_KEPT = 4096
"""Entries kept: one is taken by the first parse of its event, almost always within the
same transaction; those never parsed (a decision undone) go oldest first."""


def _built(payload: dict[str, Any], model: EventPayload) -> None:
    if len(_BUILT) >= BUILT_KEPT:
        _BUILT.pop(next(iter(_BUILT)))
    _BUILT[id(payload)] = (payload, model)


def _taken_built(envelope: Envelope, model: type[EventPayload]) -> EventPayload | None:
    """The model ``envelope``'s payload was made from in this process, if it was, and if it
    is the current version of the type's model."""
    entry = _BUILT.pop(id(envelope.payload), None)
    if entry is None:
        return None
    payload, built = entry
    if payload is not envelope.payload or type(built) is not model:
        return None
    return built


class EventRegistry:
    """The event types of one programme: payload models by type name, and their upcasters."""

    def __init__(self, service: str, payloads: Iterable[type[EventPayload]] = ()) -> None:
        self.service = service
        self._types: dict[str, type[EventPayload]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._parsed: dict[tuple[str, str, int], EventPayload] = {}
        for payload in payloads:
            self.register(payload)

    def register(self, payload: type[P]) -> type[P]:
        """Register ``payload`` under its ``event_type`` (usable as a class decorator)."""
        name = payload.event_type
        if name in self._types:
            raise ValueError(f"{name} is registered twice")
        self._types[name] = payload
        return payload

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register a function that turns a ``from_version`` payload into the next version's."""

        def register(function: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise ValueError(f"{event_type} v{from_version} has an upcaster already")
            self._upcasters[key] = function
            return function

        return register

    @property
    def types(self) -> dict[str, type[EventPayload]]:
        return dict(self._types)

    def upcast(self, event_type: str, version: int, payload: dict[str, Any]) -> dict[str, Any]:
        """``payload`` as written at ``version``, brought to the current version."""
        model = self._model(event_type)
        if version > model.schema_version:
            raise ValueError(
                f"{event_type} v{version} is newer than this code knows (v{model.schema_version})"
            )
        while version < model.schema_version:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise ValueError(f"{event_type}: no upcaster from v{version}")
            payload = step(dict(payload))
            version += 1
        return payload

    def parse(self, envelope: Envelope) -> EventPayload:
        """The envelope's payload as its current model (upcast first if it is older).

        Parsed once per event: the hash covers the payload, so an envelope with the same
        hash (and type) has the same payload, and folds that read it again reuse it.
        """
        key = (envelope.hash, envelope.type, envelope.schema_version)
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = self._parse(envelope)
            if len(self._parsed) >= self.CACHE_SIZE:
                self._parsed.pop(next(iter(self._parsed)))  # the oldest
            self._parsed[key] = parsed
        return parsed

    CACHE_SIZE = 16384

    def _parse(self, envelope: Envelope) -> EventPayload:
        payload = envelope.payload
        model = self._model(envelope.type)
        if envelope.schema_version != model.schema_version:
            payload = self.upcast(envelope.type, envelope.schema_version, payload)
        elif (built := _taken_built(envelope, model)) is not None:
            return built  # what validating its dump would give back (a test holds it so)
        return model.model_validate(payload)

    def _model(self, event_type: str) -> type[EventPayload]:
        model = self._types.get(event_type)
        if model is None:
            raise ValueError(f"{event_type} is not an event type of {self.service}")
        return model
