"""Tranches paid by a treasury: the payouts asked of it, and the failed attempts at each.

Revision ID: fund_0002
Created: 2026-12-04 14:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

from shared import schema_history

revision = "fund_0002"
down_revision = "fund_0001"


def upgrade() -> None:
    op.create_table(
        "tranche_payouts",
        sa.Column("payout_id", sa.String(length=100), nullable=False),
        sa.Column("application_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        schema_history.moment_0001("released_at"),
        sa.Column("release_event_id", sa.String(length=36), nullable=False),
        sa.Column("correlation_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("payout_id"),
    )
    op.create_index(
        op.f("ix_tranche_payouts_application_id"),
        "tranche_payouts",
        ["application_id"],
        unique=False,
    )
    schema_history.create_payout_attempts_0001()


def downgrade() -> None:
    op.drop_table("payout_attempts")
    op.drop_index(op.f("ix_tranche_payouts_application_id"), table_name="tranche_payouts")
    op.drop_table("tranche_payouts")
