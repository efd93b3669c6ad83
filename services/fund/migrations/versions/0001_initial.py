"""The fund schema as it stood when migrations began.

Revision ID: fund_0001
Created: 2026-12-02 12:59:30.591049
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.eventstore.schema
from shared import schema_history

revision: str = "fund_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema_history.create_log_0001()
    schema_history.create_checkpoints_0001()
    op.create_table(
        "applications",
        *schema_history.application_columns_0001(),
        sa.Column("fund_id", sa.String(length=100), nullable=False),
        sa.Column("cost_reference", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("disbursed", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    schema_history.create_application_indexes_0001()
    op.create_index("ix_applications_fund", "applications", ["fund_id", "status"], unique=False)
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
    schema_history.create_support_grants_0001()


def downgrade() -> None:
    schema_history.drop_support_grants_0001()
    op.drop_table("ledger_entries")
    op.drop_table("fund_capacity")
    op.drop_index("ix_applications_fund", table_name="applications")
    schema_history.drop_application_indexes_0001()
    op.drop_table("applications")
    schema_history.drop_checkpoints_0001()
    schema_history.drop_log_0001()
