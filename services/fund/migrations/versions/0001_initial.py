"""The fund schema as it stood when migrations began.

Revision ID: fund_0001
Created: 2026-12-02 12:59:30.591049
"""

import sqlalchemy as sa
from alembic import op

from shared import schema_history

revision = "fund_0001"
down_revision = None


def upgrade() -> None:
    schema_history.create_programme_0001(
        sa.Column("fund_id", sa.String(length=100), nullable=False),
        sa.Column("cost_reference", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("disbursed", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_index("ix_applications_fund", "applications", ["fund_id", "status"], unique=False)
    schema_history.create_pools_0001("fund_capacity")
    schema_history.create_ledger_0001()
    schema_history.create_support_grants_0001()


def downgrade() -> None:
    schema_history.drop_support_grants_0001()
    op.drop_table("ledger_entries")
    op.drop_table("fund_capacity")
    op.drop_index("ix_applications_fund", table_name="applications")
    schema_history.drop_programme_0001()
