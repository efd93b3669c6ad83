"""Alembic's entry to the taxcredit service's schema history (`incentives migrate --service taxcredit`)."""

from alembic import context

from services.taxcredit.adapters.tables import metadata
from shared.migrations import PROGRAMME_TABLES, run_in_context

run_in_context(context, [*PROGRAMME_TABLES, metadata])
