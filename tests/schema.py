"""The schema a test works on: a service's own migrations, the same as in production."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.migrations import migrations_of, upgrade


async def migrated(engine: AsyncEngine, service: str = "voucher") -> None:
    """Bring ``engine``'s database to the head of ``service``'s history (the voucher's holds
    the log, inbox, broker log, idempotency keys and checkpoints every programme has)."""
    await upgrade(engine, migrations_of(service))
