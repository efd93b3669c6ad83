"""The taxcredit service's own tables: applications, the published rate tables, and the
support read model (every programme's grants, for the cross-programme support limits)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.eventstore.schema import JSONDocument, UTCDateTime
from shared.kit.projection import applications_table
from shared.kit.support import support_table

metadata = sa.MetaData()

CLAIM_HOLDING = ("verified", "approved", "certified", "revoked")
"""Statuses in which an application holds its facility, deal or investment reference."""

applications = applications_table(
    metadata,
    sa.Column("programme", sa.String(40), nullable=False),
    sa.Column("tax_year", sa.Integer, nullable=False),
    sa.Column("claim_reference", sa.String(200), nullable=False),
    sa.Column("credit_amount", sa.BigInteger, nullable=True),
    sa.Column("certificate_number", sa.String(40), nullable=True, unique=True),
    indexes=[
        # a reference is claimed once: two verifiers racing in two replicas cannot both pass it
        sa.Index(
            "uq_applications_claim_reference",
            "programme",
            "claim_reference",
            unique=True,
            postgresql_where=sa.text(f"status IN {CLAIM_HOLDING}"),
            sqlite_where=sa.text(f"status IN {CLAIM_HOLDING}"),
        ),
        sa.Index("ix_applications_claim_reference", "claim_reference"),
    ],
)

rate_tables = sa.Table(
    "rate_tables",
    metadata,
    sa.Column("sequence", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(40), nullable=False, unique=True),
    sa.Column("valid_from", sa.Date, nullable=False),
    sa.Column("table", JSONDocument, nullable=False),
    sa.Column("published_at", UTCDateTime, nullable=False),
    sa.Column("published_by", sa.String(200), nullable=False),
    sa.Column("event_hash", sa.String(64), nullable=False),
)

support_grants = support_table(metadata)
"""Every programme's grants (this one's certificates included), fed from the three topics."""
