"""The oversight schema as it stood when migrations began.

Revision ID: oversight_0001
Created: 2026-12-02 12:59:31.027072
"""

import sqlalchemy as sa
from alembic import op

from shared import schema_history

revision = "oversight_0001"
down_revision = None


def upgrade() -> None:
    schema_history.create_log_0001()
    op.create_table(
        "oversight_applications",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("programme_id", sa.String(length=100), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("cluster", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        schema_history.moment_0001("status_since"),
        schema_history.moment_0001("updated_at"),
        sa.Column("committed", sa.BigInteger(), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("certified", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back", sa.BigInteger(), nullable=False),
        sa.Column("unreadable", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("service", "application_id"),
    )
    op.create_index(
        "ix_oversight_applications_open",
        "oversight_applications",
        ["is_open", "status_since"],
        unique=False,
    )
    op.create_table(
        "oversight_checkpoints",
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("sealed_at", sa.String(length=40), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        schema_history.moment_0001("received_at"),
        sa.Column("verified", sa.Boolean(), nullable=True),
        sa.Column("finding", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("service", "tree_size", "checkpoint_hash"),
    )
    op.create_table(
        "oversight_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64), nullable=False),
        sa.Column("aggregate_seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=True),
        schema_history.moment_0001("occurred_at"),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_oversight_events_position", "oversight_events", ["service", "position"], unique=False
    )
    op.create_index(
        "ix_oversight_events_stream",
        "oversight_events",
        ["service", "aggregate_id", "aggregate_seq"],
        unique=False,
    )
    op.create_index("ix_oversight_events_type", "oversight_events", ["type", "seq"], unique=False)
    op.create_table(
        "oversight_transitions",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=False),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        schema_history.moment_0001("at"),
        sa.Column("minute", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_oversight_transitions_minute", "oversight_transitions", ["minute"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_oversight_transitions_minute", table_name="oversight_transitions")
    op.drop_table("oversight_transitions")
    op.drop_index("ix_oversight_events_type", table_name="oversight_events")
    op.drop_index("ix_oversight_events_stream", table_name="oversight_events")
    op.drop_index("ix_oversight_events_position", table_name="oversight_events")
    op.drop_table("oversight_events")
    op.drop_table("oversight_checkpoints")
    op.drop_index("ix_oversight_applications_open", table_name="oversight_applications")
    op.drop_table("oversight_applications")
    schema_history.drop_log_0001()
