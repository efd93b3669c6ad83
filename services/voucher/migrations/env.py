"""Alembic's entry to the voucher service's schema history (`incentives migrate --service voucher`)."""

from alembic import context

from services.voucher.adapters.tables import metadata
from shared.migrations import PROGRAMME_TABLES, run_in_context

run_in_context(context, [*PROGRAMME_TABLES, metadata])
