"""Alembic's entry to the fund service's schema history (`incentives migrate --service fund`)."""

from alembic import context

from services.fund.adapters.tables import metadata
from shared.migrations import PROGRAMME_TABLES, run_in_context

run_in_context(context, [*PROGRAMME_TABLES, metadata])
