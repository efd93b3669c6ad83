"""The fund service's own tables: applications, fund capacity, the ledger, the support read model."""

from __future__ import annotations

import sqlalchemy as sa

from shared.kit.holds import Pools
from shared.kit.payouts import ledger_table
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

support_grants = support_table(metadata)
