"""Steps of schema history that several services' migrations take alike.

The shared tables (the log, the inbox, the broker log, idempotency keys, checkpoints,
support grants, the ledger, pools) and the columns and indexes every programme's
``applications`` table begins with are created the same way in each service's history.
They are written once, here, and each service's ``0001`` calls them beside its own
tables; the types its own columns share (JSON documents, UTC moments) are here too.

A migration is history: once it has run somewhere, what it does must not change. So a
function here is **frozen** once a migration calls it. A later change to a shared table
is a new function (``…_0002``), called by a new migration in each service that holds
the table. Only migrations import this module. The stairway test holds each service's
migrated schema to its models, both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from shared.eventstore.schema import UTCDateTime


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _moment(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, UTCDateTime(timezone=True), nullable=nullable)


def document_type_0001() -> sa.types.TypeEngine[Any]:
    """A JSON document column's type, as the first revisions made it (JSONB on PostgreSQL)."""
    return _json()


def moment_0001(name: str, nullable: bool = False) -> sa.Column[object]:
    """A UTC timestamp column, as the first revisions made it."""
    return _moment(name, nullable)


def create_log_0001() -> None:
    """The broker log (with its one row), the event log, idempotency keys and the inbox."""
    broker_log = op.create_table(
        "broker_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.String(length=200), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        _moment("changed_at", nullable=True),
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
        _moment("occurred_at"),
        sa.Column("actor", _json(), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=True),
        sa.Column("correlation_id", sa.String(length=64), nullable=False),
        sa.Column("causation_id", sa.String(length=64), nullable=True),
        sa.Column("payload", _json(), nullable=False),
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
        _moment("created_at"),
        sa.PrimaryKeyConstraint("principal", "key"),
    )
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=100), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        _moment("processed_at"),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )


def drop_log_0001() -> None:
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


def create_checkpoints_0001() -> None:
    """A publishing service's signed checkpoints of its log."""
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("previous_checkpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("checkpoint_hash", sa.String(length=64), nullable=False),
        _moment("sealed_at"),
        sa.Column("key_id", sa.String(length=100), nullable=False),
        sa.Column("signature", sa.String(length=100), nullable=False),
        sa.Column("published", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("tree_size"),
        sa.UniqueConstraint("checkpoint_hash"),
        sa.UniqueConstraint("previous_checkpoint_hash"),
    )


def drop_checkpoints_0001() -> None:
    op.drop_table("checkpoints")


def application_columns_0001() -> list[sa.Column[object]]:
    """The columns every programme's ``applications`` table begins with (new objects each call)."""
    return [
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("firm_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(length=64), nullable=False),
        sa.Column("document", _json(), nullable=False),
        _moment("created_at"),
        _moment("updated_at"),
    ]


def create_application_indexes_0001() -> None:
    """The indexes of every programme's application list: newest first, by firm, by status."""
    op.create_index("ix_applications_created", "applications", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_applications_firm", "applications", ["firm_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "ix_applications_status", "applications", ["status", "created_at", "id"], unique=False
    )


def drop_application_indexes_0001() -> None:
    op.drop_index("ix_applications_status", table_name="applications")
    op.drop_index("ix_applications_firm", table_name="applications")
    op.drop_index("ix_applications_created", table_name="applications")


def create_support_grants_0001() -> None:
    """The support each programme has granted, read across programmes for the combined cap."""
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
        _moment("granted_at"),
        sa.PrimaryKeyConstraint("programme", "application_id"),
    )
    op.create_index("ix_support_grants_cost", "support_grants", ["cost_reference"], unique=False)
    op.create_index(
        "ix_support_grants_firm_year", "support_grants", ["firm_id", "year"], unique=False
    )


def drop_support_grants_0001() -> None:
    op.drop_index("ix_support_grants_firm_year", table_name="support_grants")
    op.drop_index("ix_support_grants_cost", table_name="support_grants")
    op.drop_table("support_grants")


def create_programme_0001(
    *columns: sa.Column[object], constraints: Sequence[sa.Constraint] = ()
) -> None:
    """What a programme service's first revision creates before its own tables: the log,
    the checkpoints, and ``applications`` (the common columns, then ``columns``; its key,
    then ``constraints``) with its list indexes."""
    create_log_0001()
    create_checkpoints_0001()
    op.create_table(
        "applications",
        *application_columns_0001(),
        *columns,
        sa.PrimaryKeyConstraint("id"),
        *constraints,
    )
    create_application_indexes_0001()


def create_unique_among_0001(name: str, columns: list[str], statuses: Sequence[str]) -> None:
    """A unique index on ``applications`` over the rows in ``statuses`` only (partial, on
    both backends): one open application per firm, one live claim per reference."""
    if not all(status.isidentifier() and status.islower() for status in statuses):
        raise ValueError(f"statuses are lower-case words, not {list(statuses)}")
    listed = ", ".join(f"'{status}'" for status in statuses)
    where = sa.text(f"status IN ({listed})")
    op.create_index(
        name, "applications", columns, unique=True, postgresql_where=where, sqlite_where=where
    )


def create_pools_0001(name: str) -> None:
    """A table of pools (budgets, fund capacity): what each holds, and what is still free."""
    op.create_table(
        name,
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("available <= total", name=f"ck_{name}_within_total"),
        sa.CheckConstraint("available >= 0", name=f"ck_{name}_never_negative"),
        sa.PrimaryKeyConstraint("pool_id"),
    )


def create_ledger_0001() -> None:
    """The double-entry ledger a paying service writes: one entry per payout id."""
    op.create_table(
        "ledger_entries",
        sa.Column("payout_id", sa.String(length=100), nullable=False),
        sa.Column("debit_account", sa.String(length=100), nullable=False),
        sa.Column("credit_account", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=False),
        _moment("recorded_at"),
        sa.CheckConstraint("amount > 0", name="ck_ledger_positive"),
        sa.PrimaryKeyConstraint("payout_id"),
        sa.UniqueConstraint("reference"),
    )


def create_payout_attempts_0001() -> None:
    """The failed attempts at each payout a service makes over the network (a treasury), as
    voucher's first revision made them and fund's second."""
    op.create_table(
        "payout_attempts",
        sa.Column("payout_id", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        _moment("next_attempt_at"),
        sa.PrimaryKeyConstraint("payout_id"),
    )


def drop_programme_0001() -> None:
    drop_application_indexes_0001()
    op.drop_table("applications")
    drop_checkpoints_0001()
    drop_log_0001()
