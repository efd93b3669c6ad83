"""The fund schema as it stood when migrations began.

Revision ID: fund_0001
Created: 2026-12-02 12:59:30.591049
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.eventstore.schema

revision: str = "fund_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    broker_log = op.create_table(
        "broker_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("changed_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    # the one row the relay reads and marks: no broker seen yet, no loss yet
    op.bulk_insert(broker_log, [{"id": 1, "cluster_id": "", "epoch": 0}])
    op.create_table(
        "events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64), nullable=False),
        sa.Column("aggregate_seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column(
            "occurred_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "actor",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("firm_id", sa.String(length=64), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=False),
        sa.Column("causation_id", sa.String(length=64), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("published", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("position"),
        sa.UniqueConstraint("aggregate_id", "aggregate_seq", name="uq_events_aggregate_seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(
        "ix_events_unpublished",
        "events",
        ["position"],
        unique=False,
        postgresql_where=sa.text("NOT published"),
        sqlite_where=sa.text("NOT published"),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("principal", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "created_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("principal", "key"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column(
            "processed_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("previous_checkpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=100), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("published", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
        sa.UniqueConstraint("checkpoint_hash"),
        sa.UniqueConstraint("previous_checkpoint_hash"),
    )
    op.create_table(
        "applications",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "created_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("fund_id", sa.String(length=100), nullable=False),
        sa.Column("cost_reference", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("disbursed", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_applications_created", "applications", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_applications_firm", "applications", ["firm_id", "created_at", "id"], unique=False
    )
    op.create_index("ix_applications_fund", "applications", ["fund_id", "status"], unique=False)
    op.create_index(
        "ix_applications_status", "applications", ["status", "created_at", "id"], unique=False
    )
    op.create_table(
        "fund_capacity",
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("available <= total", name="ck_fund_capacity_within_total"),
        sa.CheckConstraint("available >= 0", name="ck_fund_capacity_never_negative"),
        sa.PrimaryKeyConstraint("pool_id"),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("payout_id", sa.String(length=100), nullable=False),
        sa.Column("debit_account", sa.String(length=100), nullable=False),
        sa.Column("credit_account", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        sa.Column(
            "recorded_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.CheckConstraint("amount > 0", name="ck_ledger_positive"),
        sa.PrimaryKeyConstraint("payout_id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_table(
        "support_grants",
        sa.Column("programme", sa.String(length=20), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("cost_reference", sa.String(length=200), nullable=True),
        sa.Column("granted", sa.BigInteger(), nullable=False),
        sa.Column("given_back", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column(
            "granted_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("programme", "application_id"),
    )
    op.create_index("ix_support_grants_cost", "support_grants", ["cost_reference"], unique=False)
    op.create_index(
        "ix_support_grants_firm_year", "support_grants", ["firm_id", "year"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_support_grants_firm_year", table_name="support_grants")
    op.drop_index("ix_support_grants_cost", table_name="support_grants")
    op.drop_table("support_grants")
    op.drop_table("ledger_entries")
    op.drop_table("fund_capacity")
    op.drop_index("ix_applications_status", table_name="applications")
    op.drop_index("ix_applications_fund", table_name="applications")
    op.drop_index("ix_applications_firm", table_name="applications")
    op.drop_index("ix_applications_created", table_name="applications")
    op.drop_table("applications")
    op.drop_table("checkpoints")
    op.drop_table("inbox")
    op.drop_table("idempotency_keys")
    op.drop_index(
        "ix_events_unpublished",
        table_name="events",
        postgresql_where=sa.text("NOT published"),
        sqlite_where=sa.text("NOT published"),
    )
    op.drop_table("events")
    op.drop_table("broker_log")
