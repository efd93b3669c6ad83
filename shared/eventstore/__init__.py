"""The event store: hash-chained append, the outbox marker, and the inbox."""

from shared.eventstore.database import create_engine, is_sqlite
from shared.eventstore.schema import events, inbox, metadata
from shared.eventstore.store import (
    NEW_STREAM,
    ConcurrencyConflict,
    EventContext,
    EventStore,
    OutboxMessage,
    PendingBatch,
    StoredEvent,
    StreamVersion,
    UnitOfWork,
    is_unique_violation,
)

__all__ = [
    "NEW_STREAM",
    "ConcurrencyConflict",
    "EventContext",
    "EventStore",
    "OutboxMessage",
    "PendingBatch",
    "StoredEvent",
    "StreamVersion",
    "UnitOfWork",
    "create_engine",
    "events",
    "inbox",
    "is_sqlite",
    "is_unique_violation",
    "metadata",
]
