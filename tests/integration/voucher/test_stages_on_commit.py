"""A stage acts on what its own process committed at once, and the broker's delivery of the
same events passes by (PostgreSQL and SQLite, the real broker).

With ``stages_act_on_commit`` off, the same application gets through by the broker alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from services.voucher.main import create_app
from shared.consumer import IdempotentConsumer
from shared.eventstore import inbox
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import VoucherHarness, application_body, wait_for_status


def stages_of(voucher: VoucherHarness) -> IdempotentConsumer:
    [stages] = [
        c
        for c in voucher.app.state.runtime.extras["consumers"]
        if c.name.endswith("voucher-stages")
    ]
    return stages


async def verified(voucher: VoucherHarness, key: str) -> dict[str, Any]:
    response = await voucher.client.post(
        "/v1/applications",
        json=application_body(),
        headers={**voucher.firm(), "Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    return await wait_for_status(voucher, response.json()["id"], "verified")


async def until(check: Callable[[], bool], within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the broker's delivery never came"
        await asyncio.sleep(0.02)


async def test_a_submission_is_verified_here_and_its_delivery_passes_by(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    )
    async with running(create_app, settings) as voucher:
        stages = stages_of(voucher)
        application = await verified(voucher, "on-commit")
        if database_url.startswith("sqlite") and stages.stats.applied_here == 0:
            # One writer at a time, and a waiting writer retries on a backoff, not in turn:
            # the stage here, queued behind the relay's read, can lose the lock to the
            # broker's delivery. That delivery applied the submission; the stage here found
            # it taken. (On PostgreSQL the stage here does not queue, and is always first.)
            assert stages.stats.applied == 1
        else:
            assert stages.stats.applied_here == 1  # verified before the broker brought it back
            await until(lambda: stages.stats.duplicates >= 1)  # then the delivery came by

        events = await voucher.client.get(
            f"/v1/applications/{application['id']}/events", headers=voucher.auth_auditor()
        )
        assert [e["type"] for e in events.json()] == [
            "voucher.application.submitted",
            "voucher.application.verified",
        ]
        async with voucher.app.state.runtime.store.engine.connect() as connection:
            claimed = await connection.scalar(
                sa.select(sa.func.count()).where(inbox.c.consumer == stages.name)
            )
        assert claimed == 1
        assert stages.stats.applied == 1


async def test_with_stages_acting_on_commit_off_the_broker_brings_every_event(
    database_url: str, kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    settings = service_settings(
        "voucher", database_url, kafka_bootstrap, unique_name("t") + ".", tmp_path
    ).model_copy(update={"stages_act_on_commit": False})
    async with running(create_app, settings) as voucher:
        stages = stages_of(voucher)
        await verified(voucher, "broker-only")
        assert stages.stats.applied == 1
        assert stages.stats.applied_here == 0
