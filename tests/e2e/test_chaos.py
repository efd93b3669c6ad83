"""`make chaos`, shorter: processes killed (-9) every few seconds and the broker reset once,
while firms, officers, the committee and providers work on two replicas of every service.
Whatever was accepted is in the log, settled, paid once, within budget, verified by the
auditor's tool and counted alike by oversight."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chaos.run import Options, run


# about 2.5 minutes alone; on a loaded machine its settling waits stretch past the suite's
# 300 s, and pytest-timeout's signal then ends the whole session, not just this test
@pytest.mark.timeout(900)
def test_a_short_chaos_run_loses_nothing(postgres_server: str, tmp_path: Path) -> None:
    options = Options(
        duration=60,
        rate=2,
        kill_every=3,
        broker_resets=1,
        state=tmp_path / "chaos",
        postgres=postgres_server,
    )
    report = asyncio.run(run(options))
    failed = {name: c["findings"] for name, c in report["checks"].items() if not c["ok"]}
    assert report["ok"], failed
    figures = report["figures"]
    assert figures["process_kills"] >= 10, figures
    assert figures["broker_resets"] == 1, figures
    assert figures["recovery_after_broker_reset_s"][0] is not None, figures
    assert figures["lost"] == 0
    for service in ("voucher", "taxcredit", "fund"):
        assert figures["applications"][service] >= 60, figures
        settled = report["checks"]["statuses"][service]
        assert sum(settled.values()) >= figures["applications"][service], settled
