"""The voucher schema as it stood when migrations began.

Revision ID: voucher_0001
Created: 2026-12-02 12:59:30.015062
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.eventstore.schema
from shared import schema_history

revision: str = "voucher_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema_history.create_log_0001()
    schema_history.create_checkpoints_0001()
    op.create_table(
        "applications",
        *schema_history.application_columns_0001(),
        sa.Column("programme_id", sa.String(length=100), nullable=False),
        sa.Column("approved_amount", sa.BigInteger(), nullable=True),
        sa.Column("returned_amount", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=True),
        sa.Column("voucher_expires_on", sa.Date(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("voucher_id"),
    )
    schema_history.create_application_indexes_0001()
    op.create_index(
        "ix_applications_expiry", "applications", ["status", "voucher_expires_on"], unique=False
    )
    op.create_index(
        "uq_applications_open_per_firm",
        "applications",
        ["firm_id", "programme_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('verified', 'approved', 'issued')"),
        sqlite_where=sa.text("status IN ('verified', 'approved', 'issued')"),
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
        "payout_attempts",
        sa.Column("payout_id", sa.String(length=100), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=1000), nullable=True),
        sa.Column(
            "next_attempt_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("payout_id"),
    )
    op.create_table(
        "programme_budgets",
        sa.Column("pool_id", sa.String(length=100), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("available <= total", name="ck_programme_budgets_within_total"),
        sa.CheckConstraint("available >= 0", name="ck_programme_budgets_never_negative"),
        sa.PrimaryKeyConstraint("pool_id"),
    )
    op.create_table(
        "providers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "service_categories",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("registered_by", sa.String(length=200), nullable=False),
        sa.Column(
            "registered_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "redemptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("provider_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_number", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("service_category", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("payout_id", sa.String(length=100), nullable=True),
        sa.Column(
            "requested_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("paid_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_redemption_positive"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_id", "invoice_number", name="uq_redemptions_invoice"),
    )
    op.create_index(op.f("ix_redemptions_voucher_id"), "redemptions", ["voucher_id"], unique=False)
    schema_history.create_support_grants_0001()


def downgrade() -> None:
    schema_history.drop_support_grants_0001()
    op.drop_index(op.f("ix_redemptions_voucher_id"), table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_table("providers")
    op.drop_table("programme_budgets")
    op.drop_table("payout_attempts")
    op.drop_table("ledger_entries")
    op.drop_index(
        "uq_applications_open_per_firm",
        table_name="applications",
        postgresql_where=sa.text("status IN ('verified', 'approved', 'issued')"),
        sqlite_where=sa.text("status IN ('verified', 'approved', 'issued')"),
    )
    op.drop_index("ix_applications_expiry", table_name="applications")
    schema_history.drop_application_indexes_0001()
    op.drop_table("applications")
    schema_history.drop_checkpoints_0001()
    schema_history.drop_log_0001()
