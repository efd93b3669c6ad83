"""Tables every service database has: the event log (which is also the outbox) and the inbox."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on PostgreSQL and SQLite alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", Position, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("aggregate_seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("actor", JSONDocument, nullable=False),
    sa.Column("firm_id", sa.String(64), nullable=True),
    sa.Column("correlation_id", sa.String(64), nullable=False),
    sa.Column("causation_id", sa.String(64), nullable=True),
    sa.Column("payload", JSONDocument, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("aggregate_id", "aggregate_seq", name="uq_events_aggregate_seq"),
    sa.Index(
        "ix_events_unpublished",
        "position",
        postgresql_where=sa.text("NOT published"),
        sqlite_where=sa.text("NOT published"),
    ),
)

UNPUBLISHED = sa.text("NOT events.published")
"""The condition for events the relay has not seen acknowledged, spelled as the predicate of
``ix_events_unpublished``. Both databases use a partial index only for a condition they can
match to its own: ``published IS false`` (or SQLite's ``published = 0``) is not matched, and
PostgreSQL then scanned the whole log for each relay batch."""

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("processed_at", UTCDateTime, nullable=False),
)

broker_log = sa.Table(
    "broker_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # the broker cluster the log was last published to ('' until a service first sees one)
    sa.Column("cluster_id", sa.String(200), nullable=False),
    # counts the times the broker was found to have lost the log: a relay marks an event
    # published only if no loss was recorded since it read the epoch, before sending
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("changed_at", UTCDateTime, nullable=True),
)
"""One row (``id`` 1): which broker holds this service's published log."""
