"""A process serving as many requests as it may refuses the next one at once, with 503,
``Retry-After`` and a problem, instead of queueing it; probes and metrics still answer, and
once a request ends the next is served again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from services.voucher.main import create_app
from tests.integration.harness import running, service_settings
from tests.integration.voucher.conftest import application_body


async def test_beyond_the_limit_a_request_is_refused_at_once_and_probes_still_answer(
    postgres_url: str,
    kafka_bootstrap: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    settings = service_settings(
        "voucher", postgres_url, kafka_bootstrap, unique_name("shed") + ".", tmp_path
    ).model_copy(update={"max_requests_in_progress": 1})
    async with running(create_app, settings) as voucher:
        release = asyncio.Event()
        body = json.dumps(application_body()).encode()

        async def slow_body() -> AsyncIterator[bytes]:
            """A firm on a slow line: the request is in progress until the body arrives."""
            yield body[:10]
            await release.wait()
            yield body[10:]

        first = asyncio.create_task(
            voucher.client.post(
                "/v1/applications",
                content=slow_body(),
                headers={
                    **voucher.firm(),
                    "Idempotency-Key": "slow-1",
                    "Content-Type": "application/json",
                },
            )
        )
        await asyncio.sleep(0.3)  # the first is inside the app, waiting for its body
        assert not first.done()

        refused = await asyncio.wait_for(
            voucher.client.get("/v1/programmes", headers=voucher.ministry()), timeout=5
        )
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/overloaded")
        assert (await voucher.client.get("/healthz")).status_code == 200
        metrics = (await voucher.client.get("/metrics")).text
        assert "incentives_requests_in_progress 1.0" in metrics
        assert "incentives_requests_refused_overloaded_total 1.0" in metrics

        release.set()
        answered = await asyncio.wait_for(first, timeout=20)
        assert answered.status_code == 201, answered.text
        served = await voucher.client.get("/v1/programmes", headers=voucher.ministry())
        assert served.status_code == 200, served.text
        metrics = (await voucher.client.get("/metrics")).text
        assert "incentives_requests_in_progress 0.0" in metrics
