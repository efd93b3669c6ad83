"""The taxcredit schema as it stood when migrations began.

Revision ID: taxcredit_0001
Created: 2026-12-02 12:59:30.296710
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.eventstore.schema
from shared import schema_history

revision: str = "taxcredit_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    schema_history.create_log_0001()
    schema_history.create_checkpoints_0001()
    op.create_table(
        "applications",
        *schema_history.application_columns_0001(),
        sa.Column("programme", sa.String(length=40), nullable=False),
        sa.Column("tax_year", sa.Integer(), nullable=False),
        sa.Column("claim_reference", sa.String(length=200), nullable=False),
        sa.Column("credit_amount", sa.BigInteger(), nullable=True),
        sa.Column("certificate_number", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("certificate_number"),
    )
    schema_history.create_application_indexes_0001()
    op.create_index(
        "ix_applications_claim_reference", "applications", ["claim_reference"], unique=False
    )
    op.create_index(
        "uq_applications_claim_reference",
        "applications",
        ["programme", "claim_reference"],
        unique=True,
        postgresql_where=sa.text("status IN ('verified', 'approved', 'certified', 'revoked')"),
        sqlite_where=sa.text("status IN ('verified', 'approved', 'certified', 'revoked')"),
    )
    op.create_table(
        "rate_tables",
        sa.Column("sequence", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column(
            "table",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "published_at", shared.eventstore.schema.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("published_by", sa.String(length=200), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("version"),
    )
    schema_history.create_support_grants_0001()


def downgrade() -> None:
    schema_history.drop_support_grants_0001()
    op.drop_table("rate_tables")
    op.drop_index(
        "uq_applications_claim_reference",
        table_name="applications",
        postgresql_where=sa.text("status IN ('verified', 'approved', 'certified', 'revoked')"),
        sqlite_where=sa.text("status IN ('verified', 'approved', 'certified', 'revoked')"),
    )
    op.drop_index("ix_applications_claim_reference", table_name="applications")
    schema_history.drop_application_indexes_0001()
    op.drop_table("applications")
    schema_history.drop_checkpoints_0001()
    schema_history.drop_log_0001()
