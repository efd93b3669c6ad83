"""A restored database against its topic: a restore that lost events the consumers already
have, or a log that forked, is caught before the service starts on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from services.voucher.main import create_app
from shared.audit_cli import read_whole_topic
from shared.cli import app as cli
from shared.eventstore import create_engine
from shared.restore import check_restore
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import application_body


async def published_log(bootstrap: str, topic: str, count: int) -> list[tuple[int, Any]]:
    """``(position, envelope)`` of every event on the topic, once ``count`` are there."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        records = await read_whole_topic(bootstrap, topic)
        pairs = {int(dict(r.headers)["position"]): json.loads(r.value) for r in records}
        if len(pairs) >= count or asyncio.get_running_loop().time() > deadline:
            return sorted(pairs.items())
        await asyncio.sleep(0.2)


async def quiet_and_published(engine: Any) -> int:
    """How many events the log holds once its stages are done and the relay sent them all."""
    deadline = asyncio.get_running_loop().time() + 30
    seen = -1
    while asyncio.get_running_loop().time() < deadline:
        async with engine.connect() as connection:
            count, unpublished = (
                await connection.execute(
                    sa.text("SELECT count(*), count(*) FILTER (WHERE NOT published) FROM events")
                )
            ).one()
        if count == seen and unpublished == 0:
            return int(count)
        seen = count
        await asyncio.sleep(1)
    raise AssertionError("the log did not settle")


async def test_a_restore_that_lost_or_forked_the_log_is_refused_and_a_current_one_passes(
    postgres_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    prefix = unique_name("restore") + "."
    settings = service_settings("voucher", postgres_url, kafka_bootstrap, prefix, tmp_path)
    async with running(create_app, settings) as voucher:
        for n in range(3):
            response = await voucher.client.post(
                "/v1/applications",
                json=application_body(requested_amount=1_000_000 + n),
                headers={**voucher.firm(), "Idempotency-Key": f"k{n}"},
            )
            assert response.status_code == 201, response.text
        count = await quiet_and_published(voucher.app.state.runtime.store.engine)
        on_topic = await published_log(kafka_bootstrap, prefix + "voucher.events", count)
        assert len(on_topic) == count >= 6  # each application: submitted and verified

    engine = create_engine(postgres_url)
    try:
        agreed = await check_restore(engine, "voucher", on_topic)
        assert agreed.safe_to_start and agreed.database_last == agreed.topic_last
        assert "the two agree" in agreed.describe()

        # the relay had not sent the last two when the topic was read: they will go
        behind = await check_restore(engine, "voucher", on_topic[:-2])
        assert behind.safe_to_start and "publishes the 2 newer" in behind.describe()

        # a backup from before the last two events: the topic holds what the database lost
        last_two = [p for p, _ in on_topic[-2:]]
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("DELETE FROM events WHERE position >= :p"), {"p": last_two[0]}
            )
        lost = await check_restore(engine, "voucher", on_topic)
        assert not lost.safe_to_start and lost.lost == last_two
        assert "lost 2 event(s)" in lost.describe() and "do not start" in lost.describe()
        # the operator's command says the same, from the settings, and exits 1
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["restore-check", "--service", "voucher"],
            env={
                "INCENTIVES_DATABASE_URL": postgres_url,
                "INCENTIVES_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "INCENTIVES_TOPIC_PREFIX": prefix,
            },
        )
        assert result.exit_code == 1, result.output
        assert f"lost 2 event(s) the topic holds (positions {last_two[0]}" in result.output

        # a position that holds another event than the topic's: a fork
        first = on_topic[0][0]
        async with engine.begin() as connection:
            await connection.execute(
                sa.text("UPDATE events SET hash = :h WHERE position = :p"),
                {"h": "f" * 64, "p": first},
            )
        forked = await check_restore(engine, "voucher", on_topic[:-2])
        assert not forked.safe_to_start and forked.forked == [first]
        assert "forked" in forked.describe()
    finally:
        await engine.dispose()
