"""The voucher service's own tables: applications, budgets, providers, redemptions, the ledger,
and its read model of every programme's grants."""

from __future__ import annotations

import sqlalchemy as sa

from shared.eventstore.schema import JSONDocument, UTCDateTime
from shared.kit.holds import Pools
from shared.kit.payouts import attempts_table, ledger_table
from shared.kit.projection import applications_table
from shared.kit.support import support_table

metadata = sa.MetaData()
Money = sa.BigInteger

applications = applications_table(
    metadata,
    sa.Column("programme_id", sa.String(100), nullable=False),
    sa.Column("approved_amount", Money, nullable=True),
    sa.Column("returned_amount", Money, nullable=False, server_default="0"),
    sa.Column("voucher_id", sa.String(64), nullable=True, unique=True),
    sa.Column("voucher_expires_on", sa.Date, nullable=True),
    indexes=[
        sa.Index("ix_applications_expiry", "status", "voucher_expires_on"),
        # one open, verified application per firm and programme; the verifier relies on it
        sa.Index(
            "uq_applications_open_per_firm",
            "firm_id",
            "programme_id",
            unique=True,
            postgresql_where=sa.text("status IN ('verified', 'approved', 'issued')"),
            sqlite_where=sa.text("status IN ('verified', 'approved', 'issued')"),
        ),
    ],
)

budgets = Pools(metadata, "programme_budgets")
"""Each programme's budget: approvals hold from it, expiries give back."""

providers = sa.Table(
    "providers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("service_categories", JSONDocument, nullable=False),
    sa.Column("registered_by", sa.String(200), nullable=False),
    sa.Column("registered_at", UTCDateTime, nullable=False),
)

redemptions = sa.Table(
    "redemptions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("voucher_id", sa.String(64), nullable=False, index=True),
    sa.Column("application_id", sa.String(64), nullable=False),
    sa.Column("provider_id", sa.String(64), nullable=False),
    sa.Column("invoice_number", sa.String(100), nullable=False),
    sa.Column("amount", Money, nullable=False),
    sa.Column("service_category", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("payout_id", sa.String(100), nullable=True),
    sa.Column("requested_at", UTCDateTime, nullable=False),
    sa.Column("paid_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("provider_id", "invoice_number", name="uq_redemptions_invoice"),
    sa.CheckConstraint("amount > 0", name="ck_redemption_positive"),
)

ledger_entries = ledger_table(metadata)
payout_attempts = attempts_table(metadata)
"""Payouts to providers: programme account debited, provider account credited."""

support_grants = support_table(metadata)
"""Every programme's grants, fed from the three events topics; verification checks them."""
