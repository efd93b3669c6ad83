"""The voucher schema as it stood when migrations began.

Revision ID: voucher_0001
Created: 2026-12-02 12:59:30.015062
"""

import sqlalchemy as sa
from alembic import op

from shared import schema_history

revision = "voucher_0001"
down_revision = None


def upgrade() -> None:
    schema_history.create_programme_0001(
        sa.Column("programme_id", sa.String(length=100), nullable=False),
        sa.Column("approved_amount", sa.BigInteger(), nullable=True),
        sa.Column("returned_amount", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("voucher_id", sa.String(length=64), nullable=True),
        sa.Column("voucher_expires_on", sa.Date(), nullable=True),
        constraints=[sa.UniqueConstraint("voucher_id")],
    )
    op.create_index(
        "ix_applications_expiry", "applications", ["status", "voucher_expires_on"], unique=False
    )
    schema_history.create_unique_among_0001(
        "uq_applications_open_per_firm",
        ["firm_id", "programme_id"],
        ["verified", "approved", "issued"],
    )
    schema_history.create_ledger_0001()
    schema_history.create_payout_attempts_0001()
    schema_history.create_pools_0001("programme_budgets")
    op.create_table(
        "providers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("service_categories", schema_history.document_type_0001(), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=False),
        schema_history.moment_0001("registered_at"),
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
        schema_history.moment_0001("requested_at"),
        schema_history.moment_0001("paid_at", nullable=True),
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
    op.drop_index("uq_applications_open_per_firm", table_name="applications")
    op.drop_index("ix_applications_expiry", table_name="applications")
    schema_history.drop_programme_0001()
