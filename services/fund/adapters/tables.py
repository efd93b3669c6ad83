"""The fund service's own tables: applications, fund capacity, the ledger, the payouts asked of a
treasury, the support read model."""

from __future__ import annotations

import sqlalchemy as sa

from shared.eventstore.schema import UTCDateTime
from shared.kit.holds import Pools
from shared.kit.payouts import attempts_table, ledger_table
from shared.kit.projection import applications_table
from shared.kit.support import support_table

metadata = sa.MetaData()

applications = applications_table(
    metadata,
    sa.Column("fund_id", sa.String(100), nullable=False),
    sa.Column("cost_reference", sa.String(200), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("disbursed", sa.BigInteger, nullable=False, server_default="0"),
    indexes=[sa.Index("ix_applications_fund", "fund_id", "status")],
)

capacity = Pools(metadata, "fund_capacity")
"""Each fund's capacity: a commitment holds from its fund and every parent; a cancellation
gives back what was not disbursed. ``available`` = capacity − committed − disbursed."""

ledger_entries = ledger_table(metadata)
"""Tranche payouts: fund account debited, investee firm's account credited."""

tranche_payouts = sa.Table(
    "tranche_payouts",
    metadata,
    sa.Column("payout_id", sa.String(100), primary_key=True),
    sa.Column("application_id", sa.String(64), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("released_at", UTCDateTime, nullable=False),
    sa.Column("release_event_id", sa.String(36), nullable=False),
    sa.Column("correlation_id", sa.String(64), nullable=False),
)
"""Released tranches a treasury is to pay (when one pays instead of the ledger): a row from
the payout stage until the tranche is recorded paid or the investment is cancelled. The
release event's id and correlation id are the payment's cause and correlation."""

payout_attempts = attempts_table(metadata)
"""The failed attempts at each tranche's payout over the network, and its next one."""

support_grants = support_table(metadata)
