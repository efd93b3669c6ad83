"""Oversight's own database: every envelope it received, the standing of each application,
the status changes (for throughput and per-stage latency), and the services' checkpoints."""

from __future__ import annotations

import sqlalchemy as sa

from shared.eventstore.schema import Position, UTCDateTime

metadata = sa.MetaData()

received = sa.Table(
    "oversight_events",
    metadata,
    sa.Column("seq", Position, primary_key=True, autoincrement=True),
    # the SSE ``id``: oversight's own order over every service's events
    sa.Column("service", sa.String(32), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=True),
    sa.Column("event_id", sa.String(36), nullable=False, unique=True),
    sa.Column("aggregate_id", sa.String(64), nullable=False),
    sa.Column("aggregate_seq", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("firm_id", sa.String(64), nullable=True),
    sa.Column("occurred_at", UTCDateTime, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("envelope", sa.Text, nullable=False),
    # the message value exactly as it came
    sa.Index("ix_oversight_events_stream", "service", "aggregate_id", "aggregate_seq"),
    sa.Index("ix_oversight_events_position", "service", "position"),
    sa.Index("ix_oversight_events_type", "type", "seq"),
)

standings = sa.Table(
    "oversight_applications",
    metadata,
    sa.Column("service", sa.String(32), primary_key=True),
    sa.Column("application_id", sa.String(64), primary_key=True),
    sa.Column("programme_id", sa.String(100), nullable=False),
    sa.Column("firm_id", sa.String(64), nullable=False),
    sa.Column("cluster", sa.String(100), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("is_open", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("status_since", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("committed", sa.BigInteger, nullable=False),
    sa.Column("paid", sa.BigInteger, nullable=False),
    sa.Column("certified", sa.BigInteger, nullable=False),
    sa.Column("clawed_back", sa.BigInteger, nullable=False),
    sa.Column("unreadable", sa.Text, nullable=True),
    # why the stream did not fold, when it did not
    sa.Index("ix_oversight_applications_open", "is_open", "status_since"),
)

transitions = sa.Table(
    "oversight_transitions",
    metadata,
    sa.Column("event_id", sa.String(36), primary_key=True),
    sa.Column("service", sa.String(32), nullable=False),
    sa.Column("application_id", sa.String(64), nullable=False),
    sa.Column("from_status", sa.String(32), nullable=False),
    sa.Column("to_status", sa.String(32), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("minute", sa.BigInteger, nullable=False),
    # minutes since the epoch: one GROUP BY on both databases
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Index("ix_oversight_transitions_minute", "minute"),
)

checkpoints = sa.Table(
    "oversight_checkpoints",
    metadata,
    sa.Column("service", sa.String(32), primary_key=True),
    sa.Column("tree_size", sa.BigInteger, primary_key=True),
    sa.Column("checkpoint_hash", sa.String(64), primary_key=True),
    # two different checkpoints of one size are a fork: both are kept
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("sealed_at", sa.String(40), nullable=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.Column("verified", sa.Boolean, nullable=True),
    # None: not checked yet (its events have not all arrived)
    sa.Column("finding", sa.Text, nullable=True),
)
