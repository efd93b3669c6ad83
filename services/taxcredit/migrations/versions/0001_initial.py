"""The taxcredit schema as it stood when migrations began.

Revision ID: taxcredit_0001
Created: 2026-12-02 12:59:30.296710
"""

import sqlalchemy as sa
from alembic import op

from shared import schema_history

revision = "taxcredit_0001"
down_revision = None


def upgrade() -> None:
    schema_history.create_programme_0001(
        sa.Column("programme", sa.String(length=40), nullable=False),
        sa.Column("tax_year", sa.Integer(), nullable=False),
        sa.Column("claim_reference", sa.String(length=200), nullable=False),
        sa.Column("credit_amount", sa.BigInteger(), nullable=True),
        sa.Column("certificate_number", sa.String(length=40), nullable=True),
        constraints=[sa.UniqueConstraint("certificate_number")],
    )
    op.create_index(
        "ix_applications_claim_reference", "applications", ["claim_reference"], unique=False
    )
    schema_history.create_unique_among_0001(
        "uq_applications_claim_reference",
        ["programme", "claim_reference"],
        ["verified", "approved", "certified", "revoked"],
    )
    op.create_table(
        "rate_tables",
        sa.Column("sequence", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("table", schema_history.document_type_0001(), nullable=False),
        schema_history.moment_0001("published_at"),
        sa.Column("published_by", sa.String(length=200), nullable=False),
        sa.Column("event_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("sequence"),
        sa.UniqueConstraint("version"),
    )
    schema_history.create_support_grants_0001()


def downgrade() -> None:
    schema_history.drop_support_grants_0001()
    op.drop_table("rate_tables")
    op.drop_index("uq_applications_claim_reference", table_name="applications")
    op.drop_index("ix_applications_claim_reference", table_name="applications")
    schema_history.drop_programme_0001()
