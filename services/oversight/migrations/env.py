"""Alembic's entry to oversight's schema history (`incentives migrate --service oversight`)."""

from alembic import context

from services.oversight.adapters.tables import metadata
from shared.migrations import SERVICE_TABLES, run_in_context

run_in_context(context, [*SERVICE_TABLES, metadata])
