"""Oversight's money figures for a service's whole log, folded by oversight's own read model
in a database of its own: what the ministry's page would show."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from services.oversight.adapters import queries
from services.oversight.adapters.readmodel import ReadModel
from shared.clock import SystemClock
from shared.consumer import Delivery
from shared.contracts import Envelope
from shared.eventstore import EventStore, create_engine
from tests.integration.harness import ServiceHarness
from tests.schema import migrated


async def oversight_money(
    harness: ServiceHarness, tmp_path: Path, service: str, budgets: queries.Budgets
) -> dict[str, dict[str, int]]:
    """Each programme's money as oversight folds ``harness``'s log, with ``budgets`` (the
    catalogues oversight loaded at its own start)."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/oversight-{uuid.uuid4().hex}.db")
    try:
        await migrated(engine, "oversight")
        batch = [
            (
                Envelope.model_validate(e.envelope),
                Delivery(
                    topic=f"{service}.events",
                    partition=0,
                    offset=e.position,
                    key=e.envelope["aggregate_id"].encode(),
                    value=json.dumps(e.envelope).encode(),
                    headers=(("position", str(e.position).encode()),),
                ),
            )
            for e in await harness.service.store.read_all(limit=10_000)
        ]
        async with EventStore(engine, SystemClock()).transaction() as uow:
            await ReadModel("").apply(uow, batch)
        async with engine.connect() as connection:
            found = await queries.programmes(connection, budgets)
        return {p["programme_id"]: p["money"] for p in found if p["service"] == service}
    finally:
        await engine.dispose()
